#!/usr/bin/env bash
# Installs the Debian packages mergemount needs to build, run and test, when they are missing.
# As root it runs apt-get; otherwise it prints the exact command to run and fails.
# Sourced by tools/demo.sh and tests/run (one list, one place).

# clang and its runtimes (libFuzzer, sanitizers) build the fuzz harnesses of tests/fuzz; groff-base
# renders the man page in tests/integration/test_docs.py; python3-sentencepiece (with python3-protobuf for
# its model module) trains and edits the sentencepiece models the tokenizer tests read and checks the
# reference's tokenizer.model reader; python3-jinja2 renders chat templates (tests/reference/tokenizer_eval.py);
# python3-yaml reads the README's example config in tests/integration/test_tokenizer_merge.py.
MM_DEB_PACKAGES=(meson ninja-build pkg-config gcc libc6-dev libfuse3-dev fuse3 libyaml-dev libcjson-dev
                 liblmdb-dev python3-pytest python3-numpy valgrind clang libclang-rt-dev groff-base
                 python3-sentencepiece python3-protobuf python3-jinja2 python3-yaml)

mm_install_deps() {
  local missing=() p
  for p in "${MM_DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "mergemount needs these Debian packages; install them with:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    return 1
  fi
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 && apt-get install -y -qq "${missing[@]}" >&2
}

# Configures (or re-applies the options to) and builds a build directory: mm_build DIR [meson options...]
mm_build() {
  local dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" -Dwerror=true "$@" >&2 || return 1
  else # an existing folder takes the options as they are now
    meson configure "$dir" -Dwerror=true "$@" >&2 || return 1
  fi
  ninja -C "$dir" >&2
}

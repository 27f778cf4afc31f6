#!/usr/bin/env bash
# Issue 14's cost check: the GGUF view of a linear merge of three Llama-shaped bf16 models (8 layers,
# hidden 2048, vocabulary 32,000: 484 M parameters, 967 MB each; each given a Llama-3-style byte-level
# BPE tokenizer that the view can name), measured in this one run:
#   mount     mount time with --gguf q8_0 against without (the header is built at mount time)
#   build     `build --no-cache -j2` of the safetensors folder against `build --no-cache -j2 --gguf T
#             --gguf-only` for T = bf16 and q8_0: what the GGUF encoding adds to computing the merge
#   load      a fresh mount with --gguf q8_0 --gguf-only and an empty block cache, the GGUF read the way
#             llama.cpp loads it (mmap, every page in order) — or by llama-simple when LLAMA_SIMPLE names
#             its binary: the daemon's peak RSS (VmHWM) and anonymous memory at the end
#   converter only where tests/integration/llamacpp_gguf.py can run it (MM_LLAMACPP_SRC and
#             MM_TRANSFORMERS_SRC set, torch and sentencepiece installed; otherwise the log says why):
#             llama.cpp's convert_hf_to_gguf.py --outtype q8_0 on the built folder, against the time the
#             mount needs to serve the whole GGUF
# Not a test: the numbers are for bench/RESULTS.md. Root drops the page cache between runs (warm otherwise).
# Usage: bench/gguf_bench.sh [WORKDIR]   (default /tmp/mm-bench-gguf; models are made once there)
set -euo pipefail
. "$(dirname "$0")/common.sh"
work=${1:-/tmp/mm-bench-gguf}
mkdir -p "$work"
cd "$work"
shape=(--dtype bf16 --layers 8 --hidden 2048 --intermediate 5632 --vocab 32000 --heads 32 --kv-heads 4)
bench_models
for m in m1 m2 m3; do
  [ -f "$m/.llama3-tokenizer" ] && continue
  /usr/bin/python3 - "$m" "$top/tests/reference" <<'PY'
import sys
sys.path.insert(0, sys.argv[2])
import tok_fixture
tok_fixture.write_styled_tokenizer(sys.argv[1], "llama3-bpe")
PY
  touch "$m/.llama3-tokenizer"
done
mnt=$work/mnt
mkdir -p "$mnt"
trap bench_cleanup EXIT

# mount_secs ARGS...: seconds from starting the daemon to the folder being mounted
mount_secs() {
  local t0 t1
  t0=$(now)
  bench_start "$work/log" merge.yml --no-cache "$@"
  t1=$(now)
  bench_stop
  secs "$t0" "$t1"
}
# build_secs NAME ARGS...: a fresh `build --no-cache -j2` into out-NAME
build_secs() {
  local name=$1 t0 t1; shift
  rm -rf "out-$name"
  t0=$(now)
  "$mm" build merge.yml "out-$name" --no-cache -j2 "$@" > /dev/null 2>> "$work/log"
  t1=$(now)
  secs "$t0" "$t1"
}

readall m1; readall m2; readall m3
mount_secs > /dev/null   # warm-up
m_plain=$(mount_secs)
m_gguf=$(mount_secs --gguf q8_0)
b_st=$(build_secs st)
b_bf=$(build_secs bf16 --gguf bf16 --gguf-only)
b_q8=$(build_secs q8 --gguf q8_0 --gguf-only)
gguf=$(ls out-q8/*.gguf)
gguf_name=$(basename "$gguf")

rm -rf cache
drop
t0=$(now)
bench_start "$work/log" merge.yml --cache-dir "$work/cache" --gguf q8_0 --gguf-only
if [ -n "${LLAMA_SIMPLE:-}" ]; then
  loader="llama-simple"
  "$LLAMA_SIMPLE" -m "$mnt/$gguf_name" -n 16 "Hello" > "$work/llama-simple.out" 2>> "$work/log"
else
  loader="mmap, every page"
  /usr/bin/python3 -c '
import mmap, sys
with open(sys.argv[1], "rb") as f:
    m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    s = 0
    for off in range(0, len(m), 4096):
        s += m[off]
' "$mnt/$gguf_name"
fi
t1=$(now)
hwm=$(bench_hwm)
anon=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status")
cmp "$mnt/$gguf_name" "$gguf" || { echo "the mounted GGUF differs from the built one" >&2; exit 1; }
bench_stop
t_load=$(secs "$t0" "$t1")

size=$(stat -c %s "$gguf")
echo "sources 3 x $(du -sm m1 | cut -f1) MB, GGUF q8_0 $((size / 1000000)) MB ($gguf_name), $(nproc) cores," \
     "kernel $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ)"
printf 'mount time          %6.3f s, with --gguf q8_0 %6.3f s\n' "$m_plain" "$m_gguf"
printf 'build safetensors   %6.2f s\n' "$b_st"
printf 'build --gguf bf16   %6.2f s  ratio to safetensors %.2f\n' "$b_bf" "$(echo "$b_bf / $b_st" | bc -l)"
printf 'build --gguf q8_0   %6.2f s  ratio to safetensors %.2f\n' "$b_q8" "$(echo "$b_q8 / $b_st" | bc -l)"
printf 'load via mount      %6.2f s  (%s, empty cache)  daemon peak RSS %d MB, anonymous at the end %d MB\n' \
  "$t_load" "$loader" "$((hwm / 1024))" "$((anon / 1024))"
# llamacpp_gguf.available(): empty when the converter can run here, else why not
conv_why=$(/usr/bin/python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import llamacpp_gguf as c
print(c.available() or "")' "$top/tests/integration")
if [ -z "$conv_why" ]; then
  drop
  t0=$(now)
  # the tests' runner of the converter (its stand-ins let it read these tokenizers); no time limit, as
  # a large folder may take longer than a test may
  /usr/bin/python3 - "$top/tests/integration" out-st "$work/conv.gguf" "$work/shim" > /dev/null 2>> "$work/log" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import llamacpp_gguf
rc, err = llamacpp_gguf.convert(sys.argv[2], sys.argv[3], "q8_0", sys.argv[4], timeout=None)
sys.stderr.write(err)
sys.exit(rc)
PY
  t1=$(now)
  t_conv=$(secs "$t0" "$t1")
  printf 'converter q8_0      %6.2f s  (on the built folder; the mount served its GGUF in %.2f s: ratio %.2f)\n' \
    "$t_conv" "$t_load" "$(echo "$t_conv / $t_load" | bc -l)"
else
  echo "converter not run: $conv_why" >> "$work/log"
fi

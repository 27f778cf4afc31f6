# Shared by the bench scripts (sourced): the binaries, three generated models with a linear merge of
# them, and timing helpers. Set `shape` (mm-mkmodel options) before calling bench_models.
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# MERGEMOUNT / MM_MKMODEL / MM_MEMFS override the binaries (e.g. copies taken while the tree is being edited).
mm=${MERGEMOUNT:-$top/build/tools/mergemount}
mk=${MM_MKMODEL:-$top/build/tools/mm-mkmodel}
memfs=${MM_MEMFS:-$top/build/bench/mm-memfs}

# bench_models: makes m1, m2, m3 in the current folder (once) and writes merge.yml, a linear merge.
bench_models() {
  local i
  for i in 1 2 3; do
    [ -f "m$i/model.safetensors" ] || [ -f "m$i/model.safetensors.index.json" ] || "$mk" "m$i" --seed "$i" "${shape[@]}"
  done
  cat > merge.yml <<'YAML'
merge_method: linear
models:
  - model: ./m1
    parameters: {weight: 0.5}
  - model: ./m2
    parameters: {weight: 0.3}
  - model: ./m3
    parameters: {weight: 0.2}
dtype: bfloat16
YAML
}

can_drop=0
[ "$(id -u)" -eq 0 ] && can_drop=1
# drop: empties the kernel page cache (root only; otherwise the figures are warm).
drop() { sync; if [ "$can_drop" -eq 1 ]; then echo 3 > /proc/sys/vm/drop_caches; fi; }
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l; }

# Mount helpers. Set `mnt` first. bench_start LOG ARGS...: the daemon in the foreground as our child
# (so bench_stop knows when it has flushed and exited), waiting until the folder is mounted.
pid=
bench_cleanup() {
  if mountpoint -q "$mnt"; then fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -u -z "$mnt" || true; fi
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; fi
}
bench_start() {
  local log=$1; shift
  "$mm" mount "$@" "$mnt" -f 2>> "$log" &
  pid=$!
  local i
  for i in $(seq 200); do mountpoint -q "$mnt" && return 0; sleep 0.05; done
  echo "not mounted after 10 s:" >&2; cat "$log" >&2; return 1
}
bench_stop() { fusermount3 -u "$mnt"; wait "$pid"; pid=; }  # unmount flushes the cache writer
# bench_counter NAME: one counter of the mount at $mnt (blocks_computed, cache_hits, ...).
bench_counter() { "$mm" stats "$mnt" --json | sed -n "s/.*\"$1\": *\\([0-9]*\\).*/\\1/p"; }
# bench_hwm: the peak RSS (VmHWM, kB) of the daemon started by bench_start, while it still runs.
bench_hwm() { awk '/^VmHWM:/ {print $2}' "/proc/$pid/status"; }
readall() { local f; for f in "$1"/*; do cat "$f" > /dev/null; done; }

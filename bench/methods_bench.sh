#!/usr/bin/env bash
# Issue 4's speed check: the first full read of a ties merge (base + two models, three ~1 GB bf16
# models) against the first full read of a linear merge of the same three models. Each read is a
# `cat` of every file of a fresh mount with --no-cache (so every block is computed) after the page
# cache was dropped (root only; otherwise the figures are warm and the script says so).
# Prints both times, their ratio (goal: ties <= 1.5 x linear) and the pre-pass share of the ties
# read: the sum of the per-tensor pre-pass times the mount logs with -v (one pre-pass per tensor,
# under single-flight, so they are on the critical path of the reader that triggered them).
# Not a test: the numbers are for bench/RESULTS.md.
# Usage: bench/methods_bench.sh [WORKDIR] [RUNS]   (default: /tmp/mm-bench-methods, 1 run each;
# models are made once there; runs alternate linear and ties so that load changes hit both)
set -euo pipefail
. "$(dirname "$0")/common.sh"
work=${1:-/tmp/mm-bench-methods}
runs=${2:-1}
mkdir -p "$work"
cd "$work"
# the shape of bench/cache_bench.sh: 484 M parameters, 968 MB per model in bf16
shape=(--dtype bf16 --layers 8 --hidden 2048 --intermediate 5632 --vocab 32000 --heads 32 --kv-heads 4)
bench_models
cat > ties.yml <<'YAML'
merge_method: ties
base_model: ./m1
models:
  - model: ./m2
    parameters: {weight: 0.5, density: 0.3}
  - model: ./m3
    parameters: {weight: 0.5, density: 0.5}
dtype: bfloat16
YAML

mnt="$work/mnt"
mkdir -p "$mnt"
trap bench_cleanup EXIT INT TERM
bench_cleanup
# start CONFIG LOG: computing every read, logging pre-passes
start() { : > "$2"; bench_start "$2" "$1" --no-cache -v; }
stop() { bench_stop; }
# first_read CONFIG LOG: seconds for a cold full read of a fresh mount
first_read() {
  start "$1" "$2"
  drop
  local t0 t1
  t0=$(now); readall "$mnt"; t1=$(now)
  stop
  secs "$t0" "$t1"
}
# prepass_sum LOG [TENSOR]: the seconds of the pre-passes logged (of one tensor if given)
prepass_sum() {
  awk -v want="${2:-}" '/pre-pass of / {
      name = $0; sub(/.*pre-pass of \047/, "", name); sub(/\047.*/, "", name)
      secs = $0; sub(/.*\): /, "", secs); sub(/ s,.*/, "", secs)
      if (want == "" || name == want) s += secs
    } END {printf "%.3f", s}' "$1"
}

out=$(du -cb m?/*.safetensors | tail -1 | cut -f1)
echo "sources $((out / 1000000)) MB (3 models), $(nproc) cores," \
  "$(awk '/MemTotal/ {printf "%.0f GB", $2/1e6}' /proc/meminfo) RAM, kernel $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ)," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)"
[ "$can_drop" -eq 1 ] || echo "not root: page cache NOT dropped, figures are warm"
printf '%-5s %10s %10s %8s %12s %12s %7s\n' run linear_s ties_s ratio prepass_s embed_pre_s share
for r in $(seq "$runs"); do
  lin=$(first_read merge.yml "$work/linear.log")
  ties=$(first_read ties.yml "$work/ties.log")
  pre=$(prepass_sum "$work/ties.log")
  emb=$(prepass_sum "$work/ties.log" model.embed_tokens.weight)
  printf '%-5s %10.3f %10.3f %8.2f %12.3f %12.3f %6.0f%%\n' "$r" "$lin" "$ties" "$(echo "$ties/$lin" | bc -l)" \
    "$pre" "$emb" "$(echo "100*$pre/$ties" | bc -l)"
done
echo "goal: ties / linear <= 1.5"

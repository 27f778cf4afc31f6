#!/usr/bin/env bash
# Issue 12's cost check: what remapping the embeddings to a merged vocabulary costs on read. Three
# models shaped like Llama 3's embedding side (vocabulary 128,256, hidden 2048, one decoder layer, bf16:
# the two embedding tensors are 1 GB of the 1.1 GB output) are merged linearly three ways, each with
# `mergemount build --no-cache` (every block computed, warm sources), timed in this one run:
#   plain     no tokenizer option: rows merged by position
#   union     tokenizer_source: union (the vocabularies are the same, so every row is each model's
#             own row, read through the row map: the cost of the remap itself)
#   padded    tokenizer: {source: union, pad_to_multiple_of: 1000}: 744 padding rows, each model's
#             column mean over its 128,256 rows (a pass over each input, computed once per tensor)
# Prints the times and the ratios union/plain and padded/plain, and the peak RSS of each build.
# Not a test: the numbers are for bench/RESULTS.md.
# Usage: bench/vocab_bench.sh [WORKDIR]   (default /tmp/mm-bench-vocab; models are made once there)
set -euo pipefail
. "$(dirname "$0")/common.sh"
work=${1:-/tmp/mm-bench-vocab}
mkdir -p "$work"
cd "$work"
shape=(--dtype bf16 --layers 1 --hidden 2048 --intermediate 5632 --vocab 128256 --heads 32 --kv-heads 8)
bench_models
cp merge.yml plain.yml
{ cat merge.yml; echo "tokenizer_source: union"; } > union.yml
{ cat merge.yml; printf 'tokenizer:\n  source: union\n  pad_to_multiple_of: 1000\n'; } > padded.yml

# run NAME: a fresh `build --no-cache`; prints seconds and peak RSS (kB) of the build
run() {
  rm -rf "out-$1"
  local t0 t1
  t0=$(now)
  /usr/bin/time -f "%M" -o "rss-$1" "$mm" build "$1.yml" "out-$1" --no-cache > /dev/null 2> "log-$1" ||
    { cat "log-$1" >&2; exit 1; }
  t1=$(now)
  echo "$(secs "$t0" "$t1") $(cat "rss-$1")"
}
readall m1 >/dev/null; readall m2 >/dev/null; readall m3 >/dev/null
run plain > /dev/null   # warm-up: sources in the page cache
read -r tp rp < <(run plain)
read -r tu ru < <(run union)
read -r tq rq < <(run padded)
printf 'plain   %6.2f s  peak RSS %7d kB\n' "$tp" "$rp"
printf 'union   %6.2f s  peak RSS %7d kB  union/plain  %.2f\n' "$tu" "$ru" "$(echo "$tu / $tp" | bc -l)"
printf 'padded  %6.2f s  peak RSS %7d kB  padded/plain %.2f\n' "$tq" "$rq" "$(echo "$tq / $tp" | bc -l)"

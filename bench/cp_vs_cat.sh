#!/usr/bin/env bash
# Issue 2's speed check: `cp -r` of a mounted linear merge of three ~100 MB bf16 models next to reading
# the three sources once with `cat`, both cold (page cache dropped, when root) and warm. Prints the
# figures and their ratios measured in this one run. Not a test: the numbers are for the notes.
# Usage: bench/cp_vs_cat.sh [WORKDIR]   (default: /tmp/mm-bench-cp)
set -euo pipefail
. "$(dirname "$0")/common.sh"
work=${1:-/tmp/mm-bench-cp}
mkdir -p "$work"
cd "$work"
shape=(--dtype bf16 --layers 4 --hidden 768 --intermediate 2048 --vocab 16000 --heads 12 --kv-heads 4)
bench_models
mkdir -p mnt
mountpoint -q mnt && fusermount3 -u mnt


drop
t0=$(now); cat m1/model.safetensors m2/model.safetensors m3/model.safetensors > /dev/null; t1=$(now)
cat_cold=$(secs "$t0" "$t1")
t0=$(now); cat m1/model.safetensors m2/model.safetensors m3/model.safetensors > /dev/null; t1=$(now)
cat_warm=$(secs "$t0" "$t1")

"$mm" mount merge.yml mnt --no-cache
drop
rm -rf copy; t0=$(now); cp -r mnt copy; t1=$(now)
cp_cold=$(secs "$t0" "$t1")
fusermount3 -u mnt
"$mm" mount merge.yml mnt --no-cache   # a fresh mount: the kernel page cache of the old one is gone
rm -rf copy; t0=$(now); cp -r mnt copy; t1=$(now)
cp_warm=$(secs "$t0" "$t1")
fusermount3 -u mnt
rm -rf built; t0=$(now); "$mm" build merge.yml built --no-progress --no-cache; t1=$(now)
build_warm=$(secs "$t0" "$t1")
cmp copy/model.safetensors built/model.safetensors

src=$(du -cb m?/model.safetensors | tail -1 | cut -f1)
out=$(stat -c %s copy/model.safetensors)
printf 'sources %.0f MB, output %.0f MB, %s cores\n' "$(echo "$src/1000000" | bc -l)" "$(echo "$out/1000000" | bc -l)" "$(nproc)"
printf '%-34s %8.3f s\n' "cat of the 3 sources, cold" "$cat_cold" "cp -r of the mount, cold sources" "$cp_cold" \
  "cat of the 3 sources, warm" "$cat_warm" "cp -r of the mount, warm sources" "$cp_warm" \
  "mergemount build, warm sources" "$build_warm"
printf 'ratio cp -r / cat, cold: %.2f\nratio cp -r / cat, warm: %.2f\n' "$(echo "$cp_cold/$cat_cold" | bc -l)" \
  "$(echo "$cp_warm/$cat_warm" | bc -l)"

#!/usr/bin/env bash
# Issue 3's speed check: is a full read served from the LMDB block cache about as fast as reading the
# same checkpoint from disk? A linear merge of three ~1 GB bf16 models, measured in one run:
#   (1) first full read of the mount (`cat` of every file to /dev/null) with an empty cache: computes;
#   (2) unmount, drop the page cache, remount, full read: every block served from LMDB (checked: 0 blocks
#       computed);
#   (3) `mergemount build` to a folder, drop the page cache, `cat` of the built folder.
# Prints the figures and the ratio (2)/(3) (goal: <= 1.3). Dropping the page cache needs root; without
# it the figures are warm and the script says so. Not a test: the numbers are for bench/RESULTS.md.
# Usage: bench/cache_bench.sh [WORKDIR]   (default: /tmp/mm-bench-cache; models are made once there)
set -euo pipefail
. "$(dirname "$0")/common.sh"
work=${1:-/tmp/mm-bench-cache}
mkdir -p "$work"
cd "$work"
# 2048 hidden, 5632 intermediate, 8 layers, 32000 vocab, 32/4 heads: 484 M parameters, 968 MB in bf16.
shape=(--dtype bf16 --layers 8 --hidden 2048 --intermediate 5632 --vocab 32000 --heads 32 --kv-heads 4)
bench_models

cache="$work/cache"
mnt="$work/mnt"
mkdir -p "$mnt"
trap bench_cleanup EXIT INT TERM
bench_cleanup
rm -rf "$cache" built "$work/mount.log"
start() { bench_start "$work/mount.log" merge.yml --cache-dir "$cache"; }
stop() { bench_stop; }
counter() { "$mm" stats "$mnt" --json | sed -n "s/.*\"$1\": *\\([0-9]*\\).*/\\1/p"; }

# (1) empty cache
start
drop
t0=$(now); readall "$mnt"; t1=$(now)
first=$(secs "$t0" "$t1")
computed1=$(counter blocks_computed)
stop

# (2) served from LMDB
drop
start
t0=$(now); readall "$mnt"; t1=$(now)
cached=$(secs "$t0" "$t1")
computed2=$(counter blocks_computed)
hits2=$(counter cache_hits)
stats2=$("$mm" stats "$mnt")
stop

# (3) the built folder from disk
"$mm" build merge.yml built --no-cache --no-progress
drop
t0=$(now); readall built; t1=$(now)
disk=$(secs "$t0" "$t1")

out=$(du -cb built/*.safetensors | tail -1 | cut -f1)
src=$(du -cb m?/*.safetensors | tail -1 | cut -f1)
echo "sources $((src / 1000000)) MB (3 models), output $((out / 1000000)) MB, $(nproc) cores," \
  "$(awk '/MemTotal/ {printf "%.0f GB", $2/1e6}' /proc/meminfo) RAM, kernel $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ)"
[ "$can_drop" -eq 1 ] || echo "not root: page cache NOT dropped, figures are warm"
echo "blocks computed: first read $computed1, read from the cache $computed2 (cache hits $hits2)"
"$mm" cache stats --cache-dir "$cache"
printf '%-46s %8.3f s  %7.0f MB/s\n' \
  "(1) cat of the mount, empty cache" "$first" "$(echo "$out/1000000/$first" | bc -l)" \
  "(2) cat of a new mount, served from LMDB" "$cached" "$(echo "$out/1000000/$cached" | bc -l)" \
  "(3) cat of the built folder" "$disk" "$(echo "$out/1000000/$disk" | bc -l)"
printf 'ratio (2)/(3): %.2f (goal <= 1.3)\nratio (1)/(3): %.2f\n' "$(echo "$cached/$disk" | bc -l)" \
  "$(echo "$first/$disk" | bc -l)"
if [ "$computed2" != 0 ]; then
  echo "FAIL: the second mount computed $computed2 blocks (expected 0)" >&2
  echo "$stats2" >&2
  exit 1
fi

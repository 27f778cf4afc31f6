#!/usr/bin/env bash
# Issue 13's check: a mergekit-moe-style MoE of four TinyLlama-shaped experts on a TinyLlama-shaped base
# (hidden 2048, intermediate 5632, 22 layers, vocabulary 32000, bf16: 2.2 GB per model, 11 GB of sources;
# the output is 6.8 GB: the base's attention and embeddings plus four experts' MLPs per layer), gate_mode
# hidden (the default: the base model run over every expert's prompts) or, with GATE=cheap_embed, that. Measured in this one run (page cache dropped before the cold figures when root):
#   1. `mergemount mount` until the folder is mounted (planning: opening 5 models, tokenizing prompts)
#   2. the first read of the 22 router weights (computing every layer's gate vectors), cold, empty cache
#   3. the same read on a new mount over the filled cache
#   4. `cat` of every file of a fresh mount, --no-cache, warm sources  vs  `cat` of the same bytes'
#      sources (the base once, each expert's MLP tensors: the same bytes that are read), warm
#   5. the daemon's peak RSS (VmHWM) over 2-4 (goal: <= 512 MB whatever the model size)
# Not a test: the numbers are for bench/RESULTS.md.
# Usage: bench/moe_bench.sh [WORKDIR]   (default /tmp/mm-bench-moe; models are made once there)
set -euo pipefail
. "$(dirname "$0")/common.sh"
work=${1:-/tmp/mm-bench-moe}
mkdir -p "$work"
cd "$work"
shape=(--dtype bf16 --layers 22 --hidden 2048 --intermediate 5632 --vocab 32000 --heads 32 --kv-heads 4 --shards 3)
for i in 0 1 2 3 4; do
  [ -f "m$i/model.safetensors.index.json" ] || "$mk" "m$i" --seed "$i" "${shape[@]}" > /dev/null
done
cat > moe.yml <<'YAML'
base_model: ./m0
gate_mode: GATE_MODE
dtype: bfloat16
experts_per_token: 2
experts:
  - source_model: ./m1
    positive_prompts: ["chat about the weather", "tell me a story"]
  - source_model: ./m2
    positive_prompts: ["write code", "fix this bug"]
    negative_prompts: ["story"]
  - source_model: ./m3
    positive_prompts: ["solve the equation", "compute the sum"]
  - source_model: ./m4
    positive_prompts: ["translate this", "in french"]
YAML
sed -i "s/GATE_MODE/${GATE:-hidden}/" moe.yml
mnt=$work/mnt
mkdir -p "$mnt"
trap bench_cleanup EXIT
rm -rf cache && mkdir cache
hwm=0
note_hwm() { local h; h=$(bench_hwm); [ "$h" -gt "$hwm" ] && hwm=$h; return 0; }

drop
t0=$(now); bench_start log1 moe.yml --cache-dir cache; t1=$(now)
mount_s=$(secs "$t0" "$t1")
routers=$(ls "$mnt" | head -0; "$mm" plan moe.yml --json | sed -n 's/.*"name": "\(model.layers.[0-9]*.block_sparse_moe.gate.weight\)".*/\1/p')
read_routers() {   # reads each router's bytes through the mount (offsets from the index and headers)
  /usr/bin/python3 - "$mnt" <<'PY'
import json, os, struct, sys
m = sys.argv[1]
wm = json.load(open(os.path.join(m, "model.safetensors.index.json")))["weight_map"]
for name, f in sorted(wm.items()):
    if not name.endswith("gate.weight"):
        continue
    with open(os.path.join(m, f), "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        info = json.loads(fh.read(n))[name]
        a, b = info["data_offsets"]
        fh.seek(8 + n + a)
        assert len(fh.read(b - a)) == b - a
PY
}
t0=$(now); read_routers; t1=$(now); router_cold=$(secs "$t0" "$t1"); note_hwm
bench_stop
bench_start log2 moe.yml --cache-dir cache
t0=$(now); read_routers; t1=$(now); router_cached=$(secs "$t0" "$t1"); note_hwm
bench_stop

# 4: whole mount vs its sources' bytes, warm
readall m0 >/dev/null; for i in 1 2 3 4; do readall "m$i" > /dev/null; done
bench_start log3 moe.yml --no-cache
t0=$(now); readall "$mnt"; t1=$(now); mount_read=$(secs "$t0" "$t1"); note_hwm
bytes=$(du -cb "$mnt"/* | tail -1 | cut -f1)
bench_stop
t0=$(now)
readall m0
for i in 1 2 3 4; do cat "m$i"/*.safetensors > /dev/null; done   # (a superset: whole experts)
t1=$(now); src_read=$(secs "$t0" "$t1")

printf 'mount (plan: 5 models, prompts)      %6.2f s\n' "$mount_s"
printf 'router weights, first read (cold)    %6.2f s\n' "$router_cold"
printf 'router weights, from the cache       %6.2f s\n' "$router_cached"
printf 'whole mount, --no-cache, warm         %6.2f s  (%d MB)\n' "$mount_read" $((bytes / 1000000))
printf 'cat of the sources (5 models), warm   %6.2f s   ratio mount/sources %.2f\n' "$src_read" \
  "$(echo "$mount_read / $src_read" | bc -l)"
printf 'daemon peak RSS                       %6d MB\n' $((hwm / 1024))

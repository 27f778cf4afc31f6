#!/usr/bin/env bash
# The built-in demo: builds mergemount, makes three small Llama-shaped models, mounts a linear merge of
# them, lists and reads the mounted folder, checks it against `mergemount build`, and unmounts.
# Usage: tools/demo.sh [WORKDIR]   (default: ./demo)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/tools/deps.sh"
mm_install_deps
mm_build "$top/build"
mm="$top/build/tools/mergemount"
mk="$top/build/tools/mm-mkmodel"

work=$(realpath -m "${1:-demo}")
mkdir -p "$work"
cd "$work"
for m in base chat code; do rm -rf "$m"; done
"$mk" base --seed 1 --dtype bf16 --layers 4 --hidden 64 --intermediate 128 --vocab 256
"$mk" chat --seed 2 --dtype bf16 --layers 4 --hidden 64 --intermediate 128 --vocab 256 --shards 3
"$mk" code --seed 3 --dtype bf16 --layers 4 --hidden 64 --intermediate 128 --vocab 256
cat > merge.yml <<'YAML'
# A task-arithmetic merge of two fine-tunes onto their base, like a model card's recipe.
merge_method: task_arithmetic
base_model: ./base
models:
  - model: ./chat
    parameters:
      weight: 0.7
  - model: ./code
    parameters:
      weight: [0.2, 0.5]   # a gradient over the layers
parameters:
  normalize: false
dtype: bfloat16
YAML
echo "== plan (nothing is computed)"
"$mm" plan merge.yml > plan.txt
head -16 plan.txt
mkdir -p merged
mountpoint -q merged && fusermount3 -u merged
echo "== mount"
"$mm" mount merge.yml merged
trap 'fusermount3 -u "$work/merged" 2>/dev/null || true' EXIT
ls -l merged
echo "== config.json (head)"
head -5 merged/config.json
echo "== first tensor of the merged shard"
/usr/bin/python3 - <<'PY'
import json, struct
with open("merged/model.safetensors", "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
    name = sorted(k for k in header if k != "__metadata__")[0]
    info = header[name]
    f.seek(8 + n + info["data_offsets"][0])
    raw = f.read(16)
vals = [struct.unpack("<f", b"\0\0" + raw[i:i + 2])[0] for i in range(0, 16, 2)]
print(name, info["dtype"], info["shape"], "first values:", [round(v, 5) for v in vals])
PY
echo "== cp -r of the mount equals mergemount build"
rm -rf copied built
cp -r merged copied
"$mm" build merge.yml built --no-progress
diff -r copied built && echo "identical"
fusermount3 -u merged
trap - EXIT
echo "demo done: models and outputs are in $work"

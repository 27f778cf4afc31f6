# Shared by the bench scripts (sourced): the binaries, three generated models with a linear merge of
# them, and timing helpers. Set `shape` (mm-mkmodel options) before calling bench_models.
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mm="$top/build/tools/mergemount"
mk="$top/build/tools/mm-mkmodel"

# bench_models: makes m1, m2, m3 in the current folder (once) and writes merge.yml, a linear merge.
bench_models() {
  local i
  for i in 1 2 3; do
    [ -f "m$i/model.safetensors" ] || "$mk" "m$i" --seed "$i" "${shape[@]}"
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

#!/usr/bin/env bash
# The CUDA figures of docs/performance.md's GPU table (issue 14), in one go on a machine with a GPU
# and bertfit installed (`make install`): throughput at the stages' batch and at one that fills the
# GPU more, then the embedded default's stages (pipeline_phases.py runs dvc.yaml's commands).
#   bash benchmarks/cuda.sh [OUT_DIR]      # default reports/benchmarks
set -euo pipefail
cd "$(dirname "$0")"
out=${1:-../reports/benchmarks}
# a params file per batch, beside params.yaml (its `tasks: tasks.yaml` is read from its folder)
variant() {
  python - "$@" <<'PY'
import sys, yaml
name, section, key, value = sys.argv[1:]
params = yaml.safe_load(open("../params.yaml"))
params[section][key] = yaml.safe_load(value)
yaml.safe_dump(params, open(f"../params_{name}.yaml", "w"), sort_keys=False)
PY
}
variant pb512 pretrain per_device_train_batch_size 512
variant fb256 finetune per_device_train_batch_size 256
trap 'rm -f ../params_pb512.yaml ../params_fb256.yaml' EXIT
python pretrain_throughput.py --steps 30 --warmup 5 --rounds 2 --out "$out/pretrain_cuda.json"
python pretrain_throughput.py --params ../params_pb512.yaml --steps 15 --warmup 3 --rounds 2 \
  --out "$out/pretrain_cuda_b512.json"
python finetune_throughput.py --steps 40 --warmup 5 --rounds 2 --out "$out/finetune_cuda.json"
python finetune_throughput.py --params ../params_fb256.yaml --steps 20 --warmup 3 --rounds 2 \
  --out "$out/finetune_cuda_b256.json"
python pipeline_phases.py --precision auto --name cuda --out-dir "$out"  # pipeline_cuda_auto.json

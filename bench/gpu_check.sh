#!/usr/bin/env bash
# The prepared GPU check (issue 7), about 5 minutes on one GPU, no data set needed. On the device tool, with
# the wheels of bench/gpu_wheels.sh carried as .whl:   bash bench/gpu_check.sh
# It writes its tables under $OUT (the device tool's output folder) or LOGS/gpu_check.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-LOGS/gpu_check}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
# 1. training img/s: CPU data path, device data path, batches already on the device; eval embedding; faiss
timeout 300 python3 bench/gpu_check.py --device cuda --out "$OUT/gpu_check.md" 2>&1 | tail -n 40 | tee "$OUT/gpu_check.log"
# 2. the device data path alone (decode + resize + RandAugment + normalise), images/s
timeout 60 python3 bench/data_throughput.py --only device --device cuda 2>&1 | tail -n 12 | tee "$OUT/device_path.md"
# 3. peak memory of one training step per published recipe and option
timeout 120 python3 bench/memory.py --device cuda 2>&1 | tail -n 40 | tee "$OUT/memory.md"
# 4. Lightning's overhead over a bare PyTorch loop, paired step by step
timeout 60 python3 bench/train_overhead.py --device cuda --config configs/mixvpr_resnet50_4096.yaml \
  --precision bf16-mixed --steps 20 2>&1 | tail -n 12 | tee "$OUT/train_overhead.md"

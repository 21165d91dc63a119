#!/usr/bin/env bash
# Download, on this (online) machine, the Python packages the GPU machine lacks into .whl/ (git-ignored), for
# bench/gpu_check.sh. The GPU machine has Python 3.12 with torch, torchvision, lightning, timm, tensorboard,
# opencv and onnx; it lacks jsonargparse, pytorch-metric-learning and faiss.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
for spec in jsonargparse==4.53.0 docstring-parser typeshed-client pytorch-metric-learning==2.9.0 faiss-cpu==1.15.1; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d .whl "$spec"
done
du -sh .whl && ls .whl

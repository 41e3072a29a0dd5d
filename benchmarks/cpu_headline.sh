#!/usr/bin/env bash
# The headline CPU comparison: resnext50_32x4d and resnet50 (same FLOPs, dense convs) at 224x224,
# every backend and the peers a user could pick instead, then int8 vs fp32 on both engines.
# Writes benchmarks/results/cpu-*.{json,csv,md,png} and benchmarks/results/cpu-headline.md.
# Takes about 20 minutes on 2 cores (torch.compile's cold compile is a good part of it). Run it on
# an otherwise idle machine: both cores are measured.
set -euo pipefail
cd "$(dirname "$0")/.."
make install
.venv/bin/pip install --quiet -e '.[peers]'
RD=.venv/bin/resnext-deploy
TIMING=(--threads 2 --warmup 3 --min-iters 15 --min-time 3 --out benchmarks/results)

for model in resnext50_32x4d resnet50; do
  $RD bench "$model" --provider cpu --peers --batch-sizes 1,2,4,8 "${TIMING[@]}" --name "cpu-$model"
done

# int8 (static QDQ, uint8 activations / int8 weights) against fp32 onnxruntime, side by side.
# Random weights (speed does not depend on them), calibrated on the bundled digits upscaled to
# 224 px. With random weights top-1 agreement means nothing, so the accuracy gate is off here;
# it is measured on the trained demo model instead (see benchmarks/README.md).
mkdir -p runs/bench
.venv/bin/python -c "import torch, torchvision; torch.manual_seed(0); \
torch.save(torchvision.models.resnext50_32x4d(weights=None).state_dict(), 'runs/bench/rx50.pth')"
$RD export runs/bench/rx50.pth --arch resnext50_32x4d --out runs/bench/rx50-int8 --force \
  --precision int8 --calibration digits --int8-min-agreement 0 --batch-sizes 1,2
# --engines: fp32 and int8 on onnxruntime and OpenVINO side by side, each checked against eager.
$RD bench runs/bench/rx50-int8 --backend eager --backend onnxruntime --backend onnxruntime-int8 \
  --engines --batch-sizes 1,8 "${TIMING[@]}" --name cpu-resnext50_32x4d-int8

.venv/bin/python benchmarks/headline.py benchmarks/results/cpu-resnext50_32x4d.json \
  benchmarks/results/cpu-resnet50.json --int8 benchmarks/results/cpu-resnext50_32x4d-int8.json \
  --out benchmarks/results/cpu-headline.md

#!/usr/bin/env bash
# The headline CPU comparison: resnext50_32x4d and resnet50 (same FLOPs, dense convs) at 224x224,
# every backend and the peers a user could pick instead, on this machine's CPU.
# Writes benchmarks/results/cpu-<model>.{json,csv,md,png} and benchmarks/results/cpu-headline.md.
# Takes about 15 minutes on 2 cores (torch.compile's cold compile is most of it). Run it on an
# otherwise idle machine: both cores are measured.
set -euo pipefail
cd "$(dirname "$0")/.."
make install
.venv/bin/pip install --quiet -e '.[peers]'
for model in resnext50_32x4d resnet50; do
  .venv/bin/resnext-deploy bench "$model" --provider cpu --peers --batch-sizes 1,2,4,8 \
    --threads 2 --warmup 3 --min-iters 15 --min-time 3 --out benchmarks/results \
    --name "cpu-$model"
done
.venv/bin/python benchmarks/headline.py benchmarks/results/cpu-resnext50_32x4d.json \
  benchmarks/results/cpu-resnet50.json --out benchmarks/results/cpu-headline.md

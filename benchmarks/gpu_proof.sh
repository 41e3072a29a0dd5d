#!/usr/bin/env bash
# The GPU proof: every CUDA claim of the README, shown on the machine this runs on, in one folder.
#
#   benchmarks/gpu_proof.sh [--provider cuda|cpu] [--arch resnext50_32x4d] [--out DIR]
#                           [--batch-sizes 1,8,64,256] [--archive FILE] [--no-tests]
#                           [--only STEP,STEP,...]
#
# Steps, each with its own time limit, each recorded in DIR/steps.tsv as it ends (name, exit
# status, seconds, verdict), its stdout in DIR/STEP.log and its stderr in DIR/STEP.err, so a run
# cut off still shows what it did (--only runs the steps named, e.g. --only export,bench-best):
#   machine     nvidia-smi (GPU, driver, memory) and the torch/CUDA/cuDNN/onnxruntime versions
#   doctor      resnext-deploy doctor --provider P --json
#   export      a random-weight <arch> checkpoint, exported with its fp16 variant
#   probe       benchmarks/gpu_probe.py: options stick, placement, IO binding, CUDA-graph replay
#   verify      verify --provider cpu --provider P (CUDA: fp32 with TF32 off, fp16 on the GPU)
#   no-gpu      predict --provider cuda with CUDA_VISIBLE_DEVICES= must exit 1, stdout empty
#   torch-free  predict --provider cuda with no LD_LIBRARY_PATH: it never imports torch, so it
#               must find CUDA's libraries itself (the nvidia-* wheels on sys.path)
#   bench       eager and AMP (channels_last, cudnn.benchmark), TorchScript, onnxruntime fp32
#               and fp16, with --tune (CUDA options one at a time, CUDA graphs among them)
#   bench-best  each at its best, side by side in one run: eager AMP (channels_last,
#               cudnn.benchmark), torch.compile AMP (reduce-overhead: CUDA graphs), onnxruntime
#               fp32/fp16 with IO binding, CUDA graphs and prefer_nhwc
#   profile     bench --profile of onnxruntime fp32/fp16 with the bench's provider options (the
#               CUDA graph left off: a replay has no per-node events), from the export bench ran
#   tensorrt    bench --provider tensorrt, only where TensorRT's libraries are present
#   pytest      pytest -m gpu, then tests/runtime and tests/bench
# With --archive, DIR (without the exported model files) is packed into FILE after every step.
# The suite runs this with --provider cpu on a tiny model (tests/test_gpu_proof.py).
set -uo pipefail

provider=cuda
arch=resnext50_32x4d
out=gpu-proof
sizes=1,8,64,256
archive=""
tests=1
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --provider) provider=$2; shift 2 ;;
    --arch) arch=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --batch-sizes) sizes=$2; shift 2 ;;
    --archive) archive=$2; shift 2 ;;
    --no-tests) tests=0; shift ;;
    --only) only=",$2,"; shift 2 ;;
    *) echo "gpu_proof.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$provider" in cuda|cpu) ;; *) echo "gpu_proof.sh: --provider cuda|cpu" >&2; exit 2 ;; esac

root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
mkdir -p "$out"
out=$(cd "$out" && pwd)
model="$out/model"
steps="$out/steps.tsv"
printf 'step\trc\tseconds\tverdict\n' > "$steps"
cd "$root"

rd() { "$py" -m resnext_deploy "$@"; }

pack() {
  [ -n "$archive" ] || return 0
  tar -czf "$archive.tmp" -C "$(dirname "$out")" --exclude='model' --exclude='*.pth' --exclude='photo.png' \
    "$(basename "$out")" && mv "$archive.tmp" "$archive"
}

# step NAME LIMIT_S CMD...: runs CMD with a time limit, its output in NAME.log
step() {
  local name=$1 limit=$2
  shift 2
  local start rc verdict
  if [ -n "$only" ] && [[ "$only" != *",$name,"* ]]; then
    return 0
  fi
  start=$(date +%s)
  echo "== $name (limit ${limit}s): $*"
  # a fresh bash runs the step, so that a function (exported below) can have a time limit too
  timeout --kill-after=10 "$limit" bash -c '"$@"' step "$@" > "$out/$name.log" 2> "$out/$name.err"
  rc=$?
  case $rc in 0) verdict=ok ;; 124|137) verdict=timeout ;; *) verdict=failed ;; esac
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - start ))" "$verdict" >> "$steps"
  tail -n 8 "$out/$name.log"
  grep -v 'cudnn_frontend' "$out/$name.err" | tail -n 8
  echo "== $name: $verdict (exit $rc, $(( $(date +%s) - start )) s)"
  pack
  return $rc
}

machine() {
  if [ "$provider" = cuda ]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  fi
  "$py" - <<'PY'
import json, platform
info = {"python": platform.python_version(), "machine": platform.machine()}
try:
    import torch
    info.update(torch=torch.__version__, torch_cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version(), cuda_available=torch.cuda.is_available())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1),
                    sm_count=p.multi_processor_count, capability=f"{p.major}.{p.minor}")
except ImportError:
    pass
import onnxruntime as ort
info.update(onnxruntime=ort.__version__, ort_providers=ort.get_available_providers())
print(json.dumps(info, indent=1))
PY
}

make_checkpoint() {
  "$py" - "$arch" "$out/$arch.pth" <<'PY'
import sys, torch
from resnext_deploy.models.registry import build_model
torch.manual_seed(0)
torch.save(build_model(sys.argv[1], 1000).state_dict(), sys.argv[2])
PY
  rm -rf "$model"
  rd export "$out/$arch.pth" --arch "$arch" --out "$model" --precision fp16 --json && return 0
  # The export's parity gate includes CUDA where it is usable; if that gate fails, export with
  # the CPU gate alone so that every later step still runs (verify then shows the CUDA failure).
  echo "export failed; exporting again with the GPU hidden from the parity gate" >&2
  rm -rf "$model"
  CUDA_VISIBLE_DEVICES= rd export "$out/$arch.pth" --arch "$arch" --out "$model" \
    --precision fp16 --json
  return 3
}

make_image() {
  "$py" - "$out/photo.png" <<'PY'
import sys
from PIL import Image
from sklearn.datasets import load_sample_images
Image.fromarray(load_sample_images().images[0]).save(sys.argv[1])
PY
}

# predict on CUDA where no GPU is visible: one error line on stderr, exit 1, stdout empty
no_gpu() {
  make_image || return 2
  CUDA_VISIBLE_DEVICES= rd predict "$model" "$out/photo.png" --provider cuda \
    > "$out/no-gpu.stdout" 2> "$out/no-gpu.stderr"
  local rc=$?
  echo "exit $rc; stdout $(wc -c < "$out/no-gpu.stdout") bytes; stderr:"
  cat "$out/no-gpu.stderr"
  [ $rc -eq 1 ] && [ ! -s "$out/no-gpu.stdout" ] && grep -q CUDAExecutionProvider "$out/no-gpu.stderr"
}

# predict on the GPU without the loader path: torch-free, it must find cuBLAS/cuDNN itself
torch_free() {
  make_image || return 2
  [ "$provider" = cuda ] || { echo "the CUDA libraries matter on CUDA only: skipped"; return 0; }
  env -u LD_LIBRARY_PATH "$py" -c '
import runpy, sys
sys.argv = ["resnext-deploy", "predict", sys.argv[1], sys.argv[2], "--provider", "cuda",
            "--format", "json"]
try:
    runpy.run_module("resnext_deploy", run_name="__main__")
finally:
    sys.stderr.write("torch imported: %s\n" % ("torch" in sys.modules))
' "$model" "$out/photo.png"
}

# shellcheck disable=SC2089,SC2090 # word-split on purpose (an array cannot be exported)
bench_common="--batch-sizes $sizes --out $out/bench --warmup 3 --min-time 0.5 --max-time 5"

bench_main() {
  if [ "$provider" = cuda ]; then
    rd bench "$model" --provider cuda --backend eager --backend eager-amp --backend torchscript \
      --backend torchscript-opt --backend onnxruntime --backend onnxruntime-fp16 --tune \
      --name "$arch-cuda" $bench_common
  else
    rd bench "$model" --provider cpu --backend eager --backend torchscript \
      --backend torchscript-opt --backend onnxruntime --backend onnxruntime-fp16 \
      --name "$arch-cpu" $bench_common
  fi
}

bench_best() {
  if [ "$provider" = cuda ]; then
    rd bench "$model" --provider cuda --backend eager-amp --backend compile-amp \
      --backend onnxruntime --backend onnxruntime-fp16 --cuda-graph --prefer-nhwc \
      --no-overhead --name "$arch-cuda-best" $bench_common
  else
    rd bench "$model" --provider cpu --backend eager --backend onnxruntime \
      --no-overhead --name "$arch-cpu-best" $bench_common
  fi
}

bench_profile() {
  local first=${sizes%%,*}
  if [ "$provider" = cuda ]; then
    rd bench "$model" --provider cuda --backend onnxruntime --backend onnxruntime-fp16 \
      --prefer-nhwc --cuda-graph --no-overhead --profile --name "$arch-cuda-profile" \
      --batch-sizes "$first" --out "$out/bench" --warmup 3 --min-time 0.5 --max-time 5
  else
    rd bench "$model" --provider cpu --backend onnxruntime --no-overhead --profile \
      --name "$arch-cpu-profile" --batch-sizes "$first" --out "$out/bench" --warmup 1 \
      --min-time 0 --max-time 5
  fi
}

bench_trt() {
  if [ "$provider" != cuda ] || ! "$py" -c 'import ctypes; ctypes.CDLL("libnvinfer.so.10")' 2>/dev/null; then
    echo "TensorRT's libraries (libnvinfer.so.10) are not on this machine: skipped"
    return 0
  fi
  rd bench "$model" --provider tensorrt --backend onnxruntime --trt-fp16 --no-overhead \
    --name "$arch-tensorrt" $bench_common
}

run_tests() {
  [ "$tests" = 1 ] || { echo "--no-tests: skipped"; return 0; }
  "$py" -m pytest -m gpu -rs -q -p no:cacheprovider --ignore=tests/serve \
    --deselect tests/test_layers.py::test_import_contracts_are_kept || return 1
  "$py" -m pytest -rs -q -x -p no:cacheprovider tests/runtime tests/bench
}

export provider arch out model sizes archive tests py bench_common only
export -f rd machine make_checkpoint make_image no_gpu torch_free bench_main bench_best bench_profile \
  bench_trt run_tests

step machine 60 machine
step doctor 120 rd doctor --provider "$provider" --json
step export 300 make_checkpoint
step probe 120 "$py" benchmarks/gpu_probe.py "$model/model.onnx" "$provider"
verify_providers="--provider cpu"
[ "$provider" = cpu ] || verify_providers="$verify_providers --provider $provider"
step verify 240 rd verify "$model" $verify_providers --json
step no-gpu 60 no_gpu
step torch-free 60 torch_free
step bench 420 bench_main
step bench-best 360 bench_best
step profile 240 bench_profile
step tensorrt 300 bench_trt
step pytest 240 run_tests
echo "== done"
cat "$steps"
pack
! grep -qP '\t(failed|timeout)$' "$steps"

#!/usr/bin/env bash
# The one script to run on a lent GPU machine (repo root, python3 with a CUDA
# torch, nvcc, no network). Prepare the carry first, on the CPU machine:
#   bash tests/gpu/prepare_device_carry.sh      # -> .device/ucx (Debian UCX)
# then run, e.g. with the device tool:
#   run(command="bash tests/gpu/run_on_device.sh", carry=[".device"], timeout_s=540)
# It builds torch_distx in place against the machine's torch (~2-4 min on 16
# cores), runs `make test-gpu`, then the GPU benchmark (world size 1: distx vs
# torch's nccl; two "hosts" on one GPU: distx's UCX stage vs gloo). Logs and
# JSON go to $OUT (the device tool brings them back) or /tmp/distx-gpu.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/distx-gpu}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
exec > >(tee "$OUT/run_on_device.log") 2>&1

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'nccl', torch.cuda.nccl.version())"

echo "== UCX from .device/ucx"
root=$PWD/.device/ucx/usr
if [ ! -d "$root/include/ucp" ]; then
  echo "missing .device/ucx: run tests/gpu/prepare_device_carry.sh here first and carry .device"
  exit 2
fi
export UCX_HOME=$PWD/.device/ucx-prefix
mkdir -p "$UCX_HOME"
ln -sfn "$root/include" "$UCX_HOME/include"
ln -sfn "$root/lib/x86_64-linux-gnu" "$UCX_HOME/lib"
# The extension's RPATH finds libucp; UCX's own libraries (libuct, libucs,
# modules) and libnuma are found through this.
export LD_LIBRARY_PATH=$UCX_HOME/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# gVisor has no CMA and may lack the shared-memory transports' needs: TCP on lo.
export UCX_TLS=${UCX_TLS:-tcp,self} UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo}
export UCX_HANDLE_ERRORS=none UCX_WARN_UNUSED_ENV_VARS=n

echo "== build (in place)"
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-16} PATH=$CUDA_HOME/bin:$PATH
start=$(date +%s)
if ! $PY setup.py -q build_ext --inplace >"$OUT/build.log" 2>&1; then
  tail -60 "$OUT/build.log"
  echo "BUILD FAILED"
  exit 1
fi
echo "built in $(( $(date +%s) - start )) s"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
$PY -c "import torch_distx as d; print('with_cuda', d._C.with_cuda, 'ucx', d.ucx_version())" || exit 1

echo "== make test-gpu"
if command -v make >/dev/null; then
  timeout 300 make --no-print-directory test-gpu GPU_PY="$PY" 2>&1 | tee "$OUT/test-gpu.log"
else
  timeout 300 $PY -m pytest tests/gpu -q -rs -p no:cacheprovider 2>&1 | tee "$OUT/test-gpu.log"
fi
tests_rc=${PIPESTATUS[0]}

echo "== benchmark: world size 1, distx vs nccl"
timeout 120 $PY -m torch_distx.bench gpu --mode world1 --max-bytes 256M --json "$OUT/bench_world1.json"
echo "== benchmark: 2 hosts on one GPU, distx (UCX stage) vs gloo"
timeout 120 $PY -m torch_distx.bench gpu --mode hosts2 --max-bytes 64M --json "$OUT/bench_hosts2.json"

echo "== done (tests exit code $tests_rc)"
exit "$tests_rc"

#!/usr/bin/env bash
# The GPU share of the paper-scale runs, as one script with hard time limits (a GPU is often lent
# for minutes, not hours). Run from the repository root with the package importable
# (`pip install -e .` or PYTHONPATH=src) on a machine with a CUDA build of PyTorch:
#
#     bash scripts/paper_gpu.sh OUT_DIR [G_SECONDS] [IR_SECONDS]
#
# 1. the CUDA tests (the batched trainer and the primal-dual method on the GPU against the CPU);
# 2. the image-restoration paper profile (64x64; training, primal-dual restorations and the
#    reference protocol on the GPU), resumed from the stored partial table when there is one and
#    stopped after IR_SECONDS (default 0: skipped); the runner saves after every (family, seed),
#    so a stopped run keeps what finished (OUT_DIR/image_restoration.csv);
# 3. the function-approximation chapter's full grid (every ladder configuration, d = 5, 10, 20, 50, ten targets, three
#    seeds, both long-budget configurations also at twice the steps), stopped after G_SECONDS
#    (default 380; 0 skips it); the runner rewrites its tables after every finished job and lists
#    the pending ones in their provenance, so a stopped run stores only what finished;
# 4. the trainer and forward benchmarks on the GPU (steps per second batched against one at a
#    time; Conv-SOC against Conv-ReLU forward+backward).
#
# Everything printed also goes to OUT_DIR/log.txt; G's tables go to OUT_DIR/g/.
set -uo pipefail
out=${1:?usage: scripts/paper_gpu.sh OUT_DIR [G_SECONDS] [IR_SECONDS]}
g_seconds=${2:-380}
ir_seconds=${3:-0}
stored=src/socicnn/data/results
mkdir -p "$out/g"
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, socicnn; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  echo "== 1. CUDA tests"
  timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_batched.py tests/test_primal_dual.py -k cuda
  if [ "$ir_seconds" -gt 0 ]; then
    echo "== 2. image restoration, paper profile (stopped after ${ir_seconds} s)"
    cp "$stored/image_restoration.csv" "$stored/image_restoration.meta.json" "$out/" 2>/dev/null
    timeout -k 5 "$ir_seconds" python3 -m socicnn.experiments.image_restoration paper --device cuda \
      --out "$out/image_restoration.csv" --resume
    echo "image restoration exit status $?"
  fi
  if [ "$g_seconds" -gt 0 ]; then
    echo "== 3. function approximation, full grid (stopped after ${g_seconds} s)"
    timeout -k 5 "$g_seconds" python3 -m socicnn.experiments.function_approximation --profile paper \
      --device cuda --workers 8 --double "long budget" "library defaults" --out "$out/g"
    echo "G exit status $?"  # timeout signals its whole process group: the spawned workers stop too
  fi
  echo "== 4. benchmarks"
  timeout 70 python3 benchmarks/bench_training.py --device cuda --steps 10
  timeout 40 python3 benchmarks/bench_conv.py --device cuda --skip-restoration --min-run-time 2
} 2>&1 | tee "$out/log.txt"

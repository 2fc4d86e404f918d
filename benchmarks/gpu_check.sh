#!/usr/bin/env bash
# The GPU figures of README's benchmark table and a check of the CUDA/AMP training path, in one run on a GPU machine
# (each step bounded by `timeout`; logs under $OUT, default ./gpu-figures). Needs monai and pytorch-ignite importable
# (on a bare machine: carried wheels in .whl/, installed to /tmp/site below). A lent GPU has 15 minutes in all, so
# STEPS picks the groups, the figures still missing first (default: "open"; "recorded" reruns 2026-11-26's, "all"):
#   open:     the full test split at 320 px on the GPU (image store, issue 21); the training step's options at 320 px
#             batch 32 with torch.compile / CUDA graphs / bf16 / fused Adam (the 1,500 images/s target), then the
#             224/320 x batch 8/32/128 table without compile (issue 22)
#   recorded: the batched stage, the device/loader path studies, the pipeline (BENCHMARKS.md's GPU section)
set -u
OUT=${OUT:-gpu-figures}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 CACHE=/tmp/maicache
step() { local name=$1 limit=$2; shift 2; echo "== $name ($(date +%T))"; timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"; }
STEPS=${STEPS:-open}
PHANTOM=$(timeout 120 python3 -c "
from pathlib import Path
from mai_aug.settings.presets import load_preset
from mai_aug.study.phantom_cache import ensure_phantom
print(ensure_phantom(load_preset('demo')['phantom'], Path('$CACHE'), quiet=True))" | tail -1)
echo "phantom: $PHANTOM"
step env 30 bash -c 'nvidia-smi -L; nproc; python3 -c "import torch, monai, ignite; print(torch.__version__, monai.__version__, ignite.__version__)"'
if [ "$STEPS" = open ] || [ "$STEPS" = all ]; then
  step eval-320 240 python3 benchmarks/full_scale.py --distinct 100 --store-rows 1000 --eval-size 32 --workers 16 \
    --device cuda --device-size 320 --dir /tmp/nih-full
  step train-compile 300 python3 benchmarks/train_throughput.py --sizes 320 --batch-sizes 32 --steps 30 \
    --data "$PHANTOM" --workers 8 --options plain channels_last+amp+fused compile+channels_last+amp+fused \
    reduce-overhead+channels_last+amp+fused
  step train-table 240 python3 benchmarks/train_throughput.py --sizes 224 320 --batch-sizes 8 32 128 --steps 20 \
    --options plain amp bf16 channels_last+amp channels_last+amp+fused
fi
if [ "$STEPS" = recorded ] || [ "$STEPS" = all ]; then
  step stage 90 python3 benchmarks/stage_throughput.py --size 320 --batch-sizes 8 64 256 1024 --steps 20
  step train 200 python3 benchmarks/train_throughput.py --sizes 320 --batch-size 32 --steps 30 --data "$PHANTOM" \
    --workers 8 --options plain amp channels_last+amp amp+deterministic
  for w in device loader; do
    step "compare-$w" 150 python3 -m mai_aug compare --preset benchmarks/presets/augment-$w.yaml --seeds 3 \
      --cache-dir "$CACHE" --quiet --out /tmp/study-$w
  done
  step paths 60 python3 benchmarks/augment_paths_auc.py --device-study /tmp/study-device --loader-study /tmp/study-loader \
    --regime complex --seeds 3
  cp /tmp/study-device/complex/seed-0/train.log "$OUT/train-device.log" 2>/dev/null
  step pipeline 90 python3 benchmarks/pipeline_throughput.py --images "$PHANTOM" --size 320 --epochs 2 --batch-size 64 \
    --workers 8 --device-workers 4 --augment-on both
fi
echo "== done ($(date +%T))"

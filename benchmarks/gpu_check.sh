#!/usr/bin/env bash
# The GPU check of medvlm, one prepared script (a CUDA machine; ~6-8 min on one H100/H200):
#   1. medvlm on CUDA: synth -> prepare -> split -> make-tiny-vlm -> eval-vlm (transformers, bf16,
#      log-probs and generate) -> finetune --method qlora (bitsandbytes nf4) -> eval-vlm --adapter
#      -> train-cnn under torchrun (CUDA, bf16 autocast) -> a DDP step over an nccl process group;
#   2. benchmarks/gpu_mllama.py: the full-size Llama-3.2-11B-Vision architecture (random weights, bf16).
# Every step's log and JSON lands in $OUT (default /tmp/medvlm-gpu-check). Missing packages may be
# given as wheels in .whl/ (installed to /tmp/site, no network). Usage: bash benchmarks/gpu_check.sh
set -u
OUT=${OUT:-/tmp/medvlm-gpu-check}
L=/tmp/medvlm-gpu-logs  # every step's log; bundled into $OUT/gpu_check.tar.gz at the end
rm -rf "$L" && mkdir -p "$OUT" "$L"
if [ -z "${NO_WHEELS:-}" ] && compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export MEDVLM_GPU_BUDGET_S=${MEDVLM_GPU_BUDGET_S:-300}
PY=${PYTHON:-python3}
T=/tmp/medvlm-gpu-work
rm -rf "$T" && mkdir -p "$T"
status=0
step() {  # step NAME COMMAND...: run, time, log to $L/steps.log; a failure is recorded, not fatal
  local name=$1; shift
  local t0=$(date +%s%N)
  echo "== $name: $*" | tee -a "$L/steps.log"
  "$@" >>"$L/$name.log" 2>&1
  local rc=$?
  local dt=$(( ($(date +%s%N) - t0) / 1000000 ))
  echo "== $name: rc=$rc ${dt} ms" | tee -a "$L/steps.log"
  [ $rc -ne 0 ] && { tail -n 25 "$L/$name.log"; status=1; }
  return $rc
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$L/gpu.txt"
$PY -c "import torch, transformers, peft; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'transformers', transformers.__version__, 'peft', peft.__version__)
import bitsandbytes; print('bitsandbytes', bitsandbytes.__version__)" 2>&1 | tee -a "$L/gpu.txt"

D=${DEVICE:-cuda}
step synth $PY -m medvlm synth "$T/data" --patients 16 --lgg-fraction 0.25 --size medium
step prepare $PY -m medvlm prepare "$T/data" --out "$T/work" --shape 48 64 64 --workers 4
step split $PY -m medvlm split "$T/work" --test-fraction 0.25 --folds 2
step tiny $PY -m medvlm make-tiny-vlm "$T/tiny"
step eval_logprobs $PY -m medvlm --verbose eval-vlm "$T/work" --out "$T/eval-lp" --backend transformers \
  --model "$T/tiny" --device "$D" --scoring logprobs --batch-size 16 --bootstrap 0 --no-progress
step eval_generate $PY -m medvlm --verbose eval-vlm "$T/work" --out "$T/eval-gen" --backend transformers \
  --model "$T/tiny" --device "$D" --scoring generate --max-new-tokens 24 --batch-size 16 --bootstrap 0 \
  --limit 2 --no-progress
step qlora $PY -m medvlm --verbose finetune "$T/work" --out "$T/adapter" --base-model "$T/tiny" \
  --method qlora --max-steps 8 --batch-size 8 --fold 0 --gradient-checkpointing
step eval_adapter $PY -m medvlm --verbose eval-vlm "$T/work" --out "$T/eval-ad" --backend transformers \
  --model "$T/tiny" --adapter "$T/adapter" --device "$D" --scoring logprobs --batch-size 16 --bootstrap 0 \
  --no-progress
step cnn_torchrun $PY -m torch.distributed.run --standalone --nproc-per-node 1 -m medvlm train-cnn "$T/work" \
  --out "$T/cnn" --model small3d --epochs 2 --fold 0 --device "$D" --bootstrap 0 --no-progress
step ddp_nccl $PY -m torch.distributed.run --standalone --nproc-per-node 1 benchmarks/gpu_ddp_step.py \
  --out "$L/ddp_nccl_1.json"
# two ranks, one per GPU (nccl refuses two ranks on one GPU: "Duplicate GPU detected")
[ "$($PY -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ] && step ddp_nccl_2 $PY -m torch.distributed.run --standalone --nproc-per-node 2 benchmarks/gpu_ddp_step.py \
  --out "$L/ddp_nccl_2.json"
for r in eval-lp eval-gen eval-ad cnn; do
  [ -f "$T/$r/metrics.json" ] && cp "$T/$r/metrics.json" "$L/metrics-$r.json"
  [ -f "$T/$r/run.json" ] && cp "$T/$r/run.json" "$L/run-$r.json"
done
[ -f "$T/adapter/train_log.csv" ] && cp "$T/adapter/train_log.csv" "$L/qlora_train_log.csv"
cp "$L/steps.log" "$OUT/steps.log"; tar czf "$OUT/gpu_check.tar.gz" -C "$L" .  # kept if the next step times out

step gpu_mllama $PY benchmarks/gpu_mllama.py --out "$OUT/gpu_mllama.json" --budget-s "$MEDVLM_GPU_BUDGET_S" \
  ${MLLAMA_ARGS:-}
cat "$L/steps.log"
exit $status

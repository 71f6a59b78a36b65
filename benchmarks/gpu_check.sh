#!/usr/bin/env bash
# The one-shot GPU check: run it first on a lent GPU machine, commit its table to benchmarks/gpu.md.
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine (device tool: carry .whl, see below)
#   bash benchmarks/gpu_check.sh --smoke    # the same sequence on the tiny model on a CPU (a few minutes)
#
# What it measures, each row on the same random-init Qwen2.5-VL-3B (36 LM layers, 32 vision blocks, every
# dimension exact) at the paper's image sizes (f_uni 1000, crops up to 1400 x 1200), bf16:
#   1. attention implementations against SDPA (bench attention: seconds, max |Δ logits|, max |Δ grad|);
#   2. SFT steps: SDPA with gradient checkpointing (the recorded baseline, ~2% MFU on an H200), the kit's varlen
#      path, then without gradient checkpointing, then with Liger's fused linear + cross-entropy;
#   3. one GRPO configuration (8 completions per prompt, transformers generation).
# samples/s, tokens/s, MFU (6 x parameters FLOPs per non-padding token / peak bf16 FLOP/s) and peak memory per
# row; the markdown goes to stdout and to $OUT/gpu.md (the device tool brings $OUT back).
#
# The GPU machines have torch, transformers, accelerate and peft but no TRL, datasets or Liger and no registry:
# carry wheels in .whl/ (ignored by git). Here, once:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     trl==1.16.0 datasets dill multiprocess plyfile liger-kernel
# then run it with the device tool: command "bash benchmarks/gpu_check.sh", carry [".whl"], timeout_s 600.
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
REPORT="$OUT/gpu.md"
if [ "$SMOKE" = 1 ]; then
  ./run.sh --help >/dev/null 2>&1 || true  # sets up .venv on a fresh checkout
  PY=.venv/bin/python
  ARCH=(--arch tiny)
  ATT=(--text-layers 2 --vision-layers 2 --width 224 --height 224 --repeats 1 --impls sdpa,eager,rlkit_flash_varlen)
  STEPS=(--steps 2 --warmup 1 --set data.synth.out=data/synth_gpu_check_smoke data.synth.train_images=8
         data.synth.eval_images=2)
  BATCH=()
else
  PY=python3
  if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
  fi
  ARCH=(--arch qwen2.5-vl-3b --peak-tflops "${PEAK_TFLOPS:-989}")
  ATT=(--text-layers 36 --vision-layers 32 --repeats 3)
  STEPS=(--steps 8 --warmup 2)
  BATCH=(--batch 4)
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

{
  echo "## gpu_check $(date -u '+%Y-%m-%d %H:%M') UTC$([ "$SMOKE" = 1 ] && echo ' (smoke: tiny model, CPU)')"
  echo
  "$PY" - <<'EOF'
import importlib.util, platform, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
try:
    from torch.nn.attention import varlen  # noqa: F401
    varlen_kernel = "yes"
except ImportError:
    varlen_kernel = "no"
have = {m: importlib.util.find_spec(m) is not None for m in ("flash_attn", "liger_kernel", "trl", "datasets")}
print(f"- machine: {platform.machine()}, {gpu}, torch {torch.__version__}, torch varlen_attn: {varlen_kernel}, "
      + ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in have.items()))
EOF
  echo
} | tee "$REPORT"

step() {  # a titled benchmark; a failing one is reported and the sequence goes on
  local title=$1; shift
  echo "### $title" | tee -a "$REPORT"
  echo | tee -a "$REPORT"
  if ! "$PY" benchmarks/bench.py "$@" --no-record 2>"$OUT/last_err.log" | grep -v -e '^\s*$' -e "^{'" | tee -a "$REPORT"; then
    echo "failed: $(tail -n 1 "$OUT/last_err.log")" | tee -a "$REPORT"
  fi
  echo | tee -a "$REPORT"
}

step "attention implementations against SDPA" attention "${ATT[@]}"
step "SFT, SDPA, gradient checkpointing (the baseline)" train "${ARCH[@]}" "${STEPS[@]}" "${BATCH[@]}" --attn sdpa
step "SFT, varlen attention" train "${ARCH[@]}" "${STEPS[@]}" "${BATCH[@]}" --attn varlen
step "SFT, varlen, no gradient checkpointing" train "${ARCH[@]}" "${STEPS[@]}" "${BATCH[@]}" --attn varlen --no-checkpointing
if "$PY" -c "import liger_kernel" 2>/dev/null; then
  step "SFT, varlen, no gradient checkpointing, Liger" train "${ARCH[@]}" "${STEPS[@]}" "${BATCH[@]}" --attn varlen --no-checkpointing --liger
else
  printf '### SFT with Liger\n\nnot run: liger-kernel is not installed here (carry its wheel in .whl)\n\n' | tee -a "$REPORT"
fi
step "GRPO, varlen (8 completions per prompt)" train "${ARCH[@]}" "${STEPS[@]}" --method grpo --attn varlen
echo "report: $REPORT"

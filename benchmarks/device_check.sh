#!/usr/bin/env bash
# The GPU checks whose figures docs/benchmarks.md records ("On a GPU"): the GPU path of
# collection, the simulators and TracIn (the demo pipeline end to end), the model-step,
# simulator and TracIn benchmarks, SmolLM2-135M collection, the paper-scale collection and the
# paper-scale config's gradient kernel.
# Written for the device tool's machine (one GPU, no network, a Python with JAX/flax/optax/
# orbax/transformers/torch but none of our other needs), in two back-to-back calls, because the
# SmolLM2 GGUF (98 MB) travels in two halves:
#
#   .dev/whl/*.whl          wheels of ml_collections, gguf, rouge-score, nltk, defusedxml
#   .dev/data/sst2/         a copy of ../shared/data/sst2
#   .dev/tokenizer.json     a copy of ../shared/tokenizers/gpt-neox-20b/tokenizer.json
#   .dev/gguf.sha256        sha256 of the GGUF;  .dev/gguf.part: its first half, then its second
#
#   bash benchmarks/device_check.sh 1    # stage half 1; demo pipeline, model step, simulator, TracIn
#   bash benchmarks/device_check.sh 2    # join the GGUF; SmolLM2 collection, paper scale
#
# QUICK=1 runs the same steps at CPU-sized settings (a dry run of this script on any machine).
# Everything goes to $OUT/device_check_<part>.log; each step has its own time limit, and a step
# that fails or times out is reported and the next one runs.
set -u
PART=${1:?usage: device_check.sh 1|2}
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
LOG="$OUT/device_check_$PART.log"
: >"$LOG"
QUICK=${QUICK:-0}
STASH=${STASH:-/tmp/gptjax_device}
mkdir -p "$STASH"

if [ -d .dev/whl ] && ! python3 -c "import ml_collections, gguf" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$STASH/site" .dev/whl/*.whl >>"$LOG" 2>&1 || { echo "error: wheels" | tee -a "$LOG"; exit 2; }
  export PYTHONPATH="$STASH/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
export GPTJAX_DATA_ROOT="${GPTJAX_DATA_ROOT:-$PWD/.dev/data}"
export GPTJAX_PYTHIA_TOKENIZER="${GPTJAX_PYTHIA_TOKENIZER:-$PWD/.dev/tokenizer.json}"
if [ "$QUICK" = 0 ]; then
  export JAX_PLATFORMS=cuda XLA_PYTHON_CLIENT_MEM_FRACTION=0.9
fi

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, report status and JSON
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  echo "=== $name: $*" >>"$LOG"
  timeout "$limit" "$@" >"$STASH/step.out" 2>&1
  local rc=$?
  cat "$STASH/step.out" >>"$LOG"
  echo "=== $name: rc=$rc in $((SECONDS - t0)) s" | tee -a "$LOG"
  [ $rc = 0 ] && tail -n 1 "$STASH/step.out"
  return 0
}

if [ "$PART" = 1 ]; then
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
    python3 -c "import jax, flax, optax, orbax.checkpoint as o, transformers, torch; \
print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__, \
'transformers', transformers.__version__, 'torch', torch.__version__)"; } 2>&1 | tee -a "$LOG"
  [ -f .dev/gguf.part ] && cp .dev/gguf.part "$STASH/gguf.part1"
  step demo 150 python3 -m gptjax.main --config configs/demo.py --workdir "$STASH/demo" \
    --config.simulator.encoder=gpt
  if [ "$QUICK" = 1 ]; then
    step model_step 600 python3 -m benchmarks.model_step --steps 2 --warmup 1
    step simulator 600 python3 -m benchmarks.simulator --runs 4 --steps 8 --test 16
    step tracin 600 python3 -m benchmarks.tracin --train 8 --test 8 --skip-captum
  else
    step model_step_d256 45 python3 -m benchmarks.model_step --device gpu --steps 20
    step model_step_160m 45 python3 -m benchmarks.model_step --device gpu --steps 10 \
      --hidden_size 768 --num_layers 12 --num_heads 12
    step simulator 60 python3 -m benchmarks.simulator
    step tracin_160m 45 python3 -m benchmarks.tracin --hidden-size 768 --num-layers 12 \
      --num-heads 12 --train 64 --test 64 --skip-captum --memory-budget-mb 32768
  fi
else
  if [ -f .dev/gguf.part ] && [ -f "$STASH/gguf.part1" ]; then
    cat "$STASH/gguf.part1" .dev/gguf.part >"$STASH/smollm2.gguf"
    if [ "$(sha256sum "$STASH/smollm2.gguf" | cut -c1-64)" = "$(cat .dev/gguf.sha256)" ]; then
      export GPTJAX_SMOLLM2_GGUF="$STASH/smollm2.gguf"
    else
      echo "error: the joined GGUF does not match .dev/gguf.sha256" | tee -a "$LOG"
    fi
  fi
  if [ "$QUICK" = 1 ]; then
    step collect_llm 900 python3 -m benchmarks.collect_llm --skip_torch --runs 1 --steps 2 \
      --fast_runs 1 --fast_steps 2
    step paper_scale 600 python3 -m benchmarks.collect_paper_scale --hidden_size 64 \
      --num_layers 2 --num_heads 4 --runs 2 --steps 2 --test 16
    step kernel_paper_scale 600 python3 -m benchmarks.kernel_paper_scale --hidden_size 64 \
      --num_layers 2 --num_heads 4 --pool 2 --test 2
  else
    if [ -n "${GPTJAX_SMOLLM2_GGUF:-}" ]; then
      step collect_llm 150 python3 -m benchmarks.collect_llm --skip_torch --runs 8 --steps 4 \
        --fast_runs 8 --fast_steps 8 --threads "$(nproc)"
    else
      echo "=== collect_llm: skipped (no GGUF: the first half was not staged)" | tee -a "$LOG"
    fi
    step paper_scale 150 python3 -m benchmarks.collect_paper_scale --runs 8 --steps 8
    step kernel_paper_scale 180 python3 -m benchmarks.kernel_paper_scale --pool 8 --test 8
  fi
fi

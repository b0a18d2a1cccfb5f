#!/usr/bin/env bash
# The GPU check of issue 11: ITIT-B speed on one GPU, in about 9 minutes, with no network.
#
# Here (with network), once:   bash benchmarks/prepare_gpu_wheels.sh   # -> .whl/ (~4.5 MB)
# On the GPU box, from the repository root (carry .whl):
#   OUT=/some/dir bash benchmarks/gpu_check.sh
# -> $OUT/gpu_results.json (every figure), $OUT/gpu_log.txt, $OUT/summary_trace_*.{json,txt}
#    (where the device time of the traced steps goes; the raw trace too when under 16 MB).
#
# ITIT-B: configs/vit_b.py (256px -> 16x16 tokens, text length 64, learned text encoder), bf16,
# per-stream batch $BATCH (row 14: 3 x $BATCH examples a step; row 3: 3 x $BATCH paired), T2I
# and captioning at $SAMPLE_BATCH. cuDNN attention where a probe shows it works, else XLA.
# Each part runs in its own process under its own timeout, so one failure loses nothing else.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check_out}
BATCH=${BATCH:-32}
SAMPLE_BATCH=${SAMPLE_BATCH:-64}
CONFIG=${CONFIG:-configs/vit_b.py}  # CONFIG=configs/tiny.py BATCH=4: a CPU smoke test
mkdir -p "$OUT"
LOG="$OUT/gpu_log.txt"
RESULTS="$OUT/gpu_results.json"
rm -f "$RESULTS"
exec > >(tee -a "$LOG") 2>&1
START=$(date +%s)
elapsed() { echo "[gpu_check] $(( $(date +%s) - START )) s: $*"; }

if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
export TF_CPP_MIN_LOG_LEVEL=1
nvidia-smi || true
python3 -c "import jax, flax, optax, grain, ml_collections; print('jax', jax.__version__, 'flax', flax.__version__, 'devices', jax.devices())"
elapsed "setup done"

# Which jax.nn.dot_product_attention implementation works for each use: training and T2I need
# masks, a T5-style bias and gradients; cached captioning needs one query over a long cache.
# IMPL=xla|cudnn skips the probe; PARTS (default below) picks the parts.
if [ -n "${IMPL:-}" ]; then
  IMPL_TRAIN=$IMPL; IMPL_CAPTION=$IMPL
else
read -r IMPL_TRAIN IMPL_CAPTION < <(timeout 45 python3 - <<'PY' || echo "xla xla"
import jax, jax.numpy as jnp
from itit.models import layers
def probe(b, q, k, grad=False):
  # The model's own cuDNN path (layers.even_length_attention: masks spanning both lengths,
  # odd lengths padded); a T5-style bias always takes XLA's implementation.
  key = jax.random.PRNGKey(0)
  x = lambda l: jax.random.normal(key, (b, l, 12, 64), jnp.bfloat16)
  mask = jnp.ones((b, 1, 1, k), bool).at[..., -1].set(False)
  f = lambda qq: layers.even_length_attention(qq, x(k), x(k), mask,
                                              implementation='cudnn').astype(jnp.float32).sum()
  try:
    jax.block_until_ready(jax.jit(jax.grad(f) if grad else f)(x(q)))
    return True
  except Exception as e:
    print(f'cudnn probe b={b} q={q} k={k} grad={grad}: {type(e).__name__}: {str(e)[:200]}',
          file=__import__('sys').stderr)
    return False
train = probe(4, 129, 129, grad=True) and probe(4, 192, 192, grad=True) and probe(4, 256, 256)
caption = probe(4, 257, 322) and probe(4, 1, 322)
print('cudnn' if train else 'xla', 'cudnn' if caption else 'xla')
PY
)
fi
elapsed "attention: train/t2i=$IMPL_TRAIN caption=$IMPL_CAPTION"

# The learned text encoder, as in every GPU figure so far (the paper configs default to the
# frozen T5-XXL, whose weights are not on the GPU box).
COMMON=(--config="$CONFIG" --config.model.text_encoder.kind=learned --config.model.dtype=bfloat16 --batch="$BATCH"
        --sample_batch="$SAMPLE_BATCH" --steps=5 --out="$RESULTS")
# The train steps scan over layers (SCAN=false unrolls them): one compiled block per stack
# keeps the row-14 step's compile (three stacks, two decoding loops, forward and backward) short.
# REMAT=full|dots recomputes activations in the backward pass (for batches that do not fit).
STEP_ARGS=(--parts=step --config.model.scan_layers="${SCAN:-true}")
if [ -n "${REMAT:-}" ]; then STEP_ARGS+=(--config.model.remat="$REMAT"); fi
part() {  # part SECONDS LABEL IMPL [benchmarks.benchmark args]
  local seconds=$1 label=$2 impl=$3; shift 3
  elapsed "part $label (attention $impl, timeout ${seconds}s)"
  timeout --signal=KILL "$seconds" python3 -m benchmarks.benchmark "${COMMON[@]}" \
    --config.model.attention_impl="$impl" "$@" \
    || echo "[gpu_check] part $label exited with $? (124/137 = timed out)"
}
# step3: the paired-only baseline (table 2 row 3, 3 x BATCH paired); step14_unguided8: full
# ITIT with 8 unguided synthesis steps; step14 (not in the default, its compile alone took
# over 165 s on an H100): the paper's 24 guided steps. Each row in its own process, so a timeout
# in one keeps the others' figures. From the parts' times measured on an H100 and an H200
# (BENCHMARKS.md: first calls of 80-145 s per train step), the default parts need ~9 minutes.
PARTS=${PARTS:-step3 step14_unguided8 t2i caption input}
for name in $PARTS; do
  case $name in
    step3) part "${STEP_TIMEOUT:-240}" step3 "$IMPL_TRAIN" "${STEP_ARGS[@]}" --rows=3 \
             --trace_dir="$OUT/trace_step3" ;;
    step3_nodrop) part "${STEP_TIMEOUT:-240}" step3_nodrop "$IMPL_TRAIN" "${STEP_ARGS[@]}" \
             --rows=3 --tag=_nodrop --config.model.dropout=0 ;;
    step3_rbg) part "${STEP_TIMEOUT:-240}" step3_rbg "$IMPL_TRAIN" "${STEP_ARGS[@]}" \
             --rows=3 --tag=_rbg --config.prng_impl=rbg ;;
    step14) part "${STEP_TIMEOUT:-240}" step14 "$IMPL_TRAIN" "${STEP_ARGS[@]}" --rows=14 ;;
    step14_unguided8) part "${STEP_TIMEOUT:-240}" step14_unguided8 "$IMPL_TRAIN" \
             "${STEP_ARGS[@]}" --rows=14 --tag=_unguided8 --config.cycle.synthesis_steps=8 \
             --config.cycle.guidance_scale=0 --trace_dir="$OUT/trace_step14_unguided8" ;;
    t2i) part "${T2I_TIMEOUT:-110}" t2i "$IMPL_TRAIN" --parts=t2i ;;
    caption) part "${CAPTION_TIMEOUT:-110}" caption "$IMPL_CAPTION" --parts=caption ;;
    input) part 35 input "$IMPL_TRAIN" --parts=input --input_records=50000 --batch=256 ;;
    *) echo "[gpu_check] unknown part $name (step3 step3_nodrop step3_rbg step14 step14_unguided8 t2i caption input)" ;;
  esac
done

# A raw trace of two ITIT-B steps is tens of MB; its summary (device busy time, time per op
# category, top kernels: tools.trace_summary) is what comes back.
for trace in "$OUT"/trace_*; do
  [ -d "$trace" ] || continue
  python3 -m tools.trace_summary "$trace" --out "$OUT/summary_$(basename "$trace").json" \
    > "$OUT/summary_$(basename "$trace").txt" 2>&1 || echo "[gpu_check] summary of $trace failed"
  head -40 "$OUT/summary_$(basename "$trace").txt"
  size_mb=$(du -sm "$trace" | cut -f1)
  if [ "$size_mb" -ge 16 ]; then
    echo "[gpu_check] $trace is ${size_mb} MB (>= 16): removed, its summary kept"; rm -rf "$trace"
  fi
done
elapsed "done; results in $RESULTS"

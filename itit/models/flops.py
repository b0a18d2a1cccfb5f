"""Analytic FLOP counts of ITIT's parts and samplers, and MFU (each loss's count over these
parts: `itit.losses.registry`).

Convention (as maxtext's `calculate_tflops_training_per_device`): a matmul [m, k] x [k, n] costs
2 m k n FLOPs; only matmuls are counted (projections, MLPs, attention scores and values,
embedding matmuls of token distributions, output logits). Norms, softmax, GELU, gathers and
the sampling arithmetic are left out: they are a few percent of a transformer's FLOPs at
useful widths (tests/test_flops.py compares with XLA's own count). Attention is counted dense,
over every (query, key) pair the kernel computes, masks notwithstanding.

Training cost of a part = 3x its forward (forward + backward for activations and weights), or
1x for forward-only work: the pseudo-pair synthesis, a cycle's first encoder pass under
stop_gradient, and the frozen T5 (2x where gradient must flow through it to its input, as in
the full I2T2I cycle). Synthesis loops count every step they may run (greedy captioning its
full `max_len`, since a sequence stops only at EOS).
"""
from __future__ import annotations

from typing import Optional

# Dense bf16 peak FLOP/s per chip, by substrings of `jax.devices()[0].device_kind` (lowercase).
PEAK_BF16_FLOPS = (
    ('h100', 989e12),
    ('h200', 989e12),
    ('gh200', 989e12),
    ('a100', 312e12),
    ('v5p', 459e12),
    ('v4', 275e12),
    ('v3', 123e12),
)


def peak_flops(device_kind: str) -> Optional[float]:
  """bf16 dense peak FLOP/s of one device, or None for an unknown kind (e.g. CPU)."""
  kind = device_kind.lower()
  for name, peak in PEAK_BF16_FLOPS:
    if name in kind:
      return peak
  return None


def mfu(flops_per_step: float, step_seconds: float, num_devices: int,
        device_kind: str) -> dict:
  """{'tflops_per_device': ..., 'mfu': ... (absent for unknown devices)}."""
  per_device = flops_per_step / max(step_seconds, 1e-12) / num_devices
  out = {'tflops_per_device': per_device / 1e12}
  peak = peak_flops(device_kind)
  if peak:
    out['mfu'] = per_device / peak
  return out


# -- building blocks ---------------------------------------------------------------------------

def dense(rows: float, d_in: int, d_out: int) -> float:
  return 2.0 * rows * d_in * d_out


def block(batch: int, q_len: int, k_len: int, width: int, num_heads: int, head_dim: int,
          mlp_dim: int, gated: bool = False) -> float:
  """One pre-norm transformer block, forward: q/k/v/out projections, attention, MLP.

  `q_len` query rows attend over `k_len` keys (k_len > q_len for a KV-cached step).
  """
  rows = batch * q_len
  inner = num_heads * head_dim
  projections = dense(rows, width, inner) * 4
  attention = 2 * (2.0 * batch * num_heads * q_len * k_len * head_dim)
  mlp = dense(rows, width, mlp_dim) * (3 if gated else 2)
  return projections + attention + mlp


def stack(batch, q_len, k_len, width, depth, num_heads, mlp_dim, head_dim=None, gated=False):
  return depth * block(batch, q_len, k_len, width, num_heads, head_dim or width // num_heads,
                       mlp_dim, gated)


# -- the model's parts (forward) ---------------------------------------------------------------

def text_encoder_width(mc) -> int:
  return mc.text_encoder[mc.text_encoder.kind].width


def text_encoder(mc, batch: int, length: int, distributions: bool = False) -> float:
  """The learned or T5 text encoder over [batch, length] (ids, or distributions: + a matmul)."""
  te = mc.text_encoder[mc.text_encoder.kind]
  if mc.text_encoder.kind == 't5':
    gated = te.feed_forward_proj.startswith('gated')
    flops = stack(batch, length, length, te.width, te.depth, te.num_heads, te.mlp_dim,
                  te.head_dim, gated)
  else:
    flops = stack(batch, length, length, te.width, te.depth, te.num_heads, te.mlp_dim,
                  gated=True)
  if distributions:
    flops += dense(batch * length, mc.text_vocab_size, te.width)
  return flops


def encoder(mc, batch: int, image_rows: int, text_rows: int,
            image_distributions: bool = False) -> float:
  """Joint encoder over [image_rows kept tokens ; text_rows projected text features]."""
  flops = dense(batch * text_rows, text_encoder_width(mc), mc.width)
  if image_distributions:
    flops += dense(batch * mc.image_grid ** 2, mc.image_vocab_size, mc.width)
  rows = image_rows + text_rows
  return flops + stack(batch, rows, rows, mc.width, mc.depth, mc.num_heads, mc.mlp_dim)


def text_decoder(mc, batch: int, prefix_rows: int, text_len: int) -> float:
  """GIT decoder, full (teacher-forced) pass over [prefix ; text]: projection, stack, head."""
  dt = mc.text_decoder_width
  rows = prefix_rows + text_len
  return (dense(batch * prefix_rows, mc.width, dt)
          + stack(batch, rows, rows, dt, mc.text_decoder_depth, mc.text_decoder_num_heads,
                  mc.text_decoder_mlp_dim)
          + dense(batch * text_len, dt, dt) + dense(batch * text_len, dt, mc.text_vocab_size))


def text_decoder_prime(mc, batch: int, prefix_rows: int, max_len: int) -> float:
  """Writing the prefix into a KV cache of prefix_rows + max_len + 1 slots (every query attends
  over the whole fixed-size cache, as `generate.generate_captions` runs it)."""
  dt = mc.text_decoder_width
  cache = prefix_rows + max_len + 1
  heads = mc.text_decoder_num_heads
  # Only the cache is kept: the last block contributes its key and value projections alone.
  return (dense(batch * prefix_rows, mc.width, dt)
          + stack(batch, prefix_rows, cache, dt, mc.text_decoder_depth - 1, heads,
                  mc.text_decoder_mlp_dim)
          + 2 * dense(batch * prefix_rows, dt, heads * (dt // heads)))


def text_decoder_step(mc, rows: int, prefix_rows: int, max_len: int) -> float:
  """One cached decoding step: one token per row over the cache, head and logits."""
  dt = mc.text_decoder_width
  cache = prefix_rows + max_len + 1
  return (stack(rows, 1, cache, dt, mc.text_decoder_depth, mc.text_decoder_num_heads,
                mc.text_decoder_mlp_dim)
          + dense(rows, dt, dt) + dense(rows, dt, mc.text_vocab_size))


def text_decoder_uncached(mc, batch: int, prefix_rows: int, max_len: int) -> float:
  """Greedy decoding WITHOUT a cache: every step reruns the full pass over a max_len buffer."""
  return max_len * text_decoder(mc, batch, prefix_rows, max_len)


def image_decoder(mc, batch: int) -> float:
  """MAGE decoder over the full grid: stack, head, tied logits over the codebook."""
  n = mc.image_grid ** 2
  return (stack(batch, n, n, mc.width, mc.image_decoder_depth, mc.num_heads, mc.mlp_dim)
          + dense(batch * n, mc.width, mc.width) + dense(batch * n, mc.width,
                                                         mc.image_vocab_size))


# -- samplers (forward only) -------------------------------------------------------------------

def image_sampler(mc, batch: int, text_len: int, num_steps: int, guided: bool) -> float:
  """`generate.generate_images`: text encoder once, then per step encoder + image decoder on
  all N tokens (no dropping), 2B rows with guidance (the empty text padded to text_len)."""
  rows = 2 * batch if guided else batch
  n = mc.image_grid ** 2
  flops = text_encoder(mc, batch, text_len)
  if guided:
    flops += text_encoder(mc, 1, text_len)
  per_step = encoder(mc, rows, n, text_len) + image_decoder(mc, rows)
  return flops + num_steps * per_step


def captioner(mc, batch: int, max_len: int, beam_size: int = 1, cached: bool = True) -> float:
  """`generate.generate_captions`: the full image with the empty text, then `max_len` steps
  (greedy: batch rows; beam search: the cache is primed at batch and each step runs
  batch * beam_size rows). cached=False: the reference that reruns the full pass each step."""
  prefix = mc.image_grid ** 2 + 1
  flops = encoder(mc, batch, prefix - 1, 1) + text_encoder(mc, 1, 1)
  if not cached:
    return flops + text_decoder_uncached(mc, batch * beam_size, prefix, max_len)
  return (flops + text_decoder_prime(mc, batch, prefix, max_len)
          + max_len * text_decoder_step(mc, batch * beam_size, prefix, max_len))

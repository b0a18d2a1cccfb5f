"""Image-token masks: the mask ratio distribution, random masks, and which masked tokens to drop.

Conventions: `mask` [batch, num_tokens] bool, True = masked (hidden from the model, to predict).
`dropped` [batch, num_tokens] bool, True = a masked token removed from the encoder input (MAE
style); the remaining masked tokens enter the encoder as the [MASK] embedding.
"""
import jax
import jax.numpy as jnp
import numpy as np


# pylint: disable-next=redefined-builtin
def sample_mask_ratio(rng, shape, mode=0.75, std=0.25, min=0.5, max=1.0):
  """Mask ratios from a Gaussian(mode, std) truncated to [min, max] (the paper's table 3).

  The mode may lie outside [min, max] (e.g. I2T with max 0.5 < mode 0.75: ratios pile up
  towards max); the bounds must satisfy 0 <= min <= max <= 1.
  """
  if not 0.0 <= min <= max <= 1.0 or not 0.0 <= mode <= 1.0 or std <= 0:
    raise ValueError(f'mask ratio needs 0 <= min <= max <= 1, 0 <= mode <= 1 and std > 0, got '
                     f'min={min}, mode={mode}, max={max}, std={std}')
  lower = (min - mode) / std
  upper = (max - mode) / std
  ratio = mode + std * jax.random.truncated_normal(rng, lower, upper, shape, jnp.float32)
  # Float rounding in the rescaling can step a hair outside the bounds.
  return jnp.clip(ratio, min, max)


# Mask-ratio distributions of a T2I reconstruction (config.loss.t2i_mask_schedule).
T2I_MASK_SCHEDULES = ('truncated_gaussian', 'cosine')


def cosine_mask_ratio(rng, shape):
  """Mask ratios cos(pi / 2 * u), u ~ U[0, 1): MaskGIT's training distribution, the fraction
  still masked at a uniformly drawn step of cosine-schedule decoding (1 at the first step,
  near 0 at the last)."""
  return jnp.cos(0.5 * jnp.pi * jax.random.uniform(rng, shape, jnp.float32))


def num_masked_tokens(ratio, num_tokens, min_masked=0):
  """round(ratio * num_tokens), at least max(min_masked, 1), at most num_tokens. int32."""
  count = jnp.round(jnp.asarray(ratio, jnp.float32) * num_tokens).astype(jnp.int32)
  return jnp.clip(count, np.maximum(min_masked, 1), num_tokens)


def random_mask(rng, batch, num_tokens, ratio, min_masked=0):
  """A uniformly random mask per row with exactly `num_masked_tokens(ratio)` True entries.

  Args:
    rng: PRNG key.
    batch, num_tokens: static ints.
    ratio: scalar or [batch] float mask ratio.
    min_masked: static lower bound on the count (the encoder's `num_dropped`).
  Returns:
    [batch, num_tokens] bool.
  """
  counts = jnp.broadcast_to(num_masked_tokens(ratio, num_tokens, min_masked), (batch,))
  ranks = ranks_of(jax.random.uniform(rng, (batch, num_tokens)))
  return ranks < counts[:, None]


def ranks_of(scores):
  """The rank (0 = smallest) of every entry along the last axis, [..., n] int32."""
  return jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1).astype(jnp.int32)


def fixed_drop_priority(num_tokens):
  """A fixed pseudo-random order of positions [num_tokens] in [0, 1).

  Used when no rng is at hand (evaluation): dropping the first masked positions in raster order
  would always keep [MASK] embeddings at the bottom of the image; a fixed shuffle spreads them.
  """
  return np.random.RandomState(0).permutation(num_tokens).astype(np.float32) / num_tokens


def choose_dropped(mask, num_dropped, priority):
  """Marks the `num_dropped` masked positions of lowest priority as dropped.

  Args:
    mask: [batch, n] bool; each row must have at least `num_dropped` masked positions (static
      shapes: otherwise unmasked tokens are dropped; use num_dropped=0 at inference, where masks
      can be sparse).
    num_dropped: static int.
    priority: [batch | 1, n] float in [0, 1).
  Returns:
    [batch, n] bool, exactly `num_dropped` True per row.
  """
  # Unmasked positions rank after every masked one.
  score = jnp.where(mask, priority, priority + 2.0)
  return ranks_of(score) < num_dropped


def kept_positions(dropped, num_kept):
  """Grid indices of the tokens that stay, in raster order: [batch, num_kept] int32."""
  return jnp.argsort(dropped, axis=-1, stable=True)[:, :num_kept].astype(jnp.int32)

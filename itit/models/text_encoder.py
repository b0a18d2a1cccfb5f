"""Text encoders: text -> features [batch, length, width] for the joint encoder.

T5's relative-position buckets (`relative_position_bucket_table`, `RelativePositionBias`) live
here and serve both this encoder and the frozen T5 of `t5.py`.

Kind 'learned': a small T5 v1.1-architecture encoder trained jointly with ITIT (pre-norm RMSNorm,
no biases, one relative position bias computed for layer 0 and shared by every layer, gated-GELU
MLP, final RMSNorm). Its input is token ids [batch, length] int OR token distributions
[batch, length, vocab] float: distributions are embedded by a matmul with the embedding table, so
the I2T2I cycle can pass gradient through (straight-through) one-hot captions.
"""
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from itit.models import layers
from itit.models.token_ids import PAD_ID


def _log_bucket_starts(max_exact, num_log, max_distance):
  """The least distance of each log-spaced bucket but the first -> [num_log - 1] int64.

  The reference puts distance d >= max_exact in log bucket
  floor(num_log * log(d / max_exact) / log(max_distance / max_exact)), so d reaches bucket j
  exactly when (d / max_exact)^num_log >= (max_distance / max_exact)^j, i.e. when
  d^num_log * max_exact^j >= max_distance^j * max_exact^num_log: integers, compared exactly with
  Python's unbounded ints. Bucket j <= num_log - 1 starts at or below max_distance.
  """
  starts = []
  for j in range(1, num_log):
    target = max_distance ** j * max_exact ** num_log
    low, high = max_exact, max_distance
    while low < high:
      middle = (low + high) // 2
      if middle ** num_log * max_exact ** j >= target:
        high = middle
      else:
        low = middle + 1
    starts.append(low)
  return np.array(starts, np.int64)


def relative_position_bucket_table(query_length, key_length, num_buckets=32, max_distance=128):
  """T5's bidirectional bucket of every (key - query) offset -> [query_length, key_length] int32.

  The reference (Hugging Face `T5Attention._relative_position_bucket`, after Mesh TensorFlow):
  half the buckets per direction (offsets > 0 in the upper half); within a direction, distances
  below max_exact = num_buckets // 4 get their own bucket, larger ones log-spaced buckets up to
  `max_distance`, beyond which they share the last one.

  The reference evaluates the log-spaced index in float32. Where it is exactly an integer
  (e.g. distance 40 with 128 buckets and max distance 50: 32 * log(1.25) / log(1.5625) = 16), the
  float32 rounding decides the bucket, and an XLA computation on device (no constant folding in
  an eager call) can land one bucket low. Lengths are static, so the table is computed here on the
  host with exact integer arithmetic instead, and enters the graph as a constant.

  Against Hugging Face's float32 torch buckets (transformers 5.24, torch CPU), swept over 14
  num_buckets from 4 to 256, every max_distance in 3..1000 and offsets up to +-1500, exact math
  agrees everywhere (the released T5 setting (32, 128) included) except in 4 tables no released
  checkpoint uses, one distance each: (96, 81) at 54 and (256, 441) at 168, exact boundaries
  where float32 rounding leaves the index an ulp below the integer, and (48, 889) at 621 and
  (64, 939) at 728, a hair below a boundary, where float32 rounds up to it. Emulating the float32
  steps in numpy does not follow torch either: with numpy's log or with a correctly rounded one it
  misses 3 tables too, (96, 81) among them both times, because torch's own log implementation
  decides the last bit (and GPU torch has another). So we keep the exact buckets, which depend on
  no library's log.
  """
  half = num_buckets // 2
  max_exact = half // 2
  if max_exact < 1 or max_distance <= max_exact:
    raise ValueError(
        f'T5 relative positions: num_buckets={num_buckets}, max_distance={max_distance}; need '
        f'num_buckets >= 4 and max_distance > num_buckets // 4 for log-spaced buckets')
  offsets = np.arange(key_length)[None, :] - np.arange(query_length)[:, None]
  distance = np.abs(offsets)
  starts = _log_bucket_starts(max_exact, half - max_exact, max_distance)
  # The count of bucket starts at or below d caps itself at the last bucket, half - 1.
  within = np.where(distance < max_exact, distance,
                    max_exact + np.searchsorted(starts, distance, side='right'))
  return (np.where(offsets > 0, half, 0) + within).astype(np.int32)


class RelativePositionBias(nn.Module):
  """Learned per-head bias of each relative-position bucket -> [1, heads, length, length]."""
  num_heads: int
  num_buckets: int = 32
  max_distance: int = 128

  @nn.compact
  def __call__(self, length):
    table = self.param(
        'rel_embedding',
        layers.param_init(nn.initializers.normal(1.0), ('relpos_buckets', 'heads')),
        (self.num_buckets, self.num_heads))
    buckets = relative_position_bucket_table(length, length, self.num_buckets, self.max_distance)
    return jnp.transpose(table[buckets], (2, 0, 1))[None]


class LearnedTextEncoder(nn.Module):
  """T5 v1.1-style encoder. Call with ids [B, L] int or distributions [B, L, V] float."""
  vocab_size: int
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  attention_impl: Optional[str] = None
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, text, text_mask=None, *, deterministic):
    """Returns (features [B, L, width] float, text_mask [B, L] bool).

    Args:
      text: token ids [B, L] int, or token distributions [B, L, vocab] float (e.g. one-hot).
      text_mask: [B, L] bool, True = real token. Default: ids != pad, or for distributions
        argmax != pad (exact for straight-through one-hots, whose forward value is one-hot).
    """
    embedding = self.param(
        'embedding', layers.param_init(nn.initializers.normal(1.0), ('vocab', 'embed')),
        (self.vocab_size, self.width))
    x, text_mask = embed_text(embedding, text, text_mask, self.vocab_size, self.dtype)
    x = layers.Dropout(self.dropout)(x, deterministic=deterministic)
    bias = RelativePositionBias(self.num_heads, name='relative_position_bias')(x.shape[1])
    mask = layers.padding_mask(text_mask)
    for i in range(self.depth):
      x = layers.TransformerBlock(
          self.num_heads, self.mlp_dim, self.dropout, head_dim=self.width // self.num_heads,
          norm='rms', mlp_activation='gated_gelu', use_bias=False, attention_scale=1.0,
          attention_impl=self.attention_impl, dtype=self.dtype, name=f'block_{i}')(
              x, mask, bias, deterministic=deterministic)
    x = layers.norm_layer('rms', self.dtype, 'norm_final')(x)
    x = layers.Dropout(self.dropout)(x, deterministic=deterministic)
    return x, text_mask


def embed_text(embedding, text, text_mask, vocab_size, dtype):
  """Embeds ids (a gather) or distributions (a matmul) with the same table.

  Returns ([B, L, width] in `dtype`, text_mask [B, L] bool). A one-hot distribution gives exactly
  the gathered row: the matmul adds zeros to one product with 1.
  """
  table = embedding.astype(dtype)
  if jnp.issubdtype(text.dtype, jnp.integer):
    if text.ndim != 2:
      raise ValueError(f'text ids must be [batch, length], got shape {text.shape}')
    x = jnp.take(table, text, axis=0)
    default_mask = text != PAD_ID
  else:
    if text.ndim != 3 or text.shape[-1] != vocab_size:
      raise ValueError(f'text distributions must be [batch, length, {vocab_size}] '
                       f'(config.model.text_vocab_size), got shape {text.shape}')
    x = jnp.einsum('blv,vd->bld', text.astype(dtype), table)
    default_mask = jnp.argmax(text, axis=-1) != PAD_ID
  if text_mask is None:
    text_mask = default_mask
  return layers.constrain(x), text_mask.astype(bool)


def make_text_encoder(model_config, dtype, name='text_encoder'):
  """The learned text encoder of `config.model.text_encoder.learned` (kind='learned')."""
  kind = model_config.text_encoder.kind
  cfg = model_config.text_encoder.learned
  if kind == 'learned':
    return LearnedTextEncoder(
        vocab_size=model_config.text_vocab_size, width=cfg.width, depth=cfg.depth,
        num_heads=cfg.num_heads, mlp_dim=cfg.mlp_dim, dropout=model_config.dropout,
        attention_impl=model_config.get('attention_impl'), dtype=dtype, name=name)
  raise ValueError(f"config.model.text_encoder.kind={kind!r} is not available; use 'learned'")

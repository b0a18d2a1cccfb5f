"""Text encoders: text -> features [batch, length, width] for the joint encoder.

Kind 'learned': a small T5 v1.1-architecture encoder trained jointly with ITIT (pre-norm RMSNorm,
no biases, one relative position bias computed for layer 0 and shared by every layer, gated-GELU
MLP, final RMSNorm). Its input is token ids [batch, length] int OR token distributions
[batch, length, vocab] float: distributions are embedded by a matmul with the embedding table, so
the I2T2I cycle can pass gradient through (straight-through) one-hot captions.
"""
import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from itit.models import layers

PAD_ID = 0


def relative_position_buckets(relative_position, num_buckets=32, max_distance=128):
  """T5's bidirectional bucketing of (key - query) offsets.

  Half the buckets per direction; within a direction, offsets below num_buckets/4 get their own
  bucket and larger ones share log-spaced buckets up to `max_distance`.
  """
  num_buckets //= 2
  buckets = (relative_position > 0).astype(jnp.int32) * num_buckets
  distance = jnp.abs(relative_position)
  max_exact = num_buckets // 2
  is_small = distance < max_exact
  log_ratio = (jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact)
               / math.log(max_distance / max_exact))
  large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(jnp.int32)
  large = jnp.minimum(large, num_buckets - 1)
  return buckets + jnp.where(is_small, distance, large)


class RelativePositionBias(nn.Module):
  """Learned per-head bias for each relative-position bucket -> [1, heads, q, k]."""
  num_heads: int
  num_buckets: int = 32
  max_distance: int = 128

  @nn.compact
  def __call__(self, length):
    table = self.param(
        'rel_embedding',
        layers.param_init(nn.initializers.normal(1.0), ('relpos_buckets', 'heads')),
        (self.num_buckets, self.num_heads))
    positions = np.arange(length)
    buckets = relative_position_buckets(positions[None, :] - positions[:, None],
                                        self.num_buckets, self.max_distance)
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
  """The text encoder selected by `config.model.text_encoder.kind`."""
  cfg = model_config.text_encoder
  if cfg.kind == 'learned':
    return LearnedTextEncoder(
        vocab_size=model_config.text_vocab_size, width=cfg.width, depth=cfg.depth,
        num_heads=cfg.num_heads, mlp_dim=cfg.mlp_dim, dropout=model_config.dropout,
        attention_impl=model_config.get('attention_impl'), dtype=dtype, name=name)
  raise ValueError(f"config.model.text_encoder.kind={cfg.kind!r} is not available; use 'learned'")

"""The frozen pretrained T5 encoder (Hugging Face / t5x layout), text -> features [B, L, width].

Both T5 variants: v1.0 (Dense-ReLU-Dense feed-forward `wi`, `wo`) and v1.1 / Flan (gated-GELU:
gelu_tanh(x wi_0) * (x wi_1), then `wo`). As in the reference: pre-norm blocks with RMSNorm (no
mean subtraction, no bias, statistics in float32), no biases anywhere, no 1/sqrt(d) attention
scaling (T5 folds it into the initialisation), one relative position bias (bidirectional
buckets) computed once and shared by every layer, a final RMSNorm, no embedding scaling.

Pieces that are the same math as the learned T5-style encoder are shared with it:
`text_encoder.embed_text` (ids by gather, distributions by matmul), `RelativePositionBias` (its
buckets computed exactly on the host, `relative_position_bucket_table`) and `layers.Attention`.
The encoder is frozen, so it has no dropout.

Precision: with `dtype=bfloat16` the matmuls run in bf16 (the attention logits and softmax in
float32, inside `jax.nn.dot_product_attention`), while the residual stream and the RMSNorm
statistics stay float32; features come out float32. Parameters carry logical axis names
('vocab', 'embed', 'heads', 'kv', 'mlp', 'relpos_buckets'), so the ~4.7B-parameter T5-XXL
encoder shards with the same rules as the rest of the model.

Parameter tree (what `t5_loader` fills):
  embedding [vocab, width]
  relative_position_bias/rel_embedding [buckets, heads]
  block_{i}/norm_attention/scale [width]
  block_{i}/attention/{query,key,value}/kernel [width, heads, head_dim]
  block_{i}/attention/out/kernel [heads, head_dim, width]
  block_{i}/norm_mlp/scale [width]
  block_{i}/mlp/{wi | wi_0, wi_1}/kernel [width, mlp_dim], block_{i}/mlp/wo/kernel [mlp_dim, width]
  norm_final/scale [width]
"""
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from itit.models import layers
from itit.models import text_encoder as text_encoder_lib

# Hugging Face ACT2FN names that T5 checkpoints use -> jax functions.
ACTIVATIONS = {
    'relu': jax.nn.relu,
    'gelu': lambda x: jax.nn.gelu(x, approximate=False),
    'gelu_new': lambda x: jax.nn.gelu(x, approximate=True),
    'gelu_fast': lambda x: jax.nn.gelu(x, approximate=True),
    'gelu_pytorch_tanh': lambda x: jax.nn.gelu(x, approximate=True),
    'silu': jax.nn.silu,
    'swish': jax.nn.silu,
}


def parse_feed_forward_proj(feed_forward_proj):
  """'relu' / 'gated-gelu' / 'gated-silu' ... -> (gated: bool, activation name).

  Follows transformers' T5Config: the text after the last '-' names the activation, a 'gated'
  prefix selects the wi_0 / wi_1 layout, and 'gated-gelu' means the tanh approximation
  ('gelu_new'), which is what T5 v1.1 and Flan-T5 were trained with.
  """
  parts = feed_forward_proj.split('-')
  gated = parts[0] == 'gated'
  if len(parts) > 2 or (len(parts) == 2 and not gated):
    raise ValueError(f"text_encoder.feed_forward_proj={feed_forward_proj!r}: expected 'ACT' or "
                     "'gated-ACT', e.g. 'relu' (T5 v1.0) or 'gated-gelu' (T5 v1.1 / Flan-T5)")
  activation = 'gelu_new' if feed_forward_proj == 'gated-gelu' else parts[-1]
  if activation not in ACTIVATIONS:
    raise ValueError(f'text_encoder.feed_forward_proj={feed_forward_proj!r}: activation '
                     f'{activation!r} is not one of {sorted(ACTIVATIONS)}')
  return gated, activation


def rms_norm(epsilon, dtype, name):
  """T5's layer norm: x / sqrt(mean(x^2) + eps) * scale, statistics in float32."""
  return nn.RMSNorm(epsilon=epsilon, dtype=dtype, name=name,
                    scale_init=layers.param_init(layers.ones_init, ('embed',)))


class T5FeedForward(nn.Module):
  """DenseReluDense: wo(act(wi x)) or, gated, wo(act(wi_0 x) * wi_1 x); no biases."""
  mlp_dim: int
  feed_forward_proj: str
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    """x: [batch, length, width] -> [batch, length, width] in `dtype`."""
    gated, activation = parse_feed_forward_proj(self.feed_forward_proj)
    act = ACTIVATIONS[activation]
    dense = lambda features, axes, name: nn.Dense(
        features, use_bias=False, dtype=self.dtype, name=name,
        kernel_init=layers.param_init(layers.default_kernel_init, axes))
    if gated:
      hidden = (act(dense(self.mlp_dim, ('embed', 'mlp'), 'wi_0')(x))
                * dense(self.mlp_dim, ('embed', 'mlp'), 'wi_1')(x))
    else:
      hidden = act(dense(self.mlp_dim, ('embed', 'mlp'), 'wi')(x))
    return dense(x.shape[-1], ('mlp', 'embed'), 'wo')(hidden)


class T5Block(nn.Module):
  """x + Attention(RMSNorm(x), bias), then x + FeedForward(RMSNorm(x)); residual in float32."""
  num_heads: int
  head_dim: int
  mlp_dim: int
  feed_forward_proj: str
  norm_epsilon: float
  attention_impl: Optional[str] = None
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask, bias):
    """x: [batch, length, width] float32; mask [batch, 1, 1, length]; bias [1, heads, L, L]."""
    x = layers.constrain(x)
    y = rms_norm(self.norm_epsilon, self.dtype, 'norm_attention')(x)
    y = layers.Attention(self.num_heads, self.head_dim, use_bias=False, scale=1.0,
                         implementation=self.attention_impl, dtype=self.dtype,
                         name='attention')(y, mask, bias)
    x = x + y.astype(jnp.float32)
    y = rms_norm(self.norm_epsilon, self.dtype, 'norm_mlp')(x)
    y = T5FeedForward(self.mlp_dim, self.feed_forward_proj, self.dtype, name='mlp')(y)
    return layers.constrain(x + y.astype(jnp.float32))


class T5Encoder(nn.Module):
  """The T5 encoder stack. Call with ids [B, L] int or distributions [B, L, vocab] float."""
  vocab_size: int
  width: int
  depth: int
  num_heads: int
  head_dim: int
  mlp_dim: int
  feed_forward_proj: str = 'gated-gelu'
  relative_buckets: int = 32
  relative_max_distance: int = 128
  norm_epsilon: float = 1e-6
  attention_impl: Optional[str] = None
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, text, text_mask=None, *, deterministic=True):
    """Returns (features [B, L, width] float32, text_mask [B, L] bool).

    Args:
      text: token ids [B, L] int, or token distributions [B, L, vocab] float (e.g. one-hot);
        distributions are embedded by a matmul with the table, so gradient reaches them.
      text_mask: [B, L] bool, True = real token. Default: ids != pad (for distributions:
        argmax != pad). Padded keys are masked out of attention, as HF's attention_mask does.
      deterministic: accepted for the text-encoder interface; a frozen encoder has no dropout.
    """
    del deterministic
    embedding = self.param(
        'embedding', layers.param_init(nn.initializers.normal(1.0), ('vocab', 'embed')),
        (self.vocab_size, self.width))
    x, text_mask = text_encoder_lib.embed_text(embedding, text, text_mask, self.vocab_size,
                                               self.dtype)
    x = x.astype(jnp.float32)
    bias = text_encoder_lib.RelativePositionBias(
        self.num_heads, self.relative_buckets, self.relative_max_distance,
        name='relative_position_bias')(x.shape[1])
    mask = layers.padding_mask(text_mask)
    for i in range(self.depth):
      x = T5Block(self.num_heads, self.head_dim, self.mlp_dim, self.feed_forward_proj,
                  self.norm_epsilon, self.attention_impl, self.dtype, name=f'block_{i}')(
                      x, mask, bias)
    x = rms_norm(self.norm_epsilon, jnp.float32, 'norm_final')(x)
    return x, text_mask


def make_t5_encoder(model_config, dtype, name='text_encoder'):
  """The T5 encoder described by `config.model.text_encoder.t5` (kind='t5').

  The text decoder's distributions feed this encoder in the I2T2I cycle, so the model's text
  vocabulary must be the T5 embedding's row count.
  """
  cfg = model_config.text_encoder.t5
  if model_config.text_vocab_size != cfg.vocab_size:
    raise ValueError(
        f'config.model.text_vocab_size={model_config.text_vocab_size} but the T5 embedding has '
        f'text_encoder.t5.vocab_size={cfg.vocab_size} rows: set config.model.text_vocab_size='
        f'{cfg.vocab_size} (the decoder emits distributions over the T5 vocabulary)')
  parse_feed_forward_proj(cfg.feed_forward_proj)
  return T5Encoder(
      vocab_size=cfg.vocab_size, width=cfg.width, depth=cfg.depth, num_heads=cfg.num_heads,
      head_dim=cfg.head_dim, mlp_dim=cfg.mlp_dim, feed_forward_proj=cfg.feed_forward_proj,
      relative_buckets=cfg.relative_buckets, relative_max_distance=cfg.relative_max_distance,
      norm_epsilon=cfg.norm_epsilon, attention_impl=model_config.get('attention_impl'),
      dtype=dtype, name=name)

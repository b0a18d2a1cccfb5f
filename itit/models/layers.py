"""Transformer building blocks shared by every stack: attention, MLP, the pre-norm block, masks.

One attention implementation (`jax.nn.dot_product_attention`) and one pre-norm block serve the
joint encoder, the GIT text decoder, the MAGE image decoder and the T5-architecture text encoder
(the latter with RMSNorm, no biases, gated-GELU and an additive relative position bias).

Logical axis names used on parameters (map them to mesh axes with the config's rules):
  'embed' model width, 'embed_in' the input side of a width-to-width projection, 'mlp' MLP hidden,
  'heads' attention heads, 'kv' per-head dimension, 'vocab' text vocabulary, 'image_vocab' image
  codebook, 'position' positional-embedding tables, 'relpos_buckets' T5 relative-position buckets.
Activations: ('batch', 'length', 'embed').

Masks are boolean, True = may attend, shaped [batch, 1 | heads, q_length, k_length].
"""
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
ACTIVATION_AXES = ('batch', 'length', 'embed')

default_kernel_init = nn.initializers.xavier_uniform()
zeros_init = nn.initializers.zeros_init()
ones_init = nn.initializers.ones_init()


def param_init(init, axes):
  """An initializer carrying logical axis names (boxed as `nn.Partitioned`)."""
  return nn.with_logical_partitioning(init, axes)


def sincos_2d_init(grid: int, scale: float = 1.0):
  """Initializer of a [grid * grid, width] position table: MAE's fixed 2D sin-cos embedding.

  The first half of the width encodes the row, the second the column, each as sin and cos
  pairs at geometric frequencies 1 / 10000^(k / (width / 4)). `scale` multiplies the table
  (1.0: entries in [-1, 1], per-entry RMS ~0.71). The table stays a trainable parameter.
  """

  def init(key, shape, dtype=jnp.float32):
    del key
    length, width = shape
    if length != grid * grid or width % 4:
      raise ValueError(f'sincos_2d_init: table {shape} is not [{grid}*{grid}, 4k]')
    frequencies = 1.0 / 10000 ** (jnp.arange(width // 4) / (width // 4))
    rows, cols = jnp.meshgrid(jnp.arange(grid), jnp.arange(grid), indexing='ij')

    def encode(coordinate):
      angles = coordinate.reshape(-1, 1) * frequencies[None]
      return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=1)

    table = jnp.concatenate([encode(rows), encode(cols)], axis=1)
    return (scale * table).astype(dtype)

  return init


def constrain(x):
  """Logical sharding constraint on a main activation [batch, length, embed]."""
  return nn.with_logical_constraint(x, ACTIVATION_AXES)


# ---------------------------------------------------------------------------------------------
# Masks.


def padding_mask(key_valid):
  """[batch, k] bool (True = real token) -> [batch, 1, 1, k]: every query may see valid keys."""
  return key_valid[:, None, None, :]


def causal_mask(length):
  """[1, 1, length, length]: position q sees k <= q."""
  positions = jnp.arange(length)
  return (positions[None, :] <= positions[:, None])[None, None]


def git_mask(q_positions, k_positions, prefix_length, key_valid=None):
  """GIT layout over one sequence [prefix ; text].

  Prefix rows (encoder features) see the prefix only; text rows see the whole prefix and earlier
  text (causal). Positions are absolute indices into the joint sequence, so the same rule builds
  the full-pass mask and the mask of an incremental (KV-cached) decoding step.

  Args:
    q_positions: [q] int absolute positions of the queries.
    k_positions: [k] int absolute positions of the keys.
    prefix_length: static int, number of prefix (feature) rows.
    key_valid: optional [batch, k] bool (False for padded features / empty cache slots).
  Returns:
    [batch | 1, 1, q, k] bool.
  """
  q = q_positions[:, None]
  k = k_positions[None, :]
  key_in_prefix = k < prefix_length
  query_in_prefix = q < prefix_length
  visible = jnp.where(query_in_prefix, key_in_prefix, key_in_prefix | (k <= q))
  mask = visible[None, None]
  if key_valid is not None:
    mask = mask & padding_mask(key_valid)
  return mask


# ---------------------------------------------------------------------------------------------
# Layers.


class HeadsDense(nn.Module):
  """A dense layer between [..., width] and [..., heads, head_dim], in either direction.

  Unlike nn.DenseGeneral, the kernel is created at its full rank, so its logical axis names
  apply as written (DenseGeneral initialises a flattened kernel, which a logical constraint
  under a mesh rejects). Initialisation is Xavier-uniform over the contracted vs produced dims.
  """
  features: tuple[int, ...]
  kernel_axes: tuple[str, ...]
  bias_axes: tuple[str, ...]
  contract: int  # trailing input dimensions contracted
  use_bias: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    in_shape = x.shape[-self.contract:]
    rank = self.contract + len(self.features)
    init = nn.initializers.xavier_uniform(in_axis=tuple(range(self.contract)),
                                          out_axis=tuple(range(self.contract, rank)))
    kernel = self.param('kernel', param_init(init, self.kernel_axes), in_shape + self.features)
    letters = 'abcdefgh'
    batch = letters[:x.ndim - self.contract]
    contracted = letters[x.ndim - self.contract:x.ndim]
    produced = 'wxyz'[:len(self.features)]
    y = jnp.einsum(f'{batch}{contracted},{contracted}{produced}->{batch}{produced}',
                   x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      bias = self.param('bias', param_init(zeros_init, self.bias_axes), self.features)
      y = y + bias.astype(self.dtype)
    return y


def even_length_attention(query, key, value, mask, *, scale=None, implementation='cudnn'):
  """jax.nn.dot_product_attention with both sequence lengths padded to even ones.

  cuDNN turns a mask into a bias that must span both lengths, and its training kernels with a
  bias reject odd lengths (the encoder sees 128 kept image tokens + 1 text slot = 129). Padded
  keys are masked out; padded queries copy the last real query's mask row (an all-masked row
  would give NaN in the backward pass) and are sliced off.
  query: [batch, q, heads, head_dim]; key, value: [batch, k, heads, head_dim];
  mask: bool [batch|1, 1|heads, q|1, k] or None. Returns [batch, q, heads, head_dim].
  """
  batch, q_len, _, _ = query.shape
  k_len = key.shape[1]
  q_pad, k_pad = q_len % 2, k_len % 2
  if mask is not None:
    mask = jnp.broadcast_to(mask, (*mask.shape[:2], q_len, k_len))
  if q_pad or k_pad:
    if mask is None:  # only the padded keys need masking; unpadded calls stay mask-free
      mask = jnp.ones((batch, 1, q_len, k_len), bool)
    query = jnp.pad(query, ((0, 0), (0, q_pad), (0, 0), (0, 0)))
    key = jnp.pad(key, ((0, 0), (0, k_pad), (0, 0), (0, 0)))
    value = jnp.pad(value, ((0, 0), (0, k_pad), (0, 0), (0, 0)))
    mask = jnp.pad(mask, ((0, 0), (0, 0), (0, 0), (0, k_pad)), constant_values=False)
    if q_pad:
      mask = jnp.concatenate([mask, mask[:, :, -1:]], axis=2)
  out = jax.nn.dot_product_attention(query, key, value, mask=mask, scale=scale,
                                     implementation=implementation)
  return out[:, :q_len]


class Attention(nn.Module):
  """Multi-head self-attention with an optional KV cache for incremental decoding.

  In decode mode the module keeps 'cache' variables `cached_key` / `cached_value`
  [batch, cache_length, heads, head_dim] and `cache_index`. The first decode call creates them
  (`cache_length` must be given) and, like every later call, writes its chunk at `cache_index`
  and attends over the whole cache; the caller's mask [batch, 1, chunk, cache_length] hides the
  slots not yet written.
  """
  num_heads: int
  head_dim: Optional[int] = None  # default width // num_heads
  use_bias: bool = True
  scale: Optional[float] = None  # None: 1/sqrt(head_dim); T5 uses 1.0
  implementation: Optional[str] = None  # jax.nn.dot_product_attention: None, 'xla' or 'cudnn'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None, bias=None, *, decode=False, cache_length=None):
    """x: [batch, length, width]; mask: bool [batch, 1|heads, length, k]; bias: additive
    [batch|1, heads, length, k]. Returns [batch, length, width]."""
    width = x.shape[-1]
    head_dim = self.head_dim or width // self.num_heads
    heads = (self.num_heads, head_dim)
    def to_heads(name):
      return HeadsDense(heads, ('embed', 'heads', 'kv'), ('heads', 'kv'), contract=1,
                        use_bias=self.use_bias, dtype=self.dtype, name=name)
    query, key, value = to_heads('query')(x), to_heads('key')(x), to_heads('value')(x)

    if decode:
      key, value = self._update_cache(key, value, cache_length)

    # cuDNN's fused kernel rejects a bias broadcast over the batch (the T5-style relative
    # bias); those calls take XLA's implementation.
    implementation = self.implementation
    if bias is not None and implementation == 'cudnn':
      implementation = 'xla'
    if implementation == 'cudnn':
      out = even_length_attention(query, key, value, mask, scale=self.scale,
                                  implementation=implementation)
    else:
      out = jax.nn.dot_product_attention(
          query, key, value, bias=None if bias is None else bias.astype(query.dtype), mask=mask,
          scale=self.scale, implementation=implementation)
    return HeadsDense((width,), ('heads', 'kv', 'embed'), ('embed',), contract=2,
                      use_bias=self.use_bias, dtype=self.dtype, name='out')(out)

  def _update_cache(self, key, value, cache_length):
    """Writes this chunk's keys/values at the cache index; returns the whole cache."""
    if not self.has_variable('cache', 'cached_key') and cache_length is None:
      raise ValueError('Attention(decode=True): the first decode call needs cache_length.')
    batch, chunk, heads, head_dim = key.shape
    shape = (batch, cache_length or 0, heads, head_dim)
    cached_key = self.variable('cache', 'cached_key', jnp.zeros, shape, key.dtype)
    cached_value = self.variable('cache', 'cached_value', jnp.zeros, shape, value.dtype)
    index = self.variable('cache', 'cache_index', lambda: jnp.array(0, jnp.int32))
    start = (0, index.value, 0, 0)
    cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, start)
    cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, start)
    index.value = index.value + chunk
    return cached_key.value, cached_value.value


# Dropout compares 16-bit random numbers with a threshold, two numbers per 32-bit draw: half the
# PRNG work of flax's nn.Dropout (one float32 uniform per element), which dominated the cost of
# dropout in our steps (docs/BENCHMARKS.md).
DROPOUT_LEVELS = 1 << 16


def dropout_keep_mask(rng, shape, rate):
  """Which elements inverted dropout keeps, and the exact probability of keeping one.

  An element is dropped when its 16-bit random number is below round(rate * 2^16), so the rate
  applied is within 2^-17 of `rate` and the keep probability returned is the one applied. When
  the last axis is even, the numbers are drawn as 32-bit words over half of it, so the draw
  keeps the array's layout (and sharding) on the leading axes.

  Args:
    rng: PRNG key. shape: the activation's shape. rate: drop probability in [0, 1).
  Returns:
    (keep [*shape] bool, keep_probability float).
  """
  if not 0.0 <= rate < 1.0:
    raise ValueError(f'dropout rate must be in [0, 1), got {rate}')
  threshold = round(rate * DROPOUT_LEVELS)
  if shape and shape[-1] % 2 == 0:
    words = jax.random.bits(rng, (*shape[:-1], shape[-1] // 2), jnp.uint32)
    numbers = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(shape)
  else:
    numbers = jax.random.bits(rng, shape, jnp.uint16)
  return numbers >= threshold, 1.0 - threshold / DROPOUT_LEVELS


class Dropout(nn.Module):
  """Inverted dropout (kept elements divided by the keep probability), from `dropout_keep_mask`
  with the 'dropout' rng; the identity when deterministic or at rate 0."""
  rate: float

  @nn.compact
  def __call__(self, x, *, deterministic):
    if deterministic or self.rate == 0.0:
      return x
    keep, keep_probability = dropout_keep_mask(self.make_rng('dropout'), x.shape, self.rate)
    return jnp.where(keep, x / jnp.asarray(keep_probability, x.dtype), jnp.zeros((), x.dtype))


class Mlp(nn.Module):
  """Position-wise MLP: 'gelu' (Dense-GELU-Dense) or 'gated_gelu' (T5 v1.1)."""
  mlp_dim: int
  activation: str = 'gelu'
  use_bias: bool = True
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, deterministic):
    width = x.shape[-1]
    dense = lambda features, axes, name: nn.Dense(
        features, dtype=self.dtype, use_bias=self.use_bias, name=name,
        kernel_init=param_init(default_kernel_init, axes),
        bias_init=param_init(zeros_init, axes[-1:]))
    if self.activation == 'gelu':
      hidden = nn.gelu(dense(self.mlp_dim, ('embed', 'mlp'), 'wi')(x))
    elif self.activation == 'gated_gelu':
      hidden = (nn.gelu(dense(self.mlp_dim, ('embed', 'mlp'), 'wi_0')(x))
                * dense(self.mlp_dim, ('embed', 'mlp'), 'wi_1')(x))
    else:
      raise ValueError(f"Mlp.activation must be 'gelu' or 'gated_gelu', got {self.activation!r}")
    hidden = Dropout(self.dropout)(hidden, deterministic=deterministic)
    return dense(width, ('mlp', 'embed'), 'wo')(hidden)


def norm_layer(kind, dtype, name=None):
  """'layer' (LayerNorm with bias) or 'rms' (T5's RMSNorm), scale/bias on the 'embed' axis."""
  if kind == 'layer':
    return nn.LayerNorm(dtype=dtype, name=name, scale_init=param_init(ones_init, ('embed',)),
                        bias_init=param_init(zeros_init, ('embed',)))
  if kind == 'rms':
    return nn.RMSNorm(dtype=dtype, name=name, scale_init=param_init(ones_init, ('embed',)))
  raise ValueError(f"norm must be 'layer' or 'rms', got {kind!r}")


class TransformerBlock(nn.Module):
  """Pre-norm block: x + Dropout(Attention(Norm(x))), then x + Dropout(Mlp(Norm(x)))."""
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  head_dim: Optional[int] = None
  norm: str = 'layer'
  mlp_activation: str = 'gelu'
  use_bias: bool = True
  attention_scale: Optional[float] = None
  attention_impl: Optional[str] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None, bias=None, *, deterministic, decode=False, cache_length=None):
    """x: [batch, length, width] -> [batch, length, width]."""
    x = constrain(x)
    y = norm_layer(self.norm, self.dtype, 'norm_attention')(x)
    y = Attention(self.num_heads, self.head_dim, self.use_bias, self.attention_scale,
                  self.attention_impl, self.dtype, name='attention')(
                      y, mask, bias, decode=decode, cache_length=cache_length)
    x = x + Dropout(self.dropout)(y, deterministic=deterministic)
    y = norm_layer(self.norm, self.dtype, 'norm_mlp')(x)
    y = Mlp(self.mlp_dim, self.mlp_activation, self.use_bias, self.dropout, self.dtype,
            name='mlp')(y, deterministic=deterministic)
    x = x + Dropout(self.dropout)(y, deterministic=deterministic)
    return constrain(x)


class _BlockWithSettings(TransformerBlock):
  """A TransformerBlock called as fn(x, mask): its call settings are fields, the form that
  nn.remat and nn.scan lift (they would trace keyword arguments). Same parameters."""
  deterministic: bool = True
  decode: bool = False
  cache_length: Optional[int] = None

  def __call__(self, x, mask):
    return super().__call__(x, mask, deterministic=self.deterministic, decode=self.decode,
                            cache_length=self.cache_length)


class _ScannedBlock(_BlockWithSettings):
  """The body of nn.scan: (carry x, broadcast mask) -> (x, no per-layer output)."""

  def __call__(self, x, mask):
    return super().__call__(x, mask), None


REMAT_POLICIES = {
    'full': None,  # save nothing: recompute the whole block in the backward pass
    # Save the weight matmuls' outputs, recompute attention and elementwise ops.
    'dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Stack(nn.Module):
  """`depth` pre-norm blocks and a final norm (LayerNorm), as each ITIT stack uses.

  remat ('none' | 'full' | 'dots', config.model.remat) recomputes activations in the backward
  pass (not while decoding with a cache); the parameter tree is unchanged. scan_layers
  (config.model.scan_layers) runs the blocks as one nn.scan, compiling one block instead of
  `depth`: parameters then live under 'blocks' with a leading 'layers' axis of size depth
  (checkpoints of the two layouts do not load into each other).
  """
  depth: int
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  attention_impl: Optional[str] = None
  dtype: Dtype = jnp.float32
  remat: str = 'none'
  scan_layers: bool = False

  @nn.compact
  def __call__(self, x, mask=None, *, deterministic, decode=False, cache_length=None):
    """x: [batch, length, width], mask [batch, 1, length, k] -> [batch, length, width]."""
    if self.remat != 'none' and self.remat not in REMAT_POLICIES:
      raise ValueError(f"config.model.remat must be 'none', 'full' or 'dots', got {self.remat!r}")
    block_cls = _ScannedBlock if self.scan_layers else _BlockWithSettings
    if self.remat != 'none' and not decode:
      block_cls = nn.remat(block_cls, policy=REMAT_POLICIES[self.remat],
                           prevent_cse=not self.scan_layers)
    settings = dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim, dropout=self.dropout,
                    attention_impl=self.attention_impl, dtype=self.dtype,
                    deterministic=deterministic, decode=decode, cache_length=cache_length)
    if self.scan_layers:
      x, _ = nn.scan(block_cls, variable_axes={'params': 0, 'cache': 0},
                     split_rngs={'params': True, 'dropout': True}, in_axes=nn.broadcast,
                     length=self.depth, metadata_params={nn.PARTITION_NAME: 'layers'})(
                         name='blocks', **settings)(x, mask)
    else:
      for i in range(self.depth):
        x = block_cls(name=f'block_{i}', **settings)(x, mask)
    return norm_layer('layer', self.dtype, 'norm_final')(x)


def dtype_from_name(name):
  """'bfloat16' / 'float32' (config strings) -> jnp dtype."""
  try:
    return jnp.dtype(name)
  except TypeError as e:
    raise ValueError(f"config.model.dtype must be a dtype name such as 'bfloat16' or 'float32', "
                     f'got {name!r}') from e

"""ITIT: a joint image-text encoder with a GIT text decoder and a MAGE image decoder.

Sizes follow the paper (ViT-B/L/H encoders, 6-block text decoder, 8-block image decoder). The
text decoder has its own width (`text_decoder_width`, 768 as in GIT for every size); the image
decoder has the encoder's width (as in MAGE). Both output layers are tied to their input
embeddings through a BERT/MaskGIT-style head (Dense-GELU-LayerNorm, then logits = h @ table^T +
bias): the text head to the text decoder's embedding, the image head to the encoder's image-token
embedding. These choices reproduce the paper's 221M / 487M / 868M totals within 1%
(`count_params`, tests/test_itit.py).

The empty text (I2T, I2I and the unconditional branch of guidance) is the text encoder's output
for the empty string, i.e. the sequence [EOS] (as Muse / Imagen use T5 on ''), one row by
default, zero-padded and masked to any length.
"""
from typing import Any, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from itit.models import layers
from itit.models import masking
from itit.models import t5
from itit.models import text_encoder as text_encoder_lib
from itit.models.token_ids import EOS_ID


@flax.struct.dataclass
class EncoderOutput:
  """What the decoders read from the joint encoder.

  features: [batch, rows, width], rows = image rows then text rows.
  valid: [batch, rows] bool; False for padded text and for dropped tokens kept in the sequence
    (the attention-masking variant).
  image_positions: [batch, image_rows] int32, the grid index of each image row.
  image_rows_hidden: static; whether some image rows may be invalid (the attention-masking
    variants). When False the image decoder reads every image row as it is, with no
    [MASK] substitution whose gradient XLA would spend seconds constant-folding.
  """
  features: jax.Array
  valid: jax.Array
  image_positions: jax.Array
  image_rows_hidden: bool = flax.struct.field(pytree_node=False, default=True)


class DecodeCache(nn.Module):
  """The text decoder's decoding position and key validity ('cache' collection)."""

  @nn.compact
  def __call__(self, prefix_valid, text_length, cache_length):
    """Registers a chunk: the prefix and the text on the first call, the text afterwards.

    Returns (first_call: python bool, start: int32 position of the chunk, key_valid
    [batch, cache_length] bool after writing the chunk's validity).
    """
    first_call = not self.has_variable('cache', 'index')
    batch = prefix_valid.shape[0]
    index = self.variable('cache', 'index', lambda: jnp.array(0, jnp.int32))
    key_valid = self.variable('cache', 'key_valid', jnp.zeros, (batch, cache_length), bool)
    chunk_valid = jnp.ones((batch, text_length), bool)
    if first_call:
      chunk_valid = jnp.concatenate([prefix_valid, chunk_valid], axis=1)
    start = index.value
    key_valid.value = jax.lax.dynamic_update_slice(key_valid.value, chunk_valid, (0, start))
    index.value = start + chunk_valid.shape[1]
    return first_call, start, key_valid.value


class ITIT(nn.Module):
  """The ITIT model; `config` is `config.model`. Use methods via `model.apply(..., method=)`."""
  config: Any

  def setup(self):
    c = self.config
    self.dtype = layers.dtype_from_name(c.dtype)
    self.num_image_tokens = c.image_grid * c.image_grid
    impl = c.get('attention_impl')
    # Activation recomputation and scan-over-layers (config switches; off by default).
    stack_options = dict(remat=c.get('remat', 'none'), scan_layers=c.get('scan_layers', False))
    embed_init = nn.initializers.normal(0.02)

    def param(name, shape, axes, init=embed_init):
      return self.param(name, layers.param_init(init, axes), shape)

    def dense(features, name):
      return nn.Dense(features, dtype=self.dtype, name=name,
                      kernel_init=layers.param_init(layers.default_kernel_init,
                                                    ('embed_in', 'embed')),
                      bias_init=layers.param_init(layers.zeros_init, ('embed',)))

    width, text_width = c.width, c.text_decoder_width
    if c.text_encoder.kind == 't5':
      self.text_encoder = t5.make_t5_encoder(c, self.dtype)
    else:
      self.text_encoder = text_encoder_lib.make_text_encoder(c, self.dtype)
    self.dropout = layers.Dropout(c.dropout)

    self.encoder_image_embedding = param(
        'encoder_image_embedding', (c.image_vocab_size, width), ('image_vocab', 'embed'))
    self.encoder_mask_embedding = param('encoder_mask_embedding', (width,), ('embed',))
    # Image position tables: 'normal' (learned from N(0, 0.02)) or 'sincos2d' (MAE's 2D sin-cos,
    # still trained, scaled by position_init_scale), which gives row and column from step 0.
    position_kind = c.get('image_position_init', 'normal')
    if position_kind == 'sincos2d':
      position_init = layers.sincos_2d_init(c.image_grid, c.get('image_position_init_scale', 1.0))
    elif position_kind == 'normal':
      position_init = embed_init
    else:
      raise ValueError(f"model.image_position_init must be 'normal' or 'sincos2d', got "
                       f'{position_kind!r}')
    self.encoder_position = param(
        'encoder_position', (self.num_image_tokens, width), ('position', 'embed'), position_init)
    self.encoder_text_projection = dense(width, 'encoder_text_projection')
    self.encoder = layers.Stack(c.depth, c.num_heads, c.mlp_dim, c.dropout, impl, self.dtype,
                                name='encoder', **stack_options)

    self.text_decoder_feature_projection = dense(text_width, 'text_decoder_feature_projection')
    self.text_decoder_feature_norm = layers.norm_layer('layer', self.dtype)
    self.text_decoder_embedding = param(
        'text_decoder_embedding', (c.text_vocab_size, text_width), ('vocab', 'embed'))
    self.text_decoder_position = param(
        'text_decoder_position', (c.max_text_len, text_width), ('position', 'embed'))
    self.text_decoder = layers.Stack(
        c.text_decoder_depth, c.text_decoder_num_heads, c.text_decoder_mlp_dim, c.dropout,
        impl, self.dtype, name='text_decoder', **stack_options)
    self.text_decoder_cache = DecodeCache()
    self.text_decoder_head = dense(text_width, 'text_decoder_head')
    self.text_decoder_head_norm = layers.norm_layer('layer', self.dtype)
    self.text_decoder_logit_bias = param(
        'text_decoder_logit_bias', (c.text_vocab_size,), ('vocab',), layers.zeros_init)

    self.image_decoder_mask_embedding = param('image_decoder_mask_embedding', (width,),
                                              ('embed',))
    self.image_decoder_position = param(
        'image_decoder_position', (self.num_image_tokens, width), ('position', 'embed'),
        position_init)
    self.image_decoder = layers.Stack(c.image_decoder_depth, c.num_heads, c.mlp_dim, c.dropout,
                                      impl, self.dtype, name='image_decoder', **stack_options)
    self.image_decoder_head = dense(width, 'image_decoder_head')
    self.image_decoder_head_norm = layers.norm_layer('layer', self.dtype)
    self.image_decoder_logit_bias = param(
        'image_decoder_logit_bias', (c.image_vocab_size,), ('image_vocab',), layers.zeros_init)

  def __call__(self, image_tokens, mask, text_ids, text_in, *, deterministic=True):
    """Runs every submodule once (for `init`). Returns (text_logits, image_logits)."""
    text_features = self.encode_text(text_ids, deterministic=deterministic)
    encoded = self.encode(image_tokens, mask, text_features, text_ids != 0,
                          deterministic=deterministic)
    return (self.decode_text(encoded, text_in, deterministic=deterministic),
            self.decode_image(encoded, deterministic=deterministic))

  # -- text encoder --------------------------------------------------------------------------

  def encode_text(self, text, text_mask=None, *, deterministic):
    """ids [B, L] int or distributions [B, L, V] float -> text features [B, L, D_text].

    The padding mask is ids != 0 (for distributions: argmax != 0) unless `text_mask` is given.
    """
    return self.text_encoder(text, text_mask, deterministic=deterministic)[0]

  def empty_text(self, batch_size, length=1, *, deterministic=True):
    """The empty text: features of [EOS] + padding -> ([B, length, D_text], mask [B, length])."""
    ids = jnp.zeros((1, length), jnp.int32).at[0, 0].set(EOS_ID)
    features = self.encode_text(ids, deterministic=deterministic)
    return (jnp.broadcast_to(features, (batch_size,) + features.shape[1:]),
            jnp.broadcast_to(ids != 0, (batch_size, length)))

  # -- joint encoder -------------------------------------------------------------------------

  def embed_image(self, image_tokens):
    """ids [B, N] int (a gather) or distributions [B, N, K] float (a matmul) -> [B, N, D]."""
    table = self.encoder_image_embedding.astype(self.dtype)
    if jnp.issubdtype(image_tokens.dtype, jnp.integer):
      return jnp.take(table, image_tokens, axis=0)
    return jnp.einsum('bnk,kd->bnd', image_tokens.astype(self.dtype), table)

  def encode(self, image_tokens, mask, text_features=None, text_mask=None, *, deterministic,
             num_dropped: Optional[int] = None, mask_dropped_in_attention: bool = False,
             drop_up_to: int = 0):
    """Joint encoder over [kept image tokens ; projected text features].

    Args:
      image_tokens: [B, N] int, or [B, N, K] float distributions (one-hot for the T2I2T cycle).
      mask: [B, N] bool, True = masked. At least `num_dropped` per row.
      text_features: [B, L, D_text] from `encode_text`; None = the empty text.
      text_mask: [B, L] bool; None = all valid (ignored for the empty text).
      deterministic: no dropout; the masked tokens to drop then follow a fixed order, else a
        random order from the 'dropout' rng.
      num_dropped: static; default config.model.num_dropped. Use 0 at inference (masks sparser
        than num_dropped / N).
      mask_dropped_in_attention: keep dropped tokens in the sequence but hide them from attention
        (a reference for tests: the kept rows match the dropping path).
      drop_up_to: static; with num_dropped=0 (inference), hide up to this many masked tokens from
        attention, however sparse the mask, so that the encoder and the image decoder see what
        training showed them (at most N - num_dropped image rows, the rest the decoder's [MASK]).
    Returns:
      EncoderOutput with features [B, N - num_dropped + L, D] (N + L with the variant).
    """
    batch, num_tokens = mask.shape
    if num_tokens != self.num_image_tokens:
      raise ValueError(f'encode: mask has {num_tokens} tokens, config.model.image_grid='
                       f'{self.config.image_grid} needs {self.num_image_tokens}')
    num_dropped = self.config.num_dropped if num_dropped is None else num_dropped
    if text_features is None:
      text_features, text_mask = self.empty_text(batch, deterministic=deterministic)
    elif text_mask is None:
      text_mask = jnp.ones(text_features.shape[:2], bool)

    x = self.embed_image(image_tokens)
    x = jnp.where(mask[..., None], self.encoder_mask_embedding.astype(self.dtype), x)
    x = x + self.encoder_position.astype(self.dtype)
    if deterministic:
      priority = jnp.asarray(masking.fixed_drop_priority(num_tokens))[None]
    else:
      priority = jax.random.uniform(self.make_rng('dropout'), (batch, num_tokens))
    if drop_up_to:
      if num_dropped:
        raise ValueError('encode: drop_up_to needs num_dropped=0 (it is the inference variant)')
      dropped = masking.choose_dropped(mask, drop_up_to, priority) & mask
    else:
      dropped = masking.choose_dropped(mask, num_dropped, priority)
    image_rows_hidden = bool(mask_dropped_in_attention or drop_up_to)
    if image_rows_hidden:
      positions = jnp.broadcast_to(jnp.arange(num_tokens, dtype=jnp.int32), (batch, num_tokens))
      image_valid = ~dropped
    else:
      positions = masking.kept_positions(dropped, num_tokens - num_dropped)
      x = jnp.take_along_axis(x, positions[..., None], axis=1)
      image_valid = jnp.ones(positions.shape, bool)

    text = self.encoder_text_projection(text_features.astype(self.dtype))
    x = layers.constrain(jnp.concatenate([x, text], axis=1))
    valid = jnp.concatenate([image_valid, text_mask.astype(bool)], axis=1)
    x = self.dropout(x, deterministic=deterministic)
    features = self.encoder(x, layers.padding_mask(valid), deterministic=deterministic)
    return EncoderOutput(features=features, valid=valid, image_positions=positions,
                         image_rows_hidden=image_rows_hidden)

  # -- text decoder (GIT) --------------------------------------------------------------------

  def decode_text(self, encoder_output, text_in, *, deterministic, decode=False,
                  max_decode_len: Optional[int] = None):
    """Causal text decoder over [encoder features ; text] -> logits [B, T, V] float32.

    Feature rows see feature rows only; text rows see all (valid) features and earlier text.

    Incremental decoding (decode=True, 'cache' collection mutable): the first call, with no cache
    yet, creates one for the features plus `max_decode_len` (default config.model.max_text_len)
    tokens and writes the features and `text_in` (e.g. [BOS]); each later call appends `text_in`
    (usually one token) and costs only its own positions. Logits equal the full pass.
    """
    c = self.config
    project = lambda features: self.text_decoder_feature_norm(
        self.text_decoder_feature_projection(features))
    prefix_length = encoder_output.features.shape[1]
    batch, length = text_in.shape
    table = self.text_decoder_embedding.astype(self.dtype)
    text = jnp.take(table, text_in, axis=0)

    if not decode:
      text = text + self.text_decoder_position[:length].astype(self.dtype)
      x = jnp.concatenate([project(encoder_output.features), text], axis=1)
      positions = jnp.arange(prefix_length + length)
      key_valid = jnp.concatenate([encoder_output.valid, jnp.ones((batch, length), bool)], 1)
      mask = layers.git_mask(positions, positions, prefix_length, key_valid)
      y = self.text_decoder(self.dropout(x, deterministic=deterministic), mask,
                            deterministic=deterministic)
    else:
      first_call, start, key_valid = self.text_decoder_cache(
          encoder_output.valid, length, prefix_length + (max_decode_len or c.max_text_len))
      if first_call:
        # Later calls skip the features: their keys and values are in the cache.
        x = jnp.concatenate([project(encoder_output.features),
                             text + self.text_decoder_position[:length]], axis=1)
      else:
        text_positions = start - prefix_length + jnp.arange(length)
        x = text + jnp.take(self.text_decoder_position, text_positions, axis=0, mode='clip')
      x = x.astype(self.dtype)
      cache_length = key_valid.shape[1]
      mask = layers.git_mask(start + jnp.arange(x.shape[1]), jnp.arange(cache_length),
                             prefix_length, key_valid)
      y = self.text_decoder(x, mask, deterministic=True, decode=True, cache_length=cache_length)
    h = y[:, -length:]
    h = self.text_decoder_head_norm(nn.gelu(self.text_decoder_head(h)))
    return tied_logits(h, self.text_decoder_embedding, self.text_decoder_logit_bias)

  # -- image decoder (MAGE) ------------------------------------------------------------------

  def decode_image(self, encoder_output, *, deterministic):
    """Full-attention decoder over the image grid -> logits [B, N, K] float32.

    Its input is the encoder's image rows put back on the full grid (the paper's "padded back");
    dropped positions (and rows hidden by the attention-masking variant) get the decoder's
    [MASK] embedding. The text reaches it through the joint encoder.
    """
    features, valid = encoder_output.features, encoder_output.valid
    positions = encoder_output.image_positions
    batch, image_rows = positions.shape
    mask_embedding = self.image_decoder_mask_embedding.astype(features.dtype)
    rows = features[:, :image_rows]
    if encoder_output.image_rows_hidden:
      rows = jnp.where(valid[:, :image_rows, None], rows, mask_embedding)
    grid = jnp.broadcast_to(mask_embedding, (batch, self.num_image_tokens, features.shape[-1]))
    grid = jax.vmap(lambda g, p, r: g.at[p].set(r))(grid, positions, rows)
    x = grid + self.image_decoder_position.astype(grid.dtype)
    y = self.image_decoder(self.dropout(x, deterministic=deterministic), None,
                           deterministic=deterministic)
    h = self.image_decoder_head_norm(nn.gelu(self.image_decoder_head(y)))
    return tied_logits(h, self.encoder_image_embedding, self.image_decoder_logit_bias)


def tied_logits(h, embedding, bias):
  """[B, T, D] @ embedding[V, D]^T + bias -> float32 logits [B, T, V]."""
  logits = jnp.einsum('btd,vd->btv', h.astype(jnp.float32), embedding.astype(jnp.float32))
  return logits + bias.astype(jnp.float32)


def dummy_inputs(model_config, batch=1):
  """Zero inputs of the right shapes for `ITIT.init`."""
  num_tokens = model_config.image_grid ** 2
  image_tokens = jnp.zeros((batch, num_tokens), jnp.int32)
  mask = jnp.asarray(np.arange(num_tokens) < max(model_config.num_dropped, 1))[None]
  mask = jnp.broadcast_to(mask, (batch, num_tokens))
  text = jnp.zeros((batch, model_config.max_text_len), jnp.int32)
  return image_tokens, mask, text, text


def init_params(model_config, rng, batch=1):
  """Boxed (nn.Partitioned) parameters: `model.init` on dummy inputs."""
  return ITIT(model_config).init({'params': rng}, *dummy_inputs(model_config, batch))['params']


PARTS = ('text_encoder', 'text_decoder', 'image_decoder', 'encoder')


def part_of(module_name: str) -> str:
  """The part (PARTS) a top-level parameter module belongs to, by its name's prefix."""
  part = next((p for p in PARTS if module_name.startswith(p)), None)
  if part is None:
    raise ValueError(f'parameter module {module_name!r} belongs to none of {PARTS}')
  return part


def count_params(config):
  """Parameter counts per part and in total, from shapes only (`jax.eval_shape`).

  Args:
    config: the full config (uses `config.model`).
  Returns:
    dict part -> count for `PARTS`, 'total', and 'total_without_text_encoder' (the paper's
    totals leave out the frozen T5 but include the projection of its features).
  """
  shapes = jax.eval_shape(lambda: init_params(config.model, jax.random.PRNGKey(0)))
  shapes = nn.unbox(shapes)
  counts = dict.fromkeys(PARTS, 0)
  for name, subtree in shapes.items():
    counts[part_of(name)] += sum(int(np.prod(x.shape))
                                 for x in jax.tree_util.tree_leaves(subtree))
  counts['total'] = sum(counts[p] for p in PARTS)
  counts['total_without_text_encoder'] = counts['total'] - counts['text_encoder']
  return counts


def format_param_counts(counts):
  """One line for the training log."""
  parts = ', '.join(f'{p} {counts[p] / 1e6:.2f}M' for p in PARTS)
  return (f'parameters: {counts["total"] / 1e6:.2f}M ({parts}; '
          f'{counts["total_without_text_encoder"] / 1e6:.2f}M without the text encoder)')


def apply_method(model, params, rng, method, *args, deterministic: bool = True, **kwargs):
  """`model.apply` of one ITIT method on the 'params' collection (boxed or unboxed).

  rng: the 'dropout' key, used only when deterministic=False (training); None for inference.
  """
  rngs = None if rng is None else {'dropout': rng}
  return model.apply({'params': params}, *args, deterministic=deterministic, method=method,
                     rngs=rngs, **kwargs)

"""A MaskGIT-layout CNN VQGAN: images [B, H, W, 3] in [0, 1] <-> tokens [B, h*w].

The parameter tree matches MaskGIT's public tokenizer (google-research/maskgit,
`nets/vqgan_tokenizer.py`) name for name and shape for shape, so its msgpack checkpoint loads
with no renaming:

  params/encoder/{Conv_0, ResBlock_0.., GroupNorm_0, Conv_1}
  params/decoder/{Conv_0, ResBlock_0.., Conv_1..Conv_{L-1} (upsampling), GroupNorm_0, Conv_L}
  params/quantizer/codebook [codebook_size, embedding_dim]

Each ResBlock holds GroupNorm_0, Conv_0, GroupNorm_1, Conv_1 and, where the width changes, a
1x1 Conv_2. GroupNorm + swish, no attention, 2x2 average-pool downsampling, nearest upsampling
followed by a 3x3 conv, bias-free res-block convs.

The model section of a config (`config.model`, or the ConfigDict itself) holds: image_size,
filters, channel_multipliers, num_res_blocks, embedding_dim, codebook_size, norm_groups,
commitment_cost; optionally encoder ('resnet', the default, or 'patch_mlp': per-patch tokens,
see `PatchEncoder`) with patch_mlp_width and patch_mlp_depth.
"""
import functools
import hashlib
import json
import os
from typing import Callable

import flax.linen as nn
import flax.serialization
import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from itit import errors

TOKENIZER_FILE = 'tokenizer.msgpack'
TOKENIZER_CONFIG_FILE = 'tokenizer_config.json'


def model_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Returns the model section: `config.model` for a full training config, else `config`."""
  return config.model if 'model' in config else config


def grid_size(config: ml_collections.ConfigDict) -> int:
  """Side of the token grid: image_size / 2^(number of downsamplings)."""
  config = model_config(config)
  factor = 2 ** (len(config.channel_multipliers) - 1)
  if config.image_size % factor:
    raise ValueError(f'model.image_size={config.image_size} is not divisible by {factor} '
                     f'(2^(len(channel_multipliers) - 1)); change one of them.')
  return config.image_size // factor


class ResBlock(nn.Module):
  """Pre-activation residual block: [B, H, W, C_in] -> [B, H, W, filters]."""
  filters: int
  norm_groups: int

  @nn.compact
  def __call__(self, x):
    in_channels = x.shape[-1]
    h = nn.swish(nn.GroupNorm(num_groups=self.norm_groups)(x))
    h = nn.Conv(self.filters, (3, 3), use_bias=False)(h)
    h = nn.swish(nn.GroupNorm(num_groups=self.norm_groups)(h))
    h = nn.Conv(self.filters, (3, 3), use_bias=False)(h)
    if in_channels == self.filters:
      return x + h
    # Where the width changes MaskGIT's skip path projects the block's OUTPUT (a [1, 1, filters,
    # filters] kernel) and drops the input; we do the same so its weights give its images.
    return h + nn.Conv(self.filters, (1, 1), use_bias=False)(h)


def _downsample(x):
  """2x2 average pooling, [B, H, W, C] -> [B, H/2, W/2, C]."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _upsample(x):
  """Nearest-neighbour 2x upsampling, [B, H, W, C] -> [B, 2H, 2W, C]."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class Encoder(nn.Module):
  """Images [B, H, W, 3] -> features [B, h, w, embedding_dim]."""
  config: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, images):
    cfg = self.config
    x = nn.Conv(cfg.filters, (3, 3), use_bias=False)(images)
    num_levels = len(cfg.channel_multipliers)
    for level, multiplier in enumerate(cfg.channel_multipliers):
      for _ in range(cfg.num_res_blocks):
        x = ResBlock(cfg.filters * multiplier, cfg.norm_groups)(x)
      if level < num_levels - 1:
        x = _downsample(x)
    for _ in range(cfg.num_res_blocks):
      x = ResBlock(x.shape[-1], cfg.norm_groups)(x)
    x = nn.swish(nn.GroupNorm(num_groups=cfg.norm_groups)(x))
    return nn.Conv(cfg.embedding_dim, (1, 1))(x)


class PatchEncoder(nn.Module):
  """Images [B, H, W, 3] -> features [B, h, w, embedding_dim], each from its own patch only.

  The image is cut into (H/h)^2-pixel patches and one MLP (`patch_mlp_depth` hidden layers of
  `patch_mlp_width`, swish, no normalisation) maps each patch to its feature, so a token depends
  on nothing outside its patch: equal patches get equal tokens (a plain background is one code)
  and an object's tokens do not change with the rest of the scene. The decoder is unchanged.
  """
  config: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, images):
    cfg = self.config
    b, height, width, c = images.shape
    side = grid_size(cfg)
    patch = height // side
    x = images.reshape(b, side, patch, side, patch, c).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, side, side, patch * patch * c)
    for _ in range(cfg.patch_mlp_depth):
      x = nn.swish(nn.Dense(cfg.patch_mlp_width)(x))
    return nn.Dense(cfg.embedding_dim)(x)


class Decoder(nn.Module):
  """Quantized features [B, h, w, embedding_dim] -> images [B, H, W, 3] (unclipped)."""
  config: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    x = nn.Conv(cfg.filters * cfg.channel_multipliers[-1], (3, 3))(x)
    for _ in range(cfg.num_res_blocks):
      x = ResBlock(x.shape[-1], cfg.norm_groups)(x)
    for level in reversed(range(len(cfg.channel_multipliers))):
      filters = cfg.filters * cfg.channel_multipliers[level]
      for _ in range(cfg.num_res_blocks):
        x = ResBlock(filters, cfg.norm_groups)(x)
      if level > 0:
        x = nn.Conv(filters, (3, 3))(_upsample(x))
    x = nn.swish(nn.GroupNorm(num_groups=cfg.norm_groups)(x))
    return nn.Conv(3, (3, 3))(x)


def squared_distances(features, codebook):
  """[N, D] x [K, D] -> [N, K] squared Euclidean distances."""
  return (jnp.sum(features**2, axis=-1, keepdims=True) - 2 * features @ codebook.T
          + jnp.sum(codebook**2, axis=-1)[None, :])


class VectorQuantizer(nn.Module):
  """Nearest-code lookup with a straight-through gradient, [B, h, w, D] -> same shape."""
  codebook_size: int
  commitment_cost: float

  @nn.compact
  def __call__(self, features):
    codebook = self.param(
        'codebook', nn.initializers.variance_scaling(1.0, 'fan_in', 'uniform'),
        (self.codebook_size, features.shape[-1]))
    flat = features.reshape(-1, features.shape[-1])
    tokens = jnp.argmin(squared_distances(flat, codebook), axis=-1).astype(jnp.int32)
    quantized = jnp.take(codebook, tokens, axis=0).reshape(features.shape)
    codebook_loss = jnp.mean((quantized - jax.lax.stop_gradient(features))**2)
    commitment_loss = jnp.mean((jax.lax.stop_gradient(quantized) - features)**2)
    code_counts = jnp.zeros((self.codebook_size,), jnp.float32).at[tokens].add(1.0)
    probs = code_counts / flat.shape[0]
    aux = dict(
        tokens=tokens.reshape(features.shape[0], -1),
        codebook_loss=codebook_loss,
        commitment_loss=commitment_loss,
        quantizer_loss=codebook_loss + self.commitment_cost * commitment_loss,
        code_counts=code_counts,
        codebook_usage=jnp.mean(code_counts > 0),
        perplexity=jnp.exp(-jnp.sum(jnp.where(probs > 0, probs * jnp.log(probs), 0.0))),
        features=features,
    )
    return features + jax.lax.stop_gradient(quantized - features), aux

  def lookup(self, tokens):
    """tokens int [...] -> code vectors [..., D]."""
    return jnp.take(self.variables['params']['codebook'], tokens, axis=0)


class VQGAN(nn.Module):
  """The tokenizer. `config` is the model section (or a config holding one)."""
  config: ml_collections.ConfigDict

  def setup(self):
    cfg = model_config(self.config)
    kind = cfg.get('encoder', 'resnet')
    if kind not in ('resnet', 'patch_mlp'):
      raise ValueError(f"model.encoder must be 'resnet' (MaskGIT's) or 'patch_mlp', got {kind!r}")
    self.encoder = Encoder(cfg) if kind == 'resnet' else PatchEncoder(cfg)
    self.decoder = Decoder(cfg)
    self.quantizer = VectorQuantizer(cfg.codebook_size, cfg.commitment_cost)

  def __call__(self, images):
    """images [B, H, W, 3] in [0, 1] -> (reconstructions [B, H, W, 3], aux).

    aux: tokens int32 [B, h*w], codebook_loss, commitment_loss, quantizer_loss (their weighted
    sum), code_counts [codebook_size], codebook_usage (fraction of codes used in the batch),
    perplexity, features [B, h, w, D] (encoder outputs, for dead-code restarts).
    """
    quantized, aux = self.quantizer(self.encoder(images))
    return self.decoder(quantized), aux

  def encode(self, images):
    """images [B, H, W, 3] in [0, 1] -> tokens int32 [B, h*w]."""
    _, aux = self.quantizer(self.encoder(images))
    return aux['tokens']

  def decode(self, tokens):
    """tokens int [B, h*w] -> images [B, H, W, 3] (unclipped)."""
    side = grid_size(self.config)
    codes = self.quantizer.lookup(tokens.reshape(tokens.shape[0], side, side))
    return self.decoder(codes)


def init_params(config: ml_collections.ConfigDict, rng: jax.Array) -> dict:
  """Fresh parameters: {'encoder': ..., 'decoder': ..., 'quantizer': {'codebook': [K, D]}}."""
  cfg = model_config(config)
  images = jnp.zeros((1, cfg.image_size, cfg.image_size, 3), jnp.float32)
  return VQGAN(cfg).init(rng, images)['params']


def encode(params: dict, images: jax.Array, config: ml_collections.ConfigDict) -> jax.Array:
  """images float [B, H, W, 3] in [0, 1] -> tokens int32 [B, h*w].

  Pure; jit it with the config closed over: `jax.jit(functools.partial(encode, config=cfg))`.
  """
  return VQGAN(model_config(config)).apply({'params': params}, images, method=VQGAN.encode)


def decode(params: dict, tokens: jax.Array, config: ml_collections.ConfigDict) -> jax.Array:
  """tokens int [B, h*w] -> images float32 [B, H, W, 3], clipped to [0, 1]."""
  images = VQGAN(model_config(config)).apply({'params': params}, tokens, method=VQGAN.decode)
  return jnp.clip(images, 0.0, 1.0)


@functools.lru_cache(maxsize=16)
def _jitted(kind: str, config_json: str) -> Callable:
  """One jitted (params, inputs) function per (kind, model config), reused across calls."""
  cfg = ml_collections.ConfigDict(json.loads(config_json))
  if kind == 'encode':
    return jax.jit(lambda params, images: encode(params, images.astype(jnp.float32) / 255.0, cfg))
  return jax.jit(
      lambda params, tokens: jnp.round(decode(params, tokens, cfg) * 255.0).astype(jnp.uint8))


def _batched_fn(kind: str, params: dict, config: ml_collections.ConfigDict,
                batch_size: int) -> Callable[[np.ndarray], np.ndarray]:
  """Runs the jitted `kind` function over fixed-size chunks (one compile), padding the last."""
  fn = _jitted(kind, json.dumps(model_config(config).to_dict(), sort_keys=True))

  def run(inputs):
    outputs = []
    for start in range(0, len(inputs), batch_size):
      chunk = inputs[start:start + batch_size]
      padding = [(0, batch_size - len(chunk))] + [(0, 0)] * (chunk.ndim - 1)
      outputs.append(np.asarray(fn(params, np.pad(chunk, padding)))[:len(chunk)])
    return np.concatenate(outputs) if outputs else np.zeros((0,), np.int32)
  return run


def tokenizer_fn(params: dict, config: ml_collections.ConfigDict,
                 batch_size: int) -> Callable[[np.ndarray], np.ndarray]:
  """A jitted images uint8 [B, H, W, 3] -> tokens int32 [B, h*w] for the shard writer."""
  cfg = model_config(config)
  run = _batched_fn('encode', params, cfg, batch_size)
  expected = (cfg.image_size, cfg.image_size, 3)

  def tokenize(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != expected:
      raise ValueError(f'tokenizer expects uint8 images [B, {cfg.image_size}, {cfg.image_size}, 3]'
                       f', got {images.dtype} {images.shape}; resize/convert them first.')
    return run(images).astype(np.int32)
  return tokenize


def detokenizer_fn(params: dict, config: ml_collections.ConfigDict,
                   batch_size: int) -> Callable[[np.ndarray], np.ndarray]:
  """A jitted tokens int [B, h*w] -> images uint8 [B, H, W, 3]."""
  return _batched_fn('decode', params, config, batch_size)


def _flatten(tree: dict) -> dict:
  """Nested dict -> {'a/b/c': leaf}."""
  return flax.traverse_util.flatten_dict(tree, sep='/')


def validate_params(params: dict, config: ml_collections.ConfigDict, source: str) -> dict:
  """Checks `params` against this config's init tree; returns it as float32 numpy arrays.

  Raises ValueError naming every missing, unexpected or mis-shaped parameter.
  """
  expected = _flatten(jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0))))
  got = _flatten(params)
  missing = sorted(set(expected) - set(got))
  unexpected = sorted(set(got) - set(expected))
  misshaped = sorted(f'{k} {tuple(np.shape(got[k]))} (expected {tuple(expected[k].shape)})'
                     for k in set(expected) & set(got)
                     if tuple(np.shape(got[k])) != tuple(expected[k].shape))
  problems = [f'{name}: {", ".join(items)}' for name, items in
              (('missing', missing), ('unexpected', unexpected), ('mis-shaped', misshaped))
              if items]
  if problems:
    raise errors.UserError(
        f'{source} does not match the VQGAN config (filters, channel_multipliers, '
        f'num_res_blocks, embedding_dim, codebook_size): ' + '; '.join(problems))
  return jax.tree.map(lambda x: np.asarray(x, np.float32), params)


def load_maskgit_checkpoint(path: str, config: ml_collections.ConfigDict) -> dict:
  """Loads a MaskGIT tokenizer msgpack (flax.serialization) -> params, validated.

  Accepts the blob MaskGIT publishes ({'params': {...}}) or a bare params tree.
  """
  if not os.path.isfile(path):
    raise errors.MissingFileError(
        f'VQGAN checkpoint {path!r} does not exist; pass the path of a MaskGIT tokenizer '
        'msgpack (e.g. tokenizer_imagenet256_checkpoint).')
  with open(path, 'rb') as f:
    state = flax.serialization.msgpack_restore(f.read())
  if isinstance(state, dict) and set(state) == {'params'}:
    state = state['params']
  if not isinstance(state, dict):
    raise ValueError(f'{path} holds a {type(state).__name__}, not a parameter tree.')
  return validate_params(state, config, path)


def save_tokenizer(directory: str, params: dict, config: ml_collections.ConfigDict) -> str:
  """Writes DIR/tokenizer.msgpack + DIR/tokenizer_config.json; returns the msgpack's sha256."""
  blob = flax.serialization.msgpack_serialize(
      {'params': jax.tree.map(lambda x: np.asarray(x, np.float32), params)})
  sha256 = hashlib.sha256(blob).hexdigest()
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, TOKENIZER_FILE), 'wb') as f:
    f.write(blob)
  cfg = model_config(config).to_dict()
  cfg.pop('sha256', None)
  with open(os.path.join(directory, TOKENIZER_CONFIG_FILE), 'w') as f:
    json.dump(dict(cfg, sha256=sha256, grid_size=grid_size(config)), f, indent=2)
  return sha256


def load_tokenizer(directory: str) -> tuple[dict, ml_collections.ConfigDict]:
  """DIR from `train_tokenizer` -> (params, model config with `.sha256` of the msgpack bytes)."""
  config_path = os.path.join(directory, TOKENIZER_CONFIG_FILE)
  params_path = os.path.join(directory, TOKENIZER_FILE)
  if not os.path.isdir(directory):
    raise errors.MissingFileError(f'VQGAN directory {directory} does not exist: pass the workdir '
                                  'of a trained VQGAN (python -m itit.train_tokenizer)')
  for path in (config_path, params_path):
    if not os.path.isfile(path):
      raise errors.MissingFileError(f'{path} is missing: train a tokenizer into {directory} '
                                    'with `python -m itit.train_tokenizer --workdir=...` first')
  with open(config_path) as f:
    saved = json.load(f)
  with open(params_path, 'rb') as f:
    blob = f.read()
  sha256 = hashlib.sha256(blob).hexdigest()
  if saved.get('sha256', sha256) != sha256:
    raise errors.CorruptFileError(
        f'{params_path} has sha256 {sha256} but {config_path} records {saved["sha256"]}: the '
        'two files come from different runs; copy the whole VQGAN workdir again')
  saved.pop('grid_size', None)
  saved['sha256'] = sha256
  config = ml_collections.ConfigDict(saved)
  state = flax.serialization.msgpack_restore(blob)
  return validate_params(state.get('params', state), config, params_path), config

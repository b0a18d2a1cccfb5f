"""Tests for itit/models/vqgan.py: shapes per config, MaskGIT checkpoint compatibility, I/O."""
import importlib
import os

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from itit.models import vqgan

# A small config of MaskGIT's layout: one width change (32 -> 64) exercises the 1x1 skip conv.
SMALL = ml_collections.ConfigDict(dict(
    image_size=8, filters=32, channel_multipliers=[1, 2], num_res_blocks=2, embedding_dim=4,
    codebook_size=16, norm_groups=32, commitment_cost=0.25))


def maskgit_layout(filters, multipliers, num_res_blocks, embedding_dim, codebook_size):
  """MaskGIT's tokenizer params as {name: shape}, written from its layout, not from our code."""
  shapes = {}

  def res_block(prefix, c_in, c_out):
    shapes.update({f'{prefix}/GroupNorm_0/scale': (c_in,), f'{prefix}/GroupNorm_0/bias': (c_in,),
                   f'{prefix}/Conv_0/kernel': (3, 3, c_in, c_out),
                   f'{prefix}/GroupNorm_1/scale': (c_out,), f'{prefix}/GroupNorm_1/bias': (c_out,),
                   f'{prefix}/Conv_1/kernel': (3, 3, c_out, c_out)})
    if c_in != c_out:
      shapes[f'{prefix}/Conv_2/kernel'] = (1, 1, c_out, c_out)

  widths = [filters * m for m in multipliers]
  shapes['encoder/Conv_0/kernel'] = (3, 3, 3, filters)
  blocks, c = 0, filters
  for width in widths + [widths[-1]]:  # the levels, then the middle blocks
    for _ in range(num_res_blocks):
      res_block(f'encoder/ResBlock_{blocks}', c, width)
      blocks, c = blocks + 1, width
  shapes.update({'encoder/GroupNorm_0/scale': (c,), 'encoder/GroupNorm_0/bias': (c,),
                 'encoder/Conv_1/kernel': (1, 1, c, embedding_dim),
                 'encoder/Conv_1/bias': (embedding_dim,)})
  shapes.update({'decoder/Conv_0/kernel': (3, 3, embedding_dim, c), 'decoder/Conv_0/bias': (c,)})
  blocks, convs = 0, 1
  for level, width in [(None, widths[-1])] + list(reversed(list(enumerate(widths)))):
    for _ in range(num_res_blocks):
      res_block(f'decoder/ResBlock_{blocks}', c, width)
      blocks, c = blocks + 1, width
    if level:
      shapes.update({f'decoder/Conv_{convs}/kernel': (3, 3, c, c),
                     f'decoder/Conv_{convs}/bias': (c,)})
      convs += 1
  shapes.update({'decoder/GroupNorm_0/scale': (c,), 'decoder/GroupNorm_0/bias': (c,),
                 f'decoder/Conv_{convs}/kernel': (3, 3, c, 3), f'decoder/Conv_{convs}/bias': (3,)})
  shapes['quantizer/codebook'] = (codebook_size, embedding_dim)
  return shapes


def nest(flat):
  tree = {}
  for name, value in flat.items():
    *path, leaf = name.split('/')
    node = tree
    for key in path:
      node = node.setdefault(key, {})
    node[leaf] = value
  return tree


def random_maskgit_params(config, seed=0):
  rng = np.random.default_rng(seed)
  layout = maskgit_layout(config.filters, config.channel_multipliers, config.num_res_blocks,
                          config.embedding_dim, config.codebook_size)
  flat = {}
  for name, shape in layout.items():
    fan_in = np.prod(shape[:-1]) if len(shape) > 1 else 1
    value = rng.normal(0, 1 / np.sqrt(fan_in), shape)
    if name.endswith('scale'):
      value = 1 + 0.1 * value
    flat[name] = value.astype(np.float32)
  return nest(flat)


def reference_forward(p, images, config):
  """MaskGIT's computation, written independently with lax ops: -> (tokens, reconstructions)."""
  def conv(x, layer):
    y = jax.lax.conv_general_dilated(x, layer['kernel'], (1, 1), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return y + layer['bias'] if 'bias' in layer else y

  def norm_act(x, layer):
    b, h, w, c = x.shape
    g = x.reshape(b, h, w, 32, c // 32)
    g = (g - g.mean(axis=(1, 2, 4), keepdims=True)) / jnp.sqrt(
        g.var(axis=(1, 2, 4), keepdims=True) + 1e-6)
    return jax.nn.swish(g.reshape(x.shape) * layer['scale'] + layer['bias'])

  def res_block(x, blk):
    h = conv(norm_act(x, blk['GroupNorm_0']), blk['Conv_0'])
    h = conv(norm_act(h, blk['GroupNorm_1']), blk['Conv_1'])
    return h + conv(h, blk['Conv_2']) if 'Conv_2' in blk else x + h

  enc, dec = p['encoder'], p['decoder']
  levels, n = len(config.channel_multipliers), config.num_res_blocks
  x = conv(images, enc['Conv_0'])
  for level in range(levels + 1):
    for i in range(n):
      x = res_block(x, enc[f'ResBlock_{level * n + i}'])
    if level < levels - 1:
      b, h, w, c = x.shape
      x = x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
  z = conv(norm_act(x, enc['GroupNorm_0']), enc['Conv_1'])
  codebook = p['quantizer']['codebook']
  tokens = jnp.argmin(((z[..., None, :] - codebook)**2).sum(-1), axis=-1)
  x = conv(codebook[tokens], dec['Conv_0'])
  for level in range(levels + 1):
    for i in range(n):
      x = res_block(x, dec[f'ResBlock_{level * n + i}'])
    if 0 < level < levels:
      x = conv(jax.image.resize(x, (x.shape[0], x.shape[1] * 2, x.shape[2] * 2, x.shape[3]),
                                'nearest'), dec[f'Conv_{level}'])
  x = conv(norm_act(x, dec['GroupNorm_0']), dec[f'Conv_{levels}'])
  return tokens.reshape(tokens.shape[0], -1), x


def flat_shapes(tree):
  return {k: tuple(v.shape) for k, v in vqgan._flatten(tree).items()}


@pytest.mark.parametrize('name', ['vqgan_maskgit', 'vqgan_paper', 'vqgan_shapes'])
def test_each_config_encodes_and_decodes_to_the_right_shapes(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  cfg = config.model
  params = jax.eval_shape(lambda: vqgan.init_params(config, jax.random.PRNGKey(0)))
  images = jax.ShapeDtypeStruct((2, cfg.image_size, cfg.image_size, 3), jnp.float32)
  tokens = jax.eval_shape(lambda p, x: vqgan.encode(p, x, config), params, images)
  grid = vqgan.grid_size(config)
  assert tokens.shape == (2, grid * grid) and tokens.dtype == jnp.int32
  decoded = jax.eval_shape(lambda p, t: vqgan.decode(p, t, config), params, tokens)
  assert decoded.shape == (2, cfg.image_size, cfg.image_size, 3)
  assert params['quantizer']['codebook'].shape == (cfg.codebook_size, cfg.embedding_dim)
  expected = {'vqgan_maskgit': (16, 1024), 'vqgan_paper': (16, 8192), 'vqgan_shapes': (8, None)}
  assert grid == expected[name][0]
  assert expected[name][1] in (None, cfg.codebook_size)


def test_maskgit_config_has_maskgits_exact_parameter_tree():
  cfg = importlib.import_module('configs.vqgan_maskgit').get_config().model
  ours = flat_shapes(jax.eval_shape(lambda: vqgan.init_params(cfg, jax.random.PRNGKey(0))))
  assert ours == maskgit_layout(128, [1, 1, 2, 2, 4], 2, 256, 1024)
  assert 'encoder/ResBlock_11/Conv_1/kernel' in ours and 'decoder/Conv_5/kernel' in ours


@pytest.fixture(scope='module')
def small_checkpoint(tmp_path_factory):
  params = random_maskgit_params(SMALL)
  path = str(tmp_path_factory.mktemp('ckpt') / 'tokenizer_checkpoint')
  with open(path, 'wb') as f:  # the blob MaskGIT publishes: {'params': {...}}
    f.write(flax.serialization.msgpack_serialize({'params': params}))
  return params, path


def test_maskgit_checkpoint_loads_without_renaming_and_computes_like_maskgit(small_checkpoint):
  written, path = small_checkpoint
  loaded = vqgan.load_maskgit_checkpoint(path, SMALL)
  jax.tree.map(np.testing.assert_array_equal, loaded, written)
  images = jnp.asarray(np.random.default_rng(1).uniform(size=(2, 8, 8, 3)), jnp.float32)
  tokens = vqgan.encode(loaded, images, SMALL)
  ref_tokens, ref_images = reference_forward(written, images, SMALL)
  np.testing.assert_array_equal(tokens, ref_tokens)
  np.testing.assert_array_equal(tokens, vqgan.encode(written, images, SMALL))
  raw = vqgan.VQGAN(SMALL).apply({'params': loaded}, tokens, method=vqgan.VQGAN.decode)
  np.testing.assert_allclose(raw, ref_images, atol=1e-4)
  decoded = vqgan.decode(loaded, tokens, SMALL)
  np.testing.assert_allclose(decoded, np.clip(ref_images, 0, 1), atol=1e-4)
  reconstructions, aux = vqgan.VQGAN(SMALL).apply({'params': loaded}, images)
  np.testing.assert_allclose(reconstructions, ref_images, atol=1e-4)
  np.testing.assert_array_equal(aux['tokens'], ref_tokens)
  assert float(aux['code_counts'].sum()) == tokens.size


@pytest.mark.parametrize('edit,named', [
    ('drop', 'missing: decoder/ResBlock_4/Conv_2/kernel'),
    ('reshape', 'mis-shaped: quantizer/codebook (16, 5) (expected (16, 4))'),
    ('extra', 'unexpected: encoder/Conv_9/kernel'),
])
def test_loading_rejects_a_bad_tree_naming_the_parameter(tmp_path, edit, named):
  params = random_maskgit_params(SMALL)
  if edit == 'drop':
    del params['decoder']['ResBlock_4']['Conv_2']
  elif edit == 'reshape':
    params['quantizer']['codebook'] = np.zeros((16, 5), np.float32)
  else:
    params['encoder']['Conv_9'] = {'kernel': np.zeros((1,), np.float32)}
  path = tmp_path / 'bad'
  path.write_bytes(flax.serialization.msgpack_serialize(params))  # a bare tree loads too
  with pytest.raises(ValueError, match='does not match') as error:
    vqgan.load_maskgit_checkpoint(str(path), SMALL)
  assert named in str(error.value)
  with pytest.raises(FileNotFoundError, match='does not exist'):
    vqgan.load_maskgit_checkpoint(str(tmp_path / 'nope'), SMALL)


def test_tokenizer_fn_chunks_and_pads_and_saved_tokenizer_round_trips(small_checkpoint, tmp_path):
  params, _ = small_checkpoint
  images = np.random.default_rng(2).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
  tokens = vqgan.tokenizer_fn(params, SMALL, batch_size=2)(images)  # chunks of 2, 2, 1
  direct = vqgan.encode(params, jnp.asarray(images, jnp.float32) / 255, SMALL)
  assert tokens.dtype == np.int32 and tokens.shape == (5, 16)
  np.testing.assert_array_equal(tokens, direct)
  with pytest.raises(ValueError, match=r'uint8 images \[B, 8, 8, 3\]'):
    vqgan.tokenizer_fn(params, SMALL, 2)(images.astype(np.float32))
  pixels = vqgan.detokenizer_fn(params, SMALL, batch_size=4)(tokens)
  expected = np.round(np.asarray(vqgan.decode(params, direct, SMALL)) * 255).astype(np.uint8)
  np.testing.assert_array_equal(pixels, expected)

  sha256 = vqgan.save_tokenizer(str(tmp_path), params, SMALL)
  loaded, config = vqgan.load_tokenizer(str(tmp_path))
  assert config.sha256 == sha256 and len(sha256) == 64
  assert config.codebook_size == 16 and list(config.channel_multipliers) == [1, 2]
  jax.tree.map(np.testing.assert_array_equal, loaded, params)
  # The same params give the same file, so the shard manifest's sha256 is reproducible.
  assert vqgan.save_tokenizer(str(tmp_path / 'again'), loaded, config) == sha256
  blob = tmp_path / vqgan.TOKENIZER_FILE
  corrupted = bytearray(blob.read_bytes())
  corrupted[-1] ^= 1
  blob.write_bytes(bytes(corrupted))
  with pytest.raises(ValueError, match='different runs'):
    vqgan.load_tokenizer(str(tmp_path))
  os.remove(blob)
  with pytest.raises(FileNotFoundError, match='train a tokenizer'):
    vqgan.load_tokenizer(str(tmp_path))


def test_patch_mlp_encoder_tokens_depend_only_on_their_patch():
  config = ml_collections.ConfigDict(dict(SMALL, encoder='patch_mlp', patch_mlp_width=8,
                                          patch_mlp_depth=2))
  params = vqgan.init_params(config, jax.random.PRNGKey(0))
  # 8x8 images, one downsampling: 4x4 tokens of 2x2-pixel patches; MLP 12 -> 8 -> 8 -> 4.
  assert flat_shapes(params['encoder']) == {
      'Dense_0/kernel': (12, 8), 'Dense_0/bias': (8,), 'Dense_1/kernel': (8, 8),
      'Dense_1/bias': (8,), 'Dense_2/kernel': (8, 4), 'Dense_2/bias': (4,)}
  rng = np.random.default_rng(0)
  images = rng.random((3, 8, 8, 3)).astype(np.float32)
  features = np.asarray(vqgan.VQGAN(config).apply({'params': params}, jnp.asarray(images),
                                                  method=lambda m, x: m.encoder(x)))
  # Each feature is the MLP of its own patch, flattened row-major as (row, col, channel).
  p = params['encoder']
  patch = images[1, 2:4, 4:6].reshape(-1)
  h = jax.nn.swish(patch @ p['Dense_0']['kernel'] + p['Dense_0']['bias'])
  h = jax.nn.swish(h @ p['Dense_1']['kernel'] + p['Dense_1']['bias'])
  np.testing.assert_allclose(features[1, 1, 2], h @ p['Dense_2']['kernel'] + p['Dense_2']['bias'],
                             rtol=1e-5, atol=1e-6)
  # Changing one patch changes that token's feature only; equal patches give equal features.
  edited = images.copy()
  edited[:, 6:8, 0:2] = 0.0
  edited_features = np.asarray(vqgan.VQGAN(config).apply(
      {'params': params}, jnp.asarray(edited), method=lambda m, x: m.encoder(x)))
  changed = np.any(edited_features != features, axis=-1)
  expected = np.zeros((3, 4, 4), bool)
  expected[:, 3, 0] = True
  np.testing.assert_array_equal(changed, expected)
  plain = np.full((1, 8, 8, 3), 0.3, np.float32)
  tokens = np.asarray(vqgan.encode(params, plain, config))
  assert len(np.unique(tokens)) == 1
  decoded = vqgan.decode(params, tokens, config)
  assert decoded.shape == (1, 8, 8, 3)


def test_unknown_encoder_kind_is_refused():
  config = ml_collections.ConfigDict(dict(SMALL, encoder='vit'))
  with pytest.raises(ValueError, match="model.encoder must be 'resnet'"):
    vqgan.init_params(config, jax.random.PRNGKey(0))

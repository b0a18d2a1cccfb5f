"""Tests for itit.models.t5 (no torch needed): input paths, precision, configs, ITIT wiring.

Parity with the reference implementation is in tests/test_t5_loader.py.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import t5_xxl
from configs import tiny
from itit.models import itit
from itit.models import t5

VOCAB = 40


def tiny_section(feed_forward_proj='gated-gelu'):
  return ml_collections.ConfigDict(dict(
      kind='t5', path='', vocab_size=VOCAB, width=32, depth=2, num_heads=4, head_dim=8,
      mlp_dim=48, feed_forward_proj=feed_forward_proj, relative_buckets=32,
      relative_max_distance=128, norm_epsilon=1e-6))


def make_encoder(feed_forward_proj='gated-gelu', dtype=jnp.float32):
  model_config = ml_collections.ConfigDict(dict(
      text_vocab_size=VOCAB, text_encoder=tiny_section(feed_forward_proj)))
  return t5.make_t5_encoder(model_config, dtype)


IDS = np.array([[5, 9, 3, 17, 1, 0, 0], [7, 1, 0, 0, 0, 0, 0]], np.int32)


@pytest.fixture(scope='module')
def encoder_and_params():
  encoder = make_encoder()
  params = encoder.init(jax.random.PRNGKey(0), jnp.asarray(IDS))['params']
  return encoder, params


def test_parse_feed_forward_proj():
  assert t5.parse_feed_forward_proj('relu') == (False, 'relu')
  assert t5.parse_feed_forward_proj('gated-gelu') == (True, 'gelu_new')
  assert t5.parse_feed_forward_proj('gelu') == (False, 'gelu')
  assert t5.parse_feed_forward_proj('gated-silu') == (True, 'silu')
  with pytest.raises(ValueError, match='feed_forward_proj'):
    t5.parse_feed_forward_proj('gated-tanh')
  with pytest.raises(ValueError, match='feed_forward_proj'):
    t5.parse_feed_forward_proj('relu-gated')


def test_gated_gelu_is_the_tanh_approximation():
  x = jnp.linspace(-4.0, 4.0, 9)
  expected = 0.5 * x * (1 + jnp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
  np.testing.assert_allclose(t5.ACTIVATIONS['gelu_new'](x), expected, atol=1e-6)


def test_parameter_tree_and_logical_axes(encoder_and_params):
  encoder, _ = encoder_and_params
  boxed = jax.eval_shape(encoder.init, jax.random.PRNGKey(0), jnp.asarray(IDS))['params']
  axes = {jax.tree_util.keystr(path): leaf.names for path, leaf in
          jax.tree_util.tree_leaves_with_path(
              boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))}
  assert axes["['embedding']"] == ('vocab', 'embed')
  assert axes["['relative_position_bias']['rel_embedding']"] == ('relpos_buckets', 'heads')
  assert axes["['block_1']['attention']['query']['kernel']"] == ('embed', 'heads', 'kv')
  assert axes["['block_1']['attention']['out']['kernel']"] == ('heads', 'kv', 'embed')
  assert axes["['block_0']['mlp']['wi_1']['kernel']"] == ('embed', 'mlp')
  assert axes["['block_0']['mlp']['wo']['kernel']"] == ('mlp', 'embed')
  assert axes["['norm_final']['scale']"] == ('embed',)
  # No biases anywhere; one relative position bias for the whole stack.
  assert not any('bias' in name and 'relative_position_bias' not in name for name in axes)
  assert sum('rel_embedding' in name for name in axes) == 1


def test_relu_variant_tree():
  encoder = make_encoder('relu')
  shapes = jax.eval_shape(encoder.init, jax.random.PRNGKey(0), jnp.asarray(IDS))['params']
  assert set(shapes['block_0']['mlp']) == {'wi', 'wo'}


def test_one_hot_path_equals_ids_path_and_padding_is_masked(encoder_and_params):
  encoder, params = encoder_and_params
  features, mask = encoder.apply({'params': params}, jnp.asarray(IDS))
  assert features.dtype == jnp.float32 and features.shape == (2, 7, 32)
  np.testing.assert_array_equal(mask, IDS != 0)
  one_hot = jax.nn.one_hot(IDS, VOCAB)
  features_dist, mask_dist = encoder.apply({'params': params}, one_hot)
  np.testing.assert_array_equal(features_dist, features)
  np.testing.assert_array_equal(mask_dist, mask)
  # Extra padding changes nothing at real positions.
  longer, _ = encoder.apply({'params': params}, jnp.pad(jnp.asarray(IDS), ((0, 0), (0, 3))))
  np.testing.assert_allclose(longer[:, :7][IDS != 0], features[IDS != 0], atol=1e-5)


def test_gradient_reaches_distributions(encoder_and_params):
  encoder, params = encoder_and_params
  one_hot = jax.nn.one_hot(IDS, VOCAB)

  def objective(distributions):
    features, _ = encoder.apply({'params': params}, distributions, jnp.asarray(IDS != 0))
    return jnp.sum(features[:, 0] ** 2)

  grad = jax.grad(objective)(one_hot)
  assert grad.shape == one_hot.shape
  # Every real token influences position 0 through attention.
  assert np.all(np.abs(np.asarray(grad)).max(-1)[IDS != 0] > 0)


def test_bfloat16_compute_is_close_and_one_hot_exact(encoder_and_params):
  _, params = encoder_and_params
  encoder = make_encoder(dtype=jnp.bfloat16)
  features32, _ = make_encoder().apply({'params': params}, jnp.asarray(IDS))
  features16, _ = encoder.apply({'params': params}, jnp.asarray(IDS))
  assert features16.dtype == jnp.float32  # residual stream and final norm in float32
  valid = IDS != 0
  np.testing.assert_allclose(features16[valid], features32[valid], atol=0.1, rtol=0.05)
  assert float(jnp.abs(features16 - features32)[valid].max()) > 0  # bf16 really was used
  features16_dist, _ = encoder.apply({'params': params}, jax.nn.one_hot(IDS, VOCAB))
  np.testing.assert_array_equal(features16_dist, features16)


def test_vocab_mismatch_is_refused():
  model_config = ml_collections.ConfigDict(dict(text_vocab_size=64,
                                                text_encoder=tiny_section()))
  with pytest.raises(ValueError, match='text_vocab_size=64'):
    t5.make_t5_encoder(model_config, jnp.float32)


def test_xxl_configs_count_and_sharding_rules():
  rule_names = {name for name, _ in t5_xxl.sharding_rules()}
  for variant in t5_xxl.VARIANTS:
    config = t5_xxl.use_t5(tiny.get_config(), variant, '/checkpoints/t5')
    section = config.model.text_encoder
    assert (section.kind, section.path, section.width, section.depth) == (
        't5', '/checkpoints/t5', 4096, 24)
    assert config.model.text_vocab_size == 32128
    encoder = t5.make_t5_encoder(config.model, jnp.bfloat16)
    boxed = jax.eval_shape(encoder.init, jax.random.PRNGKey(0),
                           jnp.zeros((1, 4), jnp.int32))['params']
    leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    count = sum(math.prod(leaf.value.shape) for leaf in leaves)
    assert 4.70e9 < count < 4.80e9, count  # the T5-XXL encoder: ~4.76B parameters
    assert {name for leaf in leaves for name in leaf.names} <= rule_names
  with pytest.raises(ValueError, match='variant'):
    t5_xxl.get_config('xl')


def test_itit_builds_t5_when_kind_is_t5():
  config = tiny.get_config()
  config.model.text_encoder = tiny_section('relu')
  config.model.text_vocab_size = VOCAB
  model = itit.ITIT(config.model)
  ids = jnp.asarray(IDS)
  image_tokens = jnp.zeros((2, 16), jnp.int32)
  mask = jnp.zeros((2, 16), bool)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), image_tokens, mask, ids, ids)
  text_encoder = shapes['params']['text_encoder']
  assert set(text_encoder['block_0']['mlp']) == {'wi', 'wo'}
  assert text_encoder['embedding'].value.shape == (VOCAB, 32)

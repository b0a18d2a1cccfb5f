"""Tests for itit.models.t5: input paths, precision, configs, ITIT wiring, relative positions.

Checkpoint parity with the reference implementation is in tests/test_t5_loader.py; here only the
relative-position tests use torch and transformers, and they are skipped where those are absent.
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
from itit.models import t5_loader
from itit.models import text_encoder
from itit.trainer import partitioning

VOCAB = 40


def tiny_section(feed_forward_proj='gated-gelu'):
  """A `config.model.text_encoder` section with a tiny frozen T5 architecture."""
  return ml_collections.ConfigDict(dict(kind='t5', path='', t5=dict(
      vocab_size=VOCAB, width=32, depth=2, num_heads=4, head_dim=8, mlp_dim=48,
      feed_forward_proj=feed_forward_proj, relative_buckets=32, relative_max_distance=128,
      norm_epsilon=1e-6)))


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


def test_the_xxl_section_is_t5_xxl():
  config = tiny.get_config()
  config.model.text_encoder.update(kind='t5', path='/checkpoints/t5', t5=t5_xxl.get_config())
  section = config.model.text_encoder.t5
  assert (section.width, section.depth, section.num_heads, section.mlp_dim) == (
      4096, 24, 64, 10240)
  config.model.text_vocab_size = section.vocab_size
  encoder = t5.make_t5_encoder(config.model, jnp.bfloat16)
  boxed = jax.eval_shape(encoder.init, jax.random.PRNGKey(0),
                         jnp.zeros((1, 4), jnp.int32))['params']
  leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  count = sum(math.prod(leaf.value.shape) for leaf in leaves)
  assert 4.70e9 < count < 4.80e9, count  # the T5-XXL encoder: ~4.76B parameters
  # Every axis name has a sharding rule.
  assert {name for leaf in leaves for name in leaf.names} <= {
      name for name, _ in partitioning.DEFAULT_RULES}
  with pytest.raises(ValueError, match='takes no argument'):
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


def torch_and_transformers():
  reason = 'the T5 reference needs torch (CPU) and transformers: pip install -e ".[test]"'
  return (pytest.importorskip('torch', reason=reason),
          pytest.importorskip('transformers', reason=reason))


def test_bucket_table_values():
  table = text_encoder.relative_position_bucket_table(3, 60, num_buckets=128, max_distance=50)
  assert table.shape == (3, 60) and table.dtype == np.int32
  # Row 0 holds offsets 0..59, the upper 64 buckets. Offsets below 32 have their own bucket; 40
  # sits exactly on a log-spaced boundary (32 * log(40/32) / log(50/32) = 16), which belongs to
  # the upper bucket (64 + 32 + 16), and no integer offset falls in bucket 111 before it.
  np.testing.assert_array_equal(table[0, [0, 1, 31, 32, 39, 40, 49, 50, 59]],
                                [0, 65, 95, 96, 110, 112, 126, 127, 127])
  # Offset -k from row 2 is offset k negated: the lower half of the buckets.
  np.testing.assert_array_equal(table[2, [0, 1, 2]], [2, 1, 0])
  np.testing.assert_array_equal(text_encoder.relative_position_bucket_table(41, 1, 128, 50)[40], [48])
  # 2.25^24 = 3.375^16 exactly, so offset 54 with (96, 81) is on a boundary too: bucket 24 + 16.
  assert text_encoder.relative_position_bucket_table(1, 55, 96, 81)[0, 54] == 48 + 24 + 16
  # The standard T5 table, bucket 8 + floor(2 log2(d / 8)) per direction: offsets 16, 32, 64 open
  # buckets 10, 12, 14 exactly, and the last one, 15, starts at 91 > 8 * 2^3.5.
  row = text_encoder.relative_position_bucket_table(1, 200, 32, 128)[0]
  np.testing.assert_array_equal(row[[8, 11, 12, 15, 16, 31, 32, 63, 64, 90, 91, 199]],
                                [24, 24, 25, 25, 26, 27, 28, 29, 30, 30, 31, 31])
  with pytest.raises(ValueError, match='max_distance=4'):
    text_encoder.relative_position_bucket_table(2, 2, num_buckets=16, max_distance=4)
  with pytest.raises(ValueError, match='num_buckets=2'):
    text_encoder.relative_position_bucket_table(2, 2, num_buckets=2, max_distance=128)


# (96, 81) and (256, 441) are left out on purpose: at offset 54 (resp. 168), an exact boundary,
# float32 rounding puts the reference one bucket below the exact one (see
# relative_position_bucket_table). (10, 686) is one where a numpy float32 emulation would fail.
BUCKET_CONFIGS = [(32, 128), (128, 50), (32, 20), (64, 100), (16, 8), (8, 200), (4, 3), (6, 2),
                  (32, 64), (64, 128), (128, 128), (256, 300), (48, 1000), (10, 686)]


@pytest.mark.parametrize('num_buckets,max_distance', BUCKET_CONFIGS)
def test_bucket_table_equals_hugging_face(num_buckets, max_distance):
  torch, transformers = torch_and_transformers()
  attention = transformers.models.t5.modeling_t5.T5Attention
  for q_length, k_length in ((300, 300), (7, 300), (300, 5)):
    # As in T5Attention.compute_bias: key position minus query position.
    offsets = torch.arange(k_length)[None, :] - torch.arange(q_length)[:, None]
    expected = attention._relative_position_bucket(
        offsets, bidirectional=True, num_buckets=num_buckets, max_distance=max_distance)
    np.testing.assert_array_equal(
        text_encoder.relative_position_bucket_table(q_length, k_length, num_buckets, max_distance),
        expected.numpy())


def test_eager_equals_jit_equals_hugging_face(tmp_path):
  torch, transformers = torch_and_transformers()
  torch.manual_seed(0)
  # 128 buckets / max distance 50 put offsets +-40 on an exact boundary, where float32 buckets
  # computed on device can land one bucket low unless XLA constant-folds them.
  reference = transformers.T5EncoderModel(transformers.T5Config(
      vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
      relative_attention_num_buckets=128, relative_attention_max_distance=50,
      feed_forward_proj='gated-gelu', dropout_rate=0.0)).eval()
  reference.save_pretrained(str(tmp_path))
  section = t5_loader.text_encoder_config(str(tmp_path))
  assert (section.relative_buckets, section.relative_max_distance) == (128, 50)
  params = t5_loader.load_t5_params(str(tmp_path), section, progress=False)
  encoder = t5.T5Encoder(**{field: section[field] for field in t5_loader.CONFIG_FIELDS})
  ids = np.random.default_rng(0).integers(1, VOCAB, (2, 48)).astype(np.int32)
  ids[1, 44:] = 0
  mask = ids != 0

  def apply(params, ids, mask):
    return encoder.apply({'params': params}, ids, mask)[0]

  with jax.disable_jit():
    eager = np.asarray(apply(params, jnp.asarray(ids), jnp.asarray(mask)))
  jitted = np.asarray(jax.jit(apply)(params, ids, mask))
  with torch.no_grad():
    expected = reference(input_ids=torch.tensor(ids, dtype=torch.long),
                         attention_mask=torch.tensor(mask, dtype=torch.long)).last_hidden_state
  np.testing.assert_allclose(eager[mask], jitted[mask], atol=1e-5, rtol=0)
  np.testing.assert_allclose(eager[mask], expected.numpy()[mask], atol=1e-5, rtol=0)
  np.testing.assert_allclose(jitted[mask], expected.numpy()[mask], atol=1e-5, rtol=0)

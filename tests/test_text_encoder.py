"""Tests for itit.models.text_encoder: the learned T5-style encoder's two input paths."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from itit.models import text_encoder


@pytest.fixture(scope='module')
def encoder_and_params():
  config = tiny.get_config().model
  encoder = text_encoder.make_text_encoder(config, jnp.float32)
  ids = jnp.array([[5, 9, 3, 1, 0, 0], [7, 1, 0, 0, 0, 0]], jnp.int32)
  params = encoder.init(jax.random.PRNGKey(0), ids, deterministic=True)['params']
  return encoder, params, ids, config


def test_shapes_and_padding_mask(encoder_and_params):
  encoder, params, ids, config = encoder_and_params
  features, mask = encoder.apply({'params': params}, ids, deterministic=True)
  assert features.shape == (2, 6, config.text_encoder.learned.width)
  np.testing.assert_array_equal(mask, ids != 0)
  # Padding does not leak into real positions.
  longer = jnp.pad(ids, ((0, 0), (0, 3)))
  features_longer, _ = encoder.apply({'params': params}, longer, deterministic=True)
  np.testing.assert_allclose(features_longer[:, :6][mask], features[mask], atol=1e-5)


def test_one_hot_path_equals_ids_path(encoder_and_params):
  encoder, params, ids, config = encoder_and_params
  features, mask = encoder.apply({'params': params}, ids, deterministic=True)
  one_hot = jax.nn.one_hot(ids, config.text_vocab_size)
  features_dist, mask_dist = encoder.apply({'params': params}, one_hot, deterministic=True)
  np.testing.assert_array_equal(features_dist, features)
  np.testing.assert_array_equal(mask_dist, mask)


def test_gradient_reaches_distributions(encoder_and_params):
  encoder, params, ids, config = encoder_and_params
  one_hot = jax.nn.one_hot(ids, config.text_vocab_size)

  def objective(distributions):
    features, _ = encoder.apply({'params': params}, distributions, ids != 0, deterministic=True)
    return jnp.sum(features[:, 0] ** 2)

  grad = jax.grad(objective)(one_hot)
  assert grad.shape == one_hot.shape
  assert float(jnp.abs(grad[ids != 0]).max()) > 0


def test_bad_distribution_shape(encoder_and_params):
  encoder, params, _, _ = encoder_and_params
  with pytest.raises(ValueError, match='text_vocab_size'):
    encoder.apply({'params': params}, jnp.ones((1, 3, 5)), deterministic=True)


def test_relative_position_buckets():
  offsets = np.array([-200, -3, -1, 0, 1, 3, 7, 200])
  table = text_encoder.relative_position_bucket_table(201, 401, 32, 128)
  buckets = table[200, offsets + 200]  # key - query offsets from the query at position 200
  # Small offsets have their own buckets, positive offsets use the upper half, far ones share
  # the last bucket of their direction.
  np.testing.assert_array_equal(buckets[[2, 3, 4, 5]], [1, 0, 17, 19])
  assert buckets[0] == 15 and buckets[-1] == 31
  assert np.all((buckets >= 0) & (buckets < 32))

"""Tests for itit.models.layers: masks, attention with a KV cache, the pre-norm block."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from itit.models import layers


def test_git_mask_layout():
  # 2 prefix rows (features), 3 text rows; the second feature is padding.
  positions = jnp.arange(5)
  mask = layers.git_mask(positions, positions, 2, jnp.array([[True, False, True, True, True]]))
  expected = np.array([
      [1, 0, 0, 0, 0],  # features see valid features only
      [1, 0, 0, 0, 0],
      [1, 0, 1, 0, 0],  # text sees features and earlier text
      [1, 0, 1, 1, 0],
      [1, 0, 1, 1, 1],
  ], bool)
  np.testing.assert_array_equal(mask[0, 0], expected)
  # A decoding step (query at absolute position 3) gets the same row.
  step = layers.git_mask(jnp.array([3]), positions, 2, jnp.array([[1, 0, 1, 1, 1]], bool))
  np.testing.assert_array_equal(step[0, 0, 0], expected[3])


def test_causal_and_padding_masks():
  np.testing.assert_array_equal(layers.causal_mask(3)[0, 0], np.tril(np.ones((3, 3), bool)))
  assert layers.padding_mask(jnp.ones((2, 4), bool)).shape == (2, 1, 1, 4)


@pytest.fixture(scope='module')
def block_and_params():
  block = layers.TransformerBlock(num_heads=2, mlp_dim=16, dropout=0.1)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 8))
  params = block.init(jax.random.PRNGKey(1), x, deterministic=True)['params']
  return block, params, x


def test_block_padding_keys_have_no_effect(block_and_params):
  block, params, x = block_and_params
  valid = jnp.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
  mask = layers.padding_mask(valid)
  out = block.apply({'params': params}, x, mask, deterministic=True)
  assert out.shape == x.shape
  changed = x.at[0, 4:].set(100.0)
  out_changed = block.apply({'params': params}, changed, mask, deterministic=True)
  np.testing.assert_allclose(out_changed[0, :4], out[0, :4], atol=1e-6)
  # Dropout is active only when not deterministic.
  noisy = block.apply({'params': params}, x, mask, deterministic=False,
                      rngs={'dropout': jax.random.PRNGKey(2)})
  assert not np.allclose(noisy, out)


def test_block_params_are_annotated(block_and_params):
  block, _, x = block_and_params
  boxed = block.init(jax.random.PRNGKey(1), x, deterministic=True)['params']
  leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda v: hasattr(v, 'names'))
  assert leaves and all(len(leaf.names) == leaf.value.ndim for leaf in leaves)


def test_attention_kv_cache_matches_full_pass():
  attention = layers.Attention(num_heads=2)
  length, prefix = 7, 3
  x = jax.random.normal(jax.random.PRNGKey(0), (2, length, 8))
  positions = jnp.arange(length)
  full_mask = layers.git_mask(positions, positions, prefix)
  params = attention.init(jax.random.PRNGKey(1), x, full_mask)['params']
  full = attention.apply({'params': params}, x, full_mask)

  cache_length = length + 2  # room to spare: unwritten slots are masked out
  key_valid = jnp.arange(cache_length) < prefix + 1
  first_mask = layers.git_mask(jnp.arange(prefix + 1), jnp.arange(cache_length), prefix,
                               key_valid[None])
  out, variables = attention.apply({'params': params}, x[:, :prefix + 1], first_mask,
                                   decode=True, cache_length=cache_length, mutable=['cache'])
  outputs = [out]
  for position in range(prefix + 1, length):
    key_valid = jnp.arange(cache_length) <= position
    step_mask = layers.git_mask(jnp.array([position]), jnp.arange(cache_length), prefix,
                                key_valid[None])
    out, variables = attention.apply({'params': params, **variables},
                                     x[:, position:position + 1], step_mask, decode=True,
                                     mutable=['cache'])
    outputs.append(out)
  np.testing.assert_allclose(jnp.concatenate(outputs, axis=1), full, atol=1e-5)
  assert int(variables['cache']['cache_index']) == length


def test_first_decode_call_needs_cache_length():
  attention = layers.Attention(num_heads=2)
  with pytest.raises(ValueError, match='cache_length'):
    attention.init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 8)), decode=True)


@pytest.mark.parametrize('q_len,k_len,mask_kind', [(129, 129, 'padding'), (7, 10, 'full'),
                                                    (1, 9, 'none'), (8, 8, 'padding')])
def test_even_length_attention_matches_unpadded(q_len, k_len, mask_kind):
  """The cuDNN path's padding to even lengths changes neither outputs nor gradients (checked
  through XLA's implementation, which runs anywhere)."""
  rngs = jax.random.split(jax.random.PRNGKey(3), 4)
  query = jax.random.normal(rngs[0], (2, q_len, 3, 8))
  key = jax.random.normal(rngs[1], (2, k_len, 3, 8))
  value = jax.random.normal(rngs[2], (2, k_len, 3, 8))
  if mask_kind == 'padding':
    lengths = jnp.array([k_len, k_len - 3])
    mask = (jnp.arange(k_len) < lengths[:, None])[:, None, None, :]
  elif mask_kind == 'full':
    mask = jax.random.bernoulli(rngs[3], 0.7, (2, 1, q_len, k_len)).at[..., 0].set(True)
  else:
    mask = None

  def loss(fn, q, k, v):
    return (fn(q, k, v) * jnp.arange(8.0)).sum()

  def reference(q, k, v):
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation='xla')

  def padded(q, k, v):
    return layers.even_length_attention(q, k, v, mask, implementation='xla')

  # Jitted: op-by-op, the two gradients took ~30 s a case on 2 cores.
  def outputs_and_grads(fn):
    grads = jax.grad(lambda *a: loss(fn, *a), argnums=(0, 1, 2))
    return jax.jit(lambda *a: (fn(*a), grads(*a)))(query, key, value)

  out, grads = outputs_and_grads(padded)
  want_out, want = outputs_and_grads(reference)
  assert out.shape == (2, q_len, 3, 8)
  np.testing.assert_allclose(out, want_out, atol=1e-5, rtol=1e-5)
  for got, expected in zip(grads, want):
    assert np.isfinite(np.asarray(got)).all()
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('shape', [(64, 30, 256), (64, 30, 255)])  # packed and unpacked draws
def test_dropout_keeps_the_asked_fraction_and_scales_exactly(shape):
  rate = 0.1
  keep, keep_probability = layers.dropout_keep_mask(jax.random.PRNGKey(0), shape, rate)
  assert keep.shape == shape and keep.dtype == jnp.bool_
  assert keep_probability == 1 - round(rate * 2**16) / 2**16 and abs(keep_probability - 0.9) < 1e-5
  fraction = float(jnp.mean(keep))
  # Binomial standard deviation over ~490K elements is ~4e-4: 5 of them.
  assert abs(fraction - keep_probability) < 5 * np.sqrt(0.09 / keep.size)
  # Neighbours along the packed axis (two numbers from one 32-bit word) are independent.
  flat = np.asarray(keep, np.float32)[..., :shape[-1] // 2 * 2]
  assert abs(np.corrcoef(flat[..., 0::2].ravel(), flat[..., 1::2].ravel())[0, 1]) < 0.01
  other, _ = layers.dropout_keep_mask(jax.random.PRNGKey(1), shape, rate)
  assert 0.15 < float(jnp.mean(keep != other)) < 0.21  # 2 * 0.1 * 0.9 for independent masks

  x = jax.random.normal(jax.random.PRNGKey(2), shape)
  module = layers.Dropout(rate)
  y = module.apply({}, x, deterministic=False, rngs={'dropout': jax.random.PRNGKey(3)})
  kept = np.asarray(y) != 0
  np.testing.assert_allclose(np.asarray(y)[kept], np.asarray(x)[kept] / keep_probability,
                             rtol=1e-6)
  assert abs(kept.mean() - keep_probability) < 5 * np.sqrt(0.09 / keep.size)
  np.testing.assert_array_equal(module.apply({}, x, deterministic=True), x)
  # The gradient flows through the kept elements only, times 1 / keep probability.
  grad = jax.grad(lambda v: module.apply({}, v, deterministic=False,
                                         rngs={'dropout': jax.random.PRNGKey(3)}).sum())(x)
  np.testing.assert_allclose(np.asarray(grad), kept / keep_probability, rtol=1e-6)


def test_dropout_rate_zero_is_identity_and_bad_rates_are_refused():
  x = jnp.arange(8.0).reshape(2, 4)
  np.testing.assert_array_equal(
      layers.Dropout(0.0).apply({}, x, deterministic=False), x)  # needs no rng either
  keep, keep_probability = layers.dropout_keep_mask(jax.random.PRNGKey(0), (2, 4), 0.0)
  assert bool(jnp.all(keep)) and keep_probability == 1.0
  for rate in (-0.1, 1.0):
    with pytest.raises(ValueError, match='dropout rate must be in'):
      layers.dropout_keep_mask(jax.random.PRNGKey(0), (2, 4), rate)
  y = layers.Dropout(0.5).apply({}, jnp.ones((4, 8), jnp.bfloat16), deterministic=False,
                                rngs={'dropout': jax.random.PRNGKey(0)})
  assert y.dtype == jnp.bfloat16 and set(np.unique(np.asarray(y, np.float32))) <= {0.0, 2.0}

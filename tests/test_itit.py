"""Tests for itit.models.itit: shapes, the GIT mask, token dropping, the KV cache, sizes."""
import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from itit.models import itit
from itit.models.itit import ITIT

B = 2


@pytest.fixture(scope='module')
def setup(tiny_boxed_params, tiny_params):
  config = tiny.get_config().model
  model = ITIT(config)
  boxed, params = tiny_boxed_params, tiny_params
  rng = np.random.RandomState(0)
  n = config.image_grid ** 2
  image_tokens = jnp.asarray(rng.randint(0, config.image_vocab_size, (B, n)), jnp.int32)
  mask = jnp.asarray(np.stack([rng.permutation(n) < 11 for _ in range(B)]))
  text_ids = jnp.array([[5, 9, 3, 1, 0, 0, 0, 0], [7, 8, 1, 0, 0, 0, 0, 0]], jnp.int32)
  text_in = jnp.array([[0, 5, 9, 3, 1, 0, 0, 0], [0, 7, 8, 1, 0, 0, 0, 0]], jnp.int32)

  def apply(method, *args, **kwargs):
    kwargs.setdefault('deterministic', True)
    return model.apply({'params': params}, *args, method=method, **kwargs)

  return dict(config=config, model=model, boxed=boxed, params=params, apply=apply,
              image_tokens=image_tokens, mask=mask, text_ids=text_ids, text_in=text_in)


def _encode(s, **kwargs):
  features = s['apply'](ITIT.encode_text, s['text_ids'])
  return s['apply'](ITIT.encode, s['image_tokens'], s['mask'], features, s['text_ids'] != 0,
                    **kwargs)


def test_output_shapes(setup):
  c, apply = setup['config'], setup['apply']
  n, length = c.image_grid ** 2, c.max_text_len
  text_features = apply(ITIT.encode_text, setup['text_ids'])
  assert text_features.shape == (B, length, c.text_encoder.learned.width)
  empty, empty_mask = apply(ITIT.empty_text, B)
  assert empty.shape == (B, 1, c.text_encoder.learned.width)
  np.testing.assert_array_equal(empty_mask, True)
  encoded = _encode(setup)
  rows = n - c.num_dropped + length
  assert encoded.features.shape == (B, rows, c.width)
  assert encoded.valid.shape == (B, rows)
  assert encoded.image_positions.shape == (B, n - c.num_dropped)
  # Kept positions: every unmasked token plus some masked ones.
  for row in range(B):
    kept = set(np.asarray(encoded.image_positions[row]).tolist())
    assert set(np.flatnonzero(~setup['mask'][row]).tolist()) <= kept
  text_logits = apply(ITIT.decode_text, encoded, setup['text_in'])
  assert text_logits.shape == (B, length, c.text_vocab_size)
  assert text_logits.dtype == jnp.float32
  image_logits = apply(ITIT.decode_image, encoded)
  assert image_logits.shape == (B, n, c.image_vocab_size)
  assert image_logits.dtype == jnp.float32
  # The empty text is the default for encode, and padding it changes nothing on real rows.
  default = apply(ITIT.encode, setup['image_tokens'], setup['mask'])
  padded_features, padded_mask = apply(ITIT.empty_text, B, 4)
  padded = apply(ITIT.encode, setup['image_tokens'], setup['mask'], padded_features, padded_mask)
  np.testing.assert_allclose(padded.features[:, :default.features.shape[1]], default.features,
                             atol=1e-5)


def test_git_mask_in_text_decoder(setup):
  apply, text_in = setup['apply'], setup['text_in']
  encoded = _encode(setup)
  logits = apply(ITIT.decode_text, encoded, text_in)
  position = 3
  later_changed = text_in.at[:, position + 1:].set(17)
  logits_later = apply(ITIT.decode_text, encoded, later_changed)
  np.testing.assert_array_equal(logits_later[:, :position + 1], logits[:, :position + 1])
  assert not np.allclose(logits_later[:, position + 1:], logits[:, position + 1:])
  image_changed = setup['image_tokens'].at[:, :].set(
      (setup['image_tokens'] + 1) % setup['config'].image_vocab_size)
  text_features = apply(ITIT.encode_text, setup['text_ids'])
  encoded_changed = apply(ITIT.encode, image_changed, setup['mask'], text_features,
                          setup['text_ids'] != 0)
  logits_image = apply(ITIT.decode_text, encoded_changed, text_in)
  assert np.all(np.abs(logits_image[:, 0] - logits[:, 0]).max(-1) > 1e-4)


def test_dropping_equals_attention_masking(setup):
  dropped = _encode(setup)
  reference = _encode(setup, mask_dropped_in_attention=True)
  # Only the variant hides image rows; the dropping path's decoder skips the [MASK] substitution.
  assert reference.image_rows_hidden and not dropped.image_rows_hidden
  n = setup['config'].image_grid ** 2
  kept = dropped.image_positions
  np.testing.assert_array_equal(reference.valid[:, :n].sum(-1), kept.shape[1])
  reference_kept = jnp.take_along_axis(reference.features, kept[..., None], axis=1)
  image_rows = kept.shape[1]
  np.testing.assert_allclose(dropped.features[:, :image_rows], reference_kept, atol=1e-5)
  np.testing.assert_allclose(dropped.features[:, image_rows:], reference.features[:, n:],
                             atol=1e-5)
  np.testing.assert_allclose(setup['apply'](ITIT.decode_image, dropped),
                             setup['apply'](ITIT.decode_image, reference), atol=1e-5)


def test_no_dropping_at_inference_and_random_drop_in_training(setup):
  c = setup['config']
  encoded = _encode(setup, num_dropped=0)
  assert encoded.features.shape[1] == c.image_grid ** 2 + c.max_text_len
  first = _encode(setup, deterministic=False, rngs={'dropout': jax.random.PRNGKey(1)})
  second = _encode(setup, deterministic=False, rngs={'dropout': jax.random.PRNGKey(2)})
  assert not np.array_equal(first.image_positions, second.image_positions)


def test_image_distribution_path_equals_ids(setup):
  c = setup['config']
  one_hot = jax.nn.one_hot(setup['image_tokens'], c.image_vocab_size)
  text_features = setup['apply'](ITIT.encode_text, setup['text_ids'])
  from_ids = _encode(setup)
  from_one_hot = setup['apply'](ITIT.encode, one_hot, setup['mask'], text_features,
                                setup['text_ids'] != 0)
  np.testing.assert_array_equal(from_one_hot.features, from_ids.features)


def test_kv_cached_decoding_equals_full_pass(setup):
  model, params, text_in = setup['model'], setup['params'], setup['text_in']
  encoded = _encode(setup)
  full = setup['apply'](ITIT.decode_text, encoded, text_in)

  def step(variables, tokens):
    return model.apply(variables, encoded, tokens, deterministic=True, decode=True,
                       method=ITIT.decode_text, mutable=['cache'])

  # Prefill with two tokens, then one token per call.
  logits, cache = step({'params': params}, text_in[:, :2])
  outputs = [logits]
  for position in range(2, text_in.shape[1]):
    logits, cache = step({'params': params, **cache}, text_in[:, position:position + 1])
    outputs.append(logits)
  np.testing.assert_allclose(jnp.concatenate(outputs, axis=1), full, atol=1e-5)


def test_every_parameter_has_logical_axes(setup):
  leaves = jax.tree_util.tree_leaves_with_path(
      setup['boxed'], is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert len(leaves) > 20
  for path, leaf in leaves:
    assert isinstance(leaf, nn.Partitioned), f'{jax.tree_util.keystr(path)} has no axis names'
    assert len(leaf.names) == leaf.value.ndim and all(leaf.names), jax.tree_util.keystr(path)


@pytest.mark.parametrize('name, paper_total', [('vit_b', 221e6), ('vit_l', 487e6),
                                               ('vit_h', 868e6)])
def test_param_counts_match_paper(name, paper_total):
  """Totals without the frozen T5-XXL, with the projection of its 4096-d features."""
  config = importlib.import_module(f'configs.{name}').get_config()
  assert config.model.text_encoder.kind == 't5' and config.model.text_encoder.t5.width == 4096
  counts = itit.count_params(config)
  assert abs(counts['total_without_text_encoder'] / paper_total - 1) < 0.01, counts


def test_bfloat16_compute_keeps_float32_params_and_logits():
  config = tiny.get_config().model
  config.dtype = 'bfloat16'
  model = ITIT(config)
  inputs = itit.dummy_inputs(config, batch=1)

  def run(rng):
    params = nn.unbox(itit.init_params(config, rng))
    return params, model.apply({'params': params}, *inputs)

  params, (text_logits, image_logits) = jax.jit(run)(jax.random.PRNGKey(0))
  assert {x.dtype for x in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.float32)}
  assert text_logits.dtype == image_logits.dtype == jnp.float32
  assert np.isfinite(text_logits).all() and np.isfinite(image_logits).all()


def test_sincos_2d_position_init():
  config = tiny.get_config().model
  config.update(dict(image_position_init='sincos2d', image_position_init_scale=0.5))
  params = nn.unbox(jax.jit(lambda rng: itit.init_params(config, rng, batch=1))(
      jax.random.PRNGKey(0)))
  grid, width = config.image_grid, config.width
  quarter = width // 4
  frequencies = 1.0 / 10000 ** (np.arange(quarter) / quarter)
  for name in ('encoder_position', 'image_decoder_position'):
    table = np.asarray(params[name])
    assert table.shape == (grid * grid, width)
    for row, col in [(0, 0), (1, 2), (grid - 1, grid - 1)]:
      entry = table[row * grid + col]
      expected = 0.5 * np.concatenate([np.sin(row * frequencies), np.cos(row * frequencies),
                                       np.sin(col * frequencies), np.cos(col * frequencies)])
      np.testing.assert_allclose(entry, expected, atol=1e-6)
  # Same row -> same first half; same column -> same second half.
  table = np.asarray(params['encoder_position']).reshape(grid, grid, width)
  np.testing.assert_array_equal(table[2, 0, :width // 2], table[2, 3, :width // 2])
  np.testing.assert_array_equal(table[0, 1, width // 2:], table[3, 1, width // 2:])


def test_unknown_position_init_is_refused():
  config = tiny.get_config().model
  config.image_position_init = 'rope'
  with pytest.raises(ValueError, match="image_position_init must be 'normal' or 'sincos2d'"):
    itit.init_params(config, jax.random.PRNGKey(0), batch=1)


def test_drop_up_to_matches_training_drop_and_hides_every_masked_token_of_a_sparse_mask(setup):
  c = setup['config']
  n = c.image_grid ** 2
  # Dense mask (11 masked >= num_dropped): the same tokens hidden, the same decoder logits as
  # training's drop of num_dropped masked tokens.
  assert setup['mask'].sum(-1).min() >= c.num_dropped
  matched = _encode(setup, num_dropped=0, drop_up_to=c.num_dropped)
  trained = _encode(setup, mask_dropped_in_attention=True)
  np.testing.assert_array_equal(matched.valid, trained.valid)
  np.testing.assert_allclose(matched.features, trained.features, atol=1e-6)
  np.testing.assert_allclose(setup['apply'](ITIT.decode_image, matched),
                             setup['apply'](ITIT.decode_image, trained), atol=1e-6)
  # Sparse mask (2 masked < num_dropped): exactly the masked tokens are hidden.
  sparse = jnp.zeros((B, n), bool).at[:, jnp.array([3, 7])].set(True)
  features = setup['apply'](ITIT.encode_text, setup['text_ids'])
  encoded = setup['apply'](ITIT.encode, setup['image_tokens'], sparse, features,
                           setup['text_ids'] != 0, num_dropped=0, drop_up_to=c.num_dropped)
  np.testing.assert_array_equal(encoded.valid[:, :n], ~sparse)
  plain = setup['apply'](ITIT.encode, setup['image_tokens'], sparse, features,
                         setup['text_ids'] != 0, num_dropped=0)
  assert plain.valid[:, :n].all()
  assert not np.allclose(plain.features[:, :n], encoded.features[:, :n])
  with pytest.raises(ValueError, match='drop_up_to needs num_dropped=0'):
    _encode(setup, drop_up_to=c.num_dropped)

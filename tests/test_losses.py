"""Tests for itit.losses: cross-entropy vs optax, the I2T gradient scale, the paired losses."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import tiny
from itit.losses import common
from itit.losses import paired
from itit.models.itit import ITIT
from itit.models import masking


def test_label_smoothing_agrees_with_optax():
  rng = np.random.RandomState(0)
  logits = jnp.asarray(rng.randn(3, 5, 11), jnp.float32)
  targets = jnp.asarray(rng.randint(0, 11, (3, 5)))
  weights = jnp.asarray(rng.rand(3, 5) > 0.3)
  loss, accuracy = common.weighted_cross_entropy(logits, targets, weights, 0.1)
  smoothed = optax.smooth_labels(jax.nn.one_hot(targets, 11), 0.1)
  per_token = optax.softmax_cross_entropy(logits, smoothed)
  expected = jnp.sum(per_token * weights) / jnp.sum(weights)
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  correct = (jnp.argmax(logits, -1) == targets) & weights
  np.testing.assert_allclose(accuracy, correct.sum() / weights.sum(), rtol=1e-6)


def test_lm_loss_counts_eos_not_pad():
  text_ids = jnp.array([[5, 1, 0, 0]])
  logits = jax.nn.one_hot(jnp.array([[5, 1, 7, 7]]), 9) * 10.0
  loss, accuracy = common.lm_loss(logits, text_ids)
  assert float(accuracy) == 1.0
  # Only the two real positions count: changing the pad positions' logits changes nothing.
  other, _ = common.lm_loss(logits.at[:, 2:].set(0.0), text_ids)
  np.testing.assert_allclose(other, loss)
  np.testing.assert_array_equal(common.decoder_input(text_ids), [[0, 5, 1, 0]])


def test_masked_token_loss_ignores_unmasked_positions():
  logits = jnp.zeros((1, 4, 6)).at[0, 0, 2].set(5.0)
  tokens = jnp.array([[2, 3, 4, 5]])
  mask = jnp.array([[True, False, False, False]])
  loss, accuracy = common.masked_token_loss(logits, tokens, mask)
  np.testing.assert_allclose(loss, -jax.nn.log_softmax(logits[0, 0])[2], rtol=1e-6)
  assert float(accuracy) == 1.0


def test_scale_gradient():
  x = jnp.array([1.5, -2.0, 3.25])
  np.testing.assert_array_equal(common.scale_gradient(x, 0.1), x)
  grad = jax.grad(lambda v: jnp.sum(common.scale_gradient(v, 0.1) * jnp.array([1., 2., 3.])))(x)
  np.testing.assert_array_equal(grad, 0.1 * jnp.array([1., 2., 3.]))


@pytest.fixture(scope='module')
def setup(tiny_params):
  config = tiny.get_config()
  config.model.dropout = 0.0
  model = ITIT(config.model)
  rng = np.random.RandomState(0)
  batch = {
      'image_tokens': jnp.asarray(rng.randint(0, config.model.image_vocab_size, (3, 16)),
                                  jnp.int32),
      'text_ids': jnp.array([[5, 9, 3, 1, 0, 0, 0, 0], [7, 8, 1, 0, 0, 0, 0, 0],
                             [4, 4, 4, 4, 4, 4, 4, 1]], jnp.int32),
  }
  return config, model, tiny_params, batch


def test_paired_losses_run_and_report(setup):
  config, model, params, batch = setup
  rng = jax.random.PRNGKey(1)
  run = lambda fn, cfg: jax.jit(functools.partial(fn, model=model, config=cfg))(
      params, batch, rng)
  loss, metrics = run(paired.i2t_loss, config)
  assert set(metrics) == {'i2t_loss', 'i2t_token_accuracy', 'i2i_loss',
                          'i2i_masked_token_accuracy'}
  np.testing.assert_allclose(loss, metrics['i2t_loss'] + metrics['i2i_loss'], rtol=1e-6)
  # Near-uniform predictions at init: loss about log(vocab).
  assert abs(float(metrics['i2t_loss']) - np.log(config.model.text_vocab_size)) < 1.0
  loss, metrics = run(paired.t2i_loss, config)
  assert set(metrics) == {'t2i_loss', 't2i_masked_token_accuracy'}
  assert abs(float(loss) - np.log(config.model.image_vocab_size)) < 1.0
  config_no_i2i = config.copy_and_resolve_references()
  config_no_i2i.loss.i2i = False
  loss, metrics = run(paired.i2t_loss, config_no_i2i)
  assert set(metrics) == {'i2t_loss', 'i2t_token_accuracy'}


def test_t2i_mask_schedules(setup):
  config = setup[0]
  n, dropped = 16, config.model.num_dropped
  assert 0 < dropped
  rng = jax.random.PRNGKey(0)
  mask, num_dropped = common.t2i_image_mask(rng, 4000, n, config)
  counts = np.asarray(mask.sum(-1))
  assert num_dropped == dropped and counts.min() >= dropped  # the paper's: ratio >= 0.5
  cosine = config.copy_and_resolve_references()
  cosine.loss.t2i_mask_schedule = 'cosine'
  mask, num_dropped = common.t2i_image_mask(rng, 4000, n, cosine)
  counts = np.asarray(mask.sum(-1))
  # Every count from one masked token to all of them, at cosine-schedule frequencies.
  assert num_dropped == 0 and set(counts) == set(range(1, n + 1))
  ratio = masking.cosine_mask_ratio(jax.random.split(rng)[0], (4000,))
  np.testing.assert_array_equal(counts, np.clip(np.round(np.asarray(ratio) * n), 1, n))
  bad = config.copy_and_resolve_references()
  bad.loss.t2i_mask_schedule = 'linear'
  with pytest.raises(ValueError, match="t2i_mask_schedule='linear'"):
    common.t2i_image_mask(rng, 2, n, bad)


@pytest.mark.slow  # eager loss passes (~19 s idle); the cycle test runs the cosine schedule fast
def test_t2i_loss_with_cosine_schedule_drops_nothing(setup):
  """Under the cosine schedule the T2I encoder sees every position (masked ones as [MASK]), as
  at inference: the loss equals that reference, and differs from dropping num_dropped tokens
  (which a sparse mask cannot supply, so kept tokens would be dropped)."""
  config, model, params, batch = setup
  cosine = config.copy_and_resolve_references()
  cosine.loss.t2i_mask_schedule = 'cosine'
  rng = jax.random.PRNGKey(2)  # masks 4, 15 and 1 of the 16 tokens
  loss, metrics = paired.t2i_loss(params, batch, rng, model=model, config=cosine,
                                  deterministic=True)
  mask_rng = jax.random.split(rng, 4)[0]
  mask, _ = common.t2i_image_mask(mask_rng, 3, 16, cosine)

  def reference(num_dropped):
    apply = functools.partial(model.apply, {'params': params}, deterministic=True)
    features = apply(batch['text_ids'], method=ITIT.encode_text)
    encoded = apply(batch['image_tokens'], mask, features, batch['text_ids'] != 0,
                    num_dropped=num_dropped, method=ITIT.encode)
    logits = apply(encoded, method=ITIT.decode_image)
    return common.masked_token_loss(logits, batch['image_tokens'], mask,
                                    config.loss.label_smoothing)[0]

  np.testing.assert_allclose(loss, reference(0), rtol=1e-5)
  assert float(metrics['t2i_loss']) == float(loss)
  assert np.asarray(mask.sum(-1)).min() < config.model.num_dropped  # a sparse row exists
  assert abs(float(reference(config.model.num_dropped)) - float(loss)) > 1e-4


@pytest.mark.slow  # two compiled gradients (~12 s idle); the cotangent test checks the scale fast
def test_i2t_gradient_to_encoder_is_scaled(setup):
  """With the I2I term off, the encoder's gradient under scale 0.1 is 0.1x the unscaled one."""
  config, model, params, batch = setup

  def encoder_grads(scale):
    cfg = config.copy_and_resolve_references()
    cfg.loss.i2i = False
    cfg.loss.i2t_encoder_grad_scale = scale
    loss_fn = functools.partial(paired.i2t_loss, model=model, config=cfg)
    return jax.jit(jax.grad(lambda p: loss_fn(p, batch, jax.random.PRNGKey(2))[0]))(params)

  scaled, unscaled = encoder_grads(0.1), encoder_grads(1.0)
  for name in ('encoder', 'encoder_image_embedding', 'text_encoder'):
    for g_scaled, g_unscaled in zip(jax.tree_util.tree_leaves(scaled[name]),
                                    jax.tree_util.tree_leaves(unscaled[name])):
      np.testing.assert_allclose(g_scaled, 0.1 * g_unscaled, rtol=1e-4, atol=1e-9)
  assert float(jnp.abs(unscaled['encoder']['block_0']['mlp']['wo']['kernel']).max()) > 0
  # The decoder's own gradient is unscaled.
  for g_scaled, g_unscaled in zip(jax.tree_util.tree_leaves(scaled['text_decoder']),
                                  jax.tree_util.tree_leaves(unscaled['text_decoder'])):
    np.testing.assert_array_equal(g_scaled, g_unscaled)


def test_i2t_cotangent_at_encoder_output_is_exactly_scaled(setup):
  config, model, params, batch = setup
  image_tokens = batch['image_tokens']
  mask = jnp.arange(16)[None].repeat(3, 0) < 10
  encoded = model.apply({'params': params}, image_tokens, mask, deterministic=True,
                        method=ITIT.encode)

  def caption_loss(features, scale):
    scaled = encoded.replace(features=common.scale_gradient(features, scale))
    logits = model.apply({'params': params}, scaled, common.decoder_input(batch['text_ids']),
                         deterministic=True, method=ITIT.decode_text)
    return common.lm_loss(logits, batch['text_ids'], 0.1)[0]

  scaled = jax.grad(caption_loss)(encoded.features, 0.1)
  unscaled = jax.grad(caption_loss)(encoded.features, 1.0)
  np.testing.assert_array_equal(scaled, 0.1 * unscaled)
  assert float(jnp.abs(unscaled).max()) > 0

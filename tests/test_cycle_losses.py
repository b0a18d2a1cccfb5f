"""Tests for itit.losses.cycles: estimators, gradient flow of the cycles, table 2 presets, a step.

Gradients run eagerly (no jit): the variants share their per-operation compilations, which costs
far less than compiling each variant's whole graph on a shared CPU.
"""
import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import base
from configs import tiny
from itit.losses import baselines
from itit.losses import common
from itit.losses import cycles
from itit.losses import paired
from itit.losses import registry
from itit.models import itit
from itit.models.itit import ITIT
from itit.trainer import loop
from itit.trainer import optimizer as optimizer_lib
from itit.trainer import state as state_lib
from itit.trainer import step as step_lib

TEXTS = np.array([[5, 9, 3, 1, 0, 0, 0, 0], [7, 8, 1, 0, 0, 0, 0, 0],
                  [4, 4, 4, 4, 4, 4, 4, 1], [6, 12, 1, 0, 0, 0, 0, 0]], np.int32)


def test_straight_through_is_one_hot_forward_and_softmax_backward():
  logits = jnp.asarray(np.random.RandomState(0).randn(3, 5, 7), jnp.float32)
  hard = jax.nn.one_hot(jnp.argmax(logits, -1), 7)
  np.testing.assert_array_equal(cycles.straight_through(logits), hard)
  cotangent = jnp.asarray(np.random.RandomState(1).randn(3, 5, 7), jnp.float32)
  _, st_vjp = jax.vjp(cycles.straight_through, logits)
  _, softmax_vjp = jax.vjp(jax.nn.softmax, logits)
  np.testing.assert_allclose(st_vjp(cotangent)[0], softmax_vjp(cotangent)[0], rtol=1e-6,
                             atol=1e-7)


def test_gumbel_straight_through_samples_and_has_softmax_jvp():
  logits = jnp.asarray(np.random.RandomState(0).randn(4, 6, 9), jnp.float32)
  rng = jax.random.PRNGKey(3)
  noisy = logits + 1.0 * jax.random.gumbel(rng, logits.shape, jnp.float32)
  estimate = lambda l: cycles.gumbel_straight_through(l, rng, 1.0)
  np.testing.assert_array_equal(estimate(logits), jax.nn.one_hot(jnp.argmax(noisy, -1), 9))
  # The noise moves the argmax somewhere: the forward value is a sample, not the argmax.
  assert np.any(np.argmax(noisy, -1) != np.argmax(logits, -1))
  tangent = jnp.asarray(np.random.RandomState(1).randn(*logits.shape), jnp.float32)
  _, st_tangent = jax.jvp(estimate, (logits,), (tangent,))
  _, soft_tangent = jax.jvp(lambda l: jax.nn.softmax(l + (noisy - logits)), (logits,), (tangent,))
  np.testing.assert_allclose(st_tangent, soft_tangent, rtol=1e-5, atol=1e-7)
  zero_strength = cycles.gumbel_straight_through(logits, rng, 0.0)
  np.testing.assert_array_equal(zero_strength, jax.nn.one_hot(jnp.argmax(logits, -1), 9))


@pytest.fixture(scope='module')
def setup(tiny_params):
  config = tiny.get_config('row14')
  config.model.dropout = 0.0
  model = ITIT(config.model)
  images = np.random.RandomState(0).randint(0, config.model.image_vocab_size, (4, 16))
  return config, model, tiny_params, jnp.asarray(images, jnp.int32), jnp.asarray(TEXTS)


def part_grads(grads):
  """Gradient leaves grouped by model part (itit.PARTS): part -> flat float array."""
  parts = {p: [] for p in itit.PARTS}
  for name, subtree in grads.items():
    parts[itit.part_of(name)] += [np.ravel(x) for x in jax.tree.leaves(subtree)]
  return {p: np.concatenate(v) for p, v in parts.items()}


def cycle_grads(cycle_fn, config, model, params, inputs, **switches):
  """Eager gradients of a cycle loss under config overrides `switches` ('constant_first_pass':
  the first pass's encoder reads stop_gradient(params) instead of stopping at its output)."""
  config = copy.deepcopy(config)
  constant_first_pass = switches.pop('constant_first_pass', False)
  for key, value in switches.items():
    section, field = key.split('__')
    config[section][field] = value

  def loss(p):
    first = jax.lax.stop_gradient(p) if constant_first_pass else None
    return cycle_fn(p, *inputs, jax.random.PRNGKey(7), model=model, config=config,
                    first_pass_params=first)[0]

  return part_grads(jax.grad(loss)(params))


def check_cycle_gradient_flow(cycle_fn, text_or_image_loss, full, half, trained_decoder, config,
                              model, params, inputs):
  grad_of = functools.partial(cycle_grads, cycle_fn, config, model, params, inputs)
  with_stop = grad_of(**{text_or_image_loss: full})
  halved = grad_of(**{text_or_image_loss: half})
  without_stop = grad_of(**{text_or_image_loss: full, 'cycle__stop_first_encoder_grad': False})
  constant_first = grad_of(**{text_or_image_loss: full, 'cycle__stop_first_encoder_grad': False,
                              'constant_first_pass': True})
  # Full cycle: gradient reaches the decoder that produced the pseudo pair's reconstruction.
  assert np.abs(with_stop[trained_decoder]).max() > 0
  # Half cycle: it stops at the argmax.
  np.testing.assert_array_equal(halved[trained_decoder], 0.0)
  # The stop changes the encoder's gradient, and equals treating the first pass as a constant.
  assert not np.allclose(with_stop['encoder'], without_stop['encoder'], rtol=1e-3, atol=1e-8)
  for part in itit.PARTS:
    np.testing.assert_allclose(with_stop[part], constant_first[part], rtol=1e-5, atol=1e-8,
                               err_msg=part)


@pytest.mark.slow  # ~35 s of eager gradients; the fixed-captioner test checks T2I2T's flow fast
def test_t2i2t_gradient_flow(setup):
  config, model, params, images, texts = setup
  check_cycle_gradient_flow(cycles.t2i2t_cycle, 'loss__unpaired_text_loss', 't2i2t',
                            't2i2t_half', 'image_decoder', config, model, params,
                            (texts, images))


def test_t2i2t_with_a_fixed_captioner_trains_only_t2i_through_it(setup):
  """cycle.t2i2t_trains_captioner=False: the captioning pass's parameters get no gradient; what
  learns is T2I's image decoder and the image-token table tied to its head, the decoder with
  the same gradient as in the paper's cycle (it arrives through Ĩ either way)."""
  config, model, params, images, texts = setup

  def grads(**cycle_settings):
    cfg = copy.deepcopy(config)
    cfg.cycle.update(cycle_settings)
    loss = lambda p: cycles.t2i2t_cycle(p, texts, images, jax.random.PRNGKey(7), model=model,
                                        config=cfg)[0]
    return {name: np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])
            for name, tree in jax.grad(loss)(params).items()}

  paper, critic = grads(), grads(t2i2t_trains_captioner=False)
  learning = {name for name, g in critic.items() if np.abs(g).max() > 0}
  assert learning == {name for name in params if itit.part_of(name) == 'image_decoder'} | {
      'encoder_image_embedding'}
  assert np.abs(paper['encoder']).max() > 0 and np.abs(paper['text_decoder']).max() > 0
  for name in learning - {'encoder_image_embedding'}:
    np.testing.assert_allclose(critic[name], paper[name], rtol=1e-5, atol=1e-8, err_msg=name)


def test_cycle_encoder_grad_scale_scales_only_the_joint_encoders_own_gradient(setup):
  """cycle.encoder_grad_scale: the loss is the same; every part but the joint encoder gets the
  paper's gradient; the encoder's own parameters get `scale` times theirs (none at 0), except
  the image-token table's share through the image decoder's head."""
  config, model, params, images, texts = setup

  def grads(cycle_fn, inputs, scale):
    cfg = copy.deepcopy(config)
    cfg.cycle.encoder_grad_scale = scale
    loss = lambda p: cycle_fn(p, *inputs, jax.random.PRNGKey(7), model=model, config=cfg)[0]
    value, grad = jax.value_and_grad(loss)(params)
    return float(value), {name: np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])
                          for name, tree in grad.items()}

  encoder = {name for name in params if itit.part_of(name) == 'encoder'}
  own = encoder - {'encoder_image_embedding'}  # the table is also the image decoder's head
  for cycle_fn, inputs, scales in ((cycles.i2t2i_cycle, (images, texts), (1.0, 0.5, 0.0)),
                                   (cycles.t2i2t_cycle, (texts, images), (1.0, 0.0))):
    results = {scale: grads(cycle_fn, inputs, scale) for scale in scales}
    paper_loss, paper = results[1.0]
    _, none = results[0.0]
    assert {scale: loss for scale, (loss, _) in results.items()} == dict.fromkeys(scales,
                                                                                 paper_loss)
    assert all(np.abs(paper[name]).max() > 0 for name in own), cycle_fn.__name__
    for name in params:
      if name in own:
        np.testing.assert_array_equal(none[name], 0.0, err_msg=name)
      elif name not in encoder:
        np.testing.assert_allclose(none[name], paper[name], rtol=1e-5, atol=1e-8, err_msg=name)
    if 0.5 in results:
      half = results[0.5][1]
      for name in encoder:  # linear in the scale: the head's share plus scale x the encoder's
        np.testing.assert_allclose(half[name], (paper[name] + none[name]) / 2, rtol=1e-4,
                                   atol=1e-7, err_msg=name)
      # I2T2I's reconstruction reads the table through the image decoder's head as well.
      assert np.abs(none['encoder_image_embedding']).max() > 0


def test_i2t2i_gradient_flow(setup):
  config, model, params, images, texts = setup
  check_cycle_gradient_flow(cycles.i2t2i_cycle, 'loss__unpaired_image_loss', 'i2t2i',
                            'i2t2i_half', 'text_decoder', config, model, params,
                            (images, texts))


def test_cycles_reconstruct_images_with_the_t2i_mask_schedule(setup, monkeypatch):
  """Each cycle's T2I reconstruction (T2I2T's first pass, I2T2I's second) takes its mask and
  encoder drop from `common.t2i_image_mask`, so loss.t2i_mask_schedule reaches it."""
  config, model, params, images, texts = setup
  cosine = copy.deepcopy(config)
  cosine.loss.t2i_mask_schedule = 'cosine'
  calls = []
  original = common.t2i_image_mask

  def spy(*args):
    mask, num_dropped = original(*args)
    calls.append((int(mask.sum(-1).min()), num_dropped))
    return mask, num_dropped

  monkeypatch.setattr(common, 't2i_image_mask', spy)
  for cycle_fn, inputs in ((cycles.t2i2t_cycle, (texts, images)),
                           (cycles.i2t2i_cycle, (images, texts))):
    values = {}
    for name, cfg in (('paper', config), ('cosine', cosine)):
      calls.clear()
      values[name] = float(cycle_fn(params, *inputs, jax.random.PRNGKey(3), model=model,
                                    config=cfg)[0])
      assert len(calls) == 1 and np.isfinite(values[name])
      expected = 0 if name == 'cosine' else config.model.num_dropped
      assert calls[0][1] == expected and calls[0][0] >= max(expected, 1)
    assert values['paper'] != values['cosine']


def test_pseudo_image_synthesis_decodes_with_the_cycle_settings(setup):
  """I' is `generate_images` at config.cycle's steps, guidance and both temperatures."""
  from itit.decoding import generate
  config, model, params, _, texts = setup
  config = copy.deepcopy(config)
  config.cycle.update(dict(synthesis_steps=3, guidance_scale=0.0, sample_temperature=0.05))
  rng = jax.random.PRNGKey(11)
  pseudo = cycles.synthesize_pseudo_images(params, texts, rng, model=model, config=config)
  expected = generate.generate_images(params, texts, rng, model=model, num_steps=3,
                                      guidance_scale=0.0, temperature=config.cycle.temperature,
                                      sample_temperature=0.05)
  np.testing.assert_array_equal(pseudo, expected)
  assert pseudo.shape == (4, config.model.image_grid ** 2) and pseudo.dtype == jnp.int32
  # Near the mode every position takes its most likely code given the text, so the same
  # text decodes to the same tokens under another key; at temperature 1 (the default) it varies.
  again = cycles.synthesize_pseudo_images(params, texts, jax.random.PRNGKey(12), model=model,
                                          config=config)
  config.cycle.sample_temperature = 1.0
  hot = [cycles.synthesize_pseudo_images(params, texts, jax.random.PRNGKey(k), model=model,
                                         config=config) for k in (11, 12)]
  assert np.mean(np.asarray(pseudo) == np.asarray(again)) > np.mean(
      np.asarray(hot[0]) == np.asarray(hot[1]))


def test_t2t_trains_the_text_decoder_only_and_i2i_never_it(setup):
  config, model, params, images, texts = setup
  rng = jax.random.PRNGKey(2)
  t2t = lambda p: baselines.t2t_loss(p, {'text_ids': texts}, rng, model=model,
                                        config=config)[0]
  i2i = lambda p: paired.i2i_loss(p, {'image_tokens': images}, rng, model=model,
                                        config=config)[0]
  t2t_grads, i2i_grads = part_grads(jax.grad(t2t)(params)), part_grads(jax.grad(i2i)(params))
  assert np.abs(t2t_grads['text_decoder']).max() > 0
  for part in ('text_encoder', 'encoder', 'image_decoder'):
    np.testing.assert_array_equal(t2t_grads[part], 0.0, err_msg=part)
  assert np.abs(i2i_grads['image_decoder']).max() > 0
  np.testing.assert_array_equal(i2i_grads['text_decoder'], 0.0)


def test_table2_presets_select_losses_and_streams():
  expected = {
      1: {'t2i': 'paired', 'i2i': 'paired'},
      2: {'i2t': 'paired'},
      3: {'t2i': 'paired', 'i2t': 'paired'},
      5: {'t2t': 'unpaired_text'},
      6: {'unpaired_i2i': 'unpaired_image'},
      7: {'t2t': 'unpaired_text', 'unpaired_i2i': 'unpaired_image'},
  }
  for row in (8, 9, 10, 11, 12, 13, 14):
    has_text, has_image = base.TABLE2_ROWS[row][2] != 'none', base.TABLE2_ROWS[row][3] != 'none'
    expected[row] = ({'t2i2t': 'unpaired_text'} if has_text else {}) | (
        {'i2t2i': 'unpaired_image'} if has_image else {})
  for row, row_losses in expected.items():
    config = tiny.get_config(f'row{row}')
    if row > 3:
      row_losses = {'t2i': 'paired', 'i2t': 'paired', **row_losses}
    fns = registry.make_loss_fns(config, ITIT(config.model))
    assert {name: stream for name, (stream, _) in fns.items()} == row_losses, row
  assert tiny.get_config('row10').loss.unpaired_text_loss == 't2i2t_half'
  assert tiny.get_config('row13').data.unpaired_text == 'paired'
  assert tiny.get_config('row14').data.unpaired_text == 'unpaired_text'
  with pytest.raises(ValueError, match='row 4'):
    tiny.get_config('row4')
  config = tiny.get_config('row3')
  config.loss.unpaired_text_loss = 'cycle'
  with pytest.raises(ValueError, match='unpaired_text_loss'):
    registry.make_loss_fns(config, ITIT(config.model))


def test_loss_weights_scale_the_loss_not_the_metrics(setup):
  config, model, params, _, texts = setup
  config = copy.deepcopy(config)
  config.loss.unpaired_text_loss = 't2t'
  config.loss.weights.t2t = 2.5
  _, fn = registry.make_loss_fns(config, model)['t2t']
  loss, metrics = fn(params, {'text_ids': texts}, jax.random.PRNGKey(0))
  np.testing.assert_allclose(loss, 2.5 * metrics['t2t_loss'], rtol=1e-6)


def row14_step_inputs(config, params):
  """A batch of all three streams, the optimizer, and a fresh train state at a given step."""
  rng = np.random.RandomState(1)
  image_batch = lambda: rng.randint(0, config.model.image_vocab_size, (4, 16)).astype(np.int32)
  batch = {'paired': {'image_tokens': image_batch(), 'text_ids': TEXTS},
           'unpaired_image': {'image_tokens': image_batch()},
           'unpaired_text': {'text_ids': TEXTS[::-1].copy()}}
  tx, schedule = optimizer_lib.make_optimizer(config.optimizer, config.total_steps)
  state_at = lambda step: state_lib.TrainState(
      step=jnp.asarray(step, jnp.int32), params=params, opt_state=tx.init(params),
      rng=jax.random.PRNGKey(0), first_nonfinite_step=jnp.full((), -1, jnp.int32),
      skipped_steps=jnp.zeros((), jnp.int32))
  return batch, tx, schedule, state_at


@pytest.mark.slow  # ~25 s more: compiles the synthesis loops and the optimizer update
def test_row14_train_step_runs_with_all_losses_finite(setup):
  config, model, params, _, _ = setup
  batch, tx, schedule, state_at = row14_step_inputs(config, params)
  loss_fns = registry.make_loss_fns(config, model)
  new_state, metrics = step_lib.train_step(state_at(0), batch, loss_fns=loss_fns, tx=tx,
                                        schedule=schedule, nan_policy='halt')
  for key in ('t2i/t2i_loss', 'i2t/i2t_loss', 'i2t/i2i_loss', 't2i2t/t2i2t_loss',
              'i2t2i/i2t2i_loss', 'loss', 'l2_grads'):
    assert np.isfinite(metrics[key]) and metrics[key] > 0, key
  assert 0.0 <= metrics['i2t2i/pseudo_caption_eos_fraction'] <= 1.0
  assert int(new_state.first_nonfinite_step) == -1 and int(new_state.step) == 1


@pytest.mark.slow  # ~45 s: compiles two train steps, one with the synthesis loops
def test_cycle_start_step_skips_the_cycles_until_it_then_trains_all_losses(setup):
  config, model, params, _, _ = setup
  batch, tx, schedule, state_at = row14_step_inputs(config, params)
  loss_fns = registry.make_loss_fns(config, model)
  paired_only = {k: v for k, v in loss_fns.items() if k not in registry.CYCLE_LOSSES}
  jit_step = lambda fns, start: jax.jit(functools.partial(
      step_lib.train_step, loss_fns=fns, tx=tx, schedule=schedule, nan_policy='halt',
      cycle_start_step=start))
  warm_up = jit_step(loss_fns, start=3)  # one program: the step number is data
  leaves = lambda state: jax.tree.leaves(state.params)
  before, before_metrics = warm_up(state_at(2), batch)
  assert before_metrics['t2i2t/t2i2t_loss'] == 0 and before_metrics['i2t2i/i2t2i_loss'] == 0
  assert before_metrics['i2t2i/pseudo_caption_agreement'] == 0
  assert before_metrics['t2i/t2i_loss'] > 0
  reference, reference_metrics = jit_step(paired_only, start=0)(state_at(2), batch)
  for x, y in zip(leaves(before), leaves(reference)):  # the skipped cycles add nothing
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(before_metrics['l2_grads'], reference_metrics['l2_grads'],
                             rtol=1e-5)
  after, after_metrics = warm_up(state_at(3), batch)
  assert after_metrics['t2i2t/t2i2t_loss'] > 0 and after_metrics['i2t2i/i2t2i_loss'] > 0
  np.testing.assert_allclose(after_metrics['t2i/t2i_loss'], before_metrics['t2i/t2i_loss'],
                             rtol=1e-6)  # same batch and keys; only the cycles joined
  # From the start step the cycles' gradients join the paired ones.
  assert not np.isclose(after_metrics['l2_grads'], reference_metrics['l2_grads'], rtol=1e-3)


def test_reuse_keeps_each_pseudo_pair_for_reuse_steps():
  """The train step's reuse logic with stand-in cycle halves (no model): a pair records the
  step's unpaired texts, the parameter it was made with and its key; the loss reads it."""
  def make_pair(params, batch, rng):
    key_bits = jax.random.randint(rng, (4, 1), 0, 1000)
    return {'text_ids': batch['text_ids'],
            'pseudo_image': jnp.concatenate(
                [jnp.round(100 * params['w']).astype(jnp.int32) * jnp.ones((4, 1), jnp.int32),
                 key_bits], axis=1)}

  def on_pair(params, pair, rng):
    del rng
    return params['w'] * jnp.sum(pair['text_ids']), {'texts': jnp.sum(pair['text_ids'])}

  def whole_cycle(params, batch, rng):  # what reuse = 1 runs: the two halves in one
    return on_pair(params, make_pair(params, batch, rng), rng)

  tx = optax.sgd(1e-3)
  params = {'w': jnp.asarray(1.0)}
  run = lambda reuse, start, batches: run_steps(reuse, start, batches, tx, params, make_pair,
                                                on_pair, whole_cycle)
  texts = [np.full((4, 2), k + 1, np.int32) for k in range(5)]  # step k's unpaired texts
  # reuse 2 from step 0: steps 0, 2, 4 make pairs of their own texts; 1 and 3 reuse them.
  states, metrics = run(2, 0, texts)
  assert [int(m['t2i2t/texts']) for m in metrics] == [8 * t for t in (1, 1, 3, 3, 5)]
  pair_after = [np.asarray(s.pseudo_pairs['t2i2t']['pseudo_image']) for s in states]
  np.testing.assert_array_equal(pair_after[1], pair_after[0])  # kept, not remade
  assert not np.array_equal(pair_after[2], pair_after[1])
  # A fresh step synthesizes with the step's parameters and the key reuse = 1 would draw.
  online_states, online_metrics = run(1, 0, texts)
  assert online_states[0].pseudo_pairs is None
  np.testing.assert_allclose(states[0].params['w'], online_states[0].params['w'], rtol=0)
  np.testing.assert_allclose(states[2].params['w'] - states[1].params['w'],
                             online_states[2].params['w'] - online_states[1].params['w'],
                             rtol=1e-6)  # same gradient at a fresh step: 8 * 3 * lr
  step_rng = jax.random.split(states[1].rng)[1]
  expected = make_pair(states[1].params, {'text_ids': texts[2]},
                       step_lib.loss_rng(step_rng, 't2i2t'))
  np.testing.assert_array_equal(pair_after[2], expected['pseudo_image'])
  assert [int(m['t2i2t/texts']) for m in online_metrics] == [8 * t for t in range(1, 6)]
  # With cycles from step 1, the pairs are made at steps 1 and 3 (every reuse-th step from the
  # start), never before it.
  _, metrics = run(2, 1, texts)
  assert [int(m['t2i2t/texts']) for m in metrics] == [0, 16, 16, 32, 32]
  with pytest.raises(ValueError, match=r"reuse=2 needs cycle_parts for the cycles"):
    step_lib.train_step(states[0], {'unpaired_text': {'text_ids': texts[0]}},
                        loss_fns={'t2i2t': ('unpaired_text', whole_cycle)}, tx=tx,
                        schedule=lambda step: 1e-3, nan_policy='halt', reuse=2)


def run_steps(reuse, start, batches, tx, params, make_pair, on_pair, whole_cycle):
  """States and metrics after each of len(batches) jitted steps with the stand-in cycle."""
  pairs = None
  if reuse > 1:
    pairs = {'t2i2t': {'text_ids': jnp.zeros((4, 2), jnp.int32),
                       'pseudo_image': jnp.zeros((4, 2), jnp.int32)}}
  state = state_lib.TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
      rng=jax.random.PRNGKey(0), first_nonfinite_step=jnp.full((), -1, jnp.int32),
      skipped_steps=jnp.zeros((), jnp.int32), pseudo_pairs=pairs)
  step = jax.jit(functools.partial(
      step_lib.train_step, loss_fns={'t2i2t': ('unpaired_text', whole_cycle)}, tx=tx,
      schedule=lambda step: 1e-3, nan_policy='halt', cycle_start_step=start,
      cycle_parts={'t2i2t': (make_pair, on_pair)}, reuse=reuse))
  states, metrics = [], []
  for texts in batches:
    state, step_metrics = step(state, {'unpaired_text': {'text_ids': texts}})
    states.append(state)
    metrics.append(step_metrics)
  return states, metrics


def test_run_summary_states_the_reuse():
  config = tiny.get_config('row14')
  names = registry.enabled_losses(config)
  counts = itit.count_params(config)
  assert 'pseudo pair serves' not in loop.run_summary(config, names, counts, {'data': 1})
  config.cycle.reuse = 3
  assert registry.pseudo_pair_shapes(config) == {
      'i2t2i': {'image_tokens': (4, 16), 'pseudo_text': (4, 8)},
      't2i2t': {'text_ids': (4, 8), 'pseudo_image': (4, 16)}}
  summary = loop.run_summary(config, names, counts, {'data': 1})
  assert 'cycles from step 0; each pseudo pair serves 3 steps' in summary


@pytest.mark.slow  # compiles a train step (~29 s idle); the reuse tests above run fast
def test_reuse_without_a_cycle_loss_keeps_no_pairs():
  # Row 3 with cycle.reuse set (e.g. a sweep's shared override): nothing to keep, no error.
  config = tiny.get_config('row3')
  config.cycle.reuse = 2
  tx, schedule = optimizer_lib.make_optimizer(config.optimizer, config.total_steps)
  state = state_lib.init_train_state(config, tx, state_lib.seed_key_data(config))
  assert state.pseudo_pairs is None and registry.make_cycle_parts(config, None) == {}
  loss = lambda params, batch, rng: (jax.tree.leaves(params)[0].sum() * 0.0, {})
  new_state, _ = step_lib.train_step(
      state, {'paired': {}}, loss_fns={'t2i': ('paired', loss)}, tx=tx, schedule=schedule,
      nan_policy='halt', cycle_parts={}, reuse=2)
  assert new_state.pseudo_pairs is None and int(new_state.step) == 1

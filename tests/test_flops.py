"""itit.models.flops against hand-computed values and against XLA's own count (`cost_analysis`).

XLA counts every floating-point op (norms, softmax, GELU, the Adafactor-free loss arithmetic),
the analytic count only matmuls, so the analytic count is LOWER: by 6-11% on the tiny config
(width 32, where elementwise work is a large share), by under 3% forward and under 9% for a
train step at width 128 (the slow tests). XLA counts a while loop's body once, so the samplers
are compared at one decoding step.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from benchmarks import benchmark
from benchmarks import cycle_flops
from configs import base
from configs import tiny
from configs import vit_b
from itit.decoding import generate
from itit.losses import registry
from itit.models import flops
from itit.models import itit as itit_model
from itit.models.itit import ITIT


def xla_flops(fn, *args):
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return cost['flops']


def widened(config, factor):
  m = config.model
  for key in ('width', 'mlp_dim', 'text_decoder_width', 'text_decoder_mlp_dim'):
    m[key] *= factor
  m.text_encoder.learned.width *= factor
  m.text_encoder.learned.mlp_dim *= factor
  return config


def setup(config):
  model = ITIT(config.model)
  params = nn.unbox(jax.jit(lambda rng: itit_model.init_params(config.model, rng))(
      jax.random.PRNGKey(0)))
  return model, params


def test_block_by_hand():
  # batch 2, 5 queries over 7 keys, width 8, 2 heads of 4, mlp 16:
  # q,k,v,out: 4 * 2*(2*5)*8*8 = 5120; scores + values: 2 * 2*2*2*5*7*4 = 2240;
  # MLP: 2 * 2*(2*5)*8*16 = 5120 (gated: 3 matmuls, 7680).
  assert flops.block(2, 5, 7, 8, 2, 4, 16) == 5120 + 2240 + 5120
  assert flops.block(2, 5, 7, 8, 2, 4, 16, gated=True) == 5120 + 2240 + 7680
  assert flops.stack(2, 5, 7, 8, 3, 2, 16) == 3 * (5120 + 2240 + 5120)


def test_mfu():
  out = flops.mfu(989e12 * 0.5 * 8, 1.0, 8, 'NVIDIA H100 80GB HBM3')
  assert out['tflops_per_device'] == pytest.approx(494.5)
  assert out['mfu'] == pytest.approx(0.5)
  assert 'mfu' not in flops.mfu(1e12, 1.0, 1, 'cpu')
  assert flops.peak_flops('TPU v4') == 275e12
  assert flops.peak_flops('TPU v5p') == 459e12
  assert flops.peak_flops('NVIDIA A100-SXM4-40GB') == 312e12


@pytest.fixture(scope='module')
def tiny_model(tiny_params):
  config = tiny.get_config()
  return config, ITIT(config.model), tiny_params


def test_parts_match_xla_on_tiny(tiny_model):
  config, model, params = tiny_model
  m = config.model
  batch, n, length = 4, m.image_grid ** 2, m.max_text_len
  kept = n - m.num_dropped
  images = jnp.zeros((batch, n), jnp.int32)
  text = jnp.ones((batch, length), jnp.int32)
  mask = jnp.broadcast_to(jnp.arange(n) < m.num_dropped, (batch, n))

  def apply(method, p, *args):
    return model.apply({'params': p}, *args, deterministic=True, method=method)

  features = apply(ITIT.encode_text, params, text)
  encoded = model.apply({'params': params}, images, mask, features, text != 0,
                        deterministic=True, method=ITIT.encode)
  pairs = {
      'text_encoder': (xla_flops(functools.partial(apply, ITIT.encode_text), params, text),
                       flops.text_encoder(m, batch, length)),
      'encoder': (xla_flops(lambda p, f: model.apply({'params': p}, images, mask, f, text != 0,
                                                     deterministic=True, method=ITIT.encode),
                            params, features),
                  flops.encoder(m, batch, kept, length)),
      'text_decoder': (xla_flops(functools.partial(apply, ITIT.decode_text), params, encoded,
                                 text),
                       flops.text_decoder(m, batch, kept + length, length)),
      'image_decoder': (xla_flops(functools.partial(apply, ITIT.decode_image), params, encoded),
                        flops.image_decoder(m, batch)),
  }
  for name, (measured, analytic) in pairs.items():
    assert 0.85 * measured < analytic <= measured, (name, measured, analytic)


@pytest.fixture(scope='module')
def wide_model():
  config = widened(tiny.get_config('row14'), 4)
  return (config,) + setup(config)


@pytest.mark.slow  # ~80 s on a shared 2-core machine
def test_paired_train_losses_are_three_forwards(wide_model):
  config, model, params = wide_model
  m = config.model
  batch = {'image_tokens': jnp.zeros((4, m.image_grid ** 2), jnp.int32),
           'text_ids': jnp.ones((4, m.max_text_len), jnp.int32)}
  loss_fns = registry.make_loss_fns(config, model)
  cosine = config.copy_and_resolve_references()
  cosine.loss.t2i_mask_schedule = 'cosine'  # the T2I encoder pass drops nothing
  for name, cfg in (('t2i', config), ('i2t', config), ('t2i', cosine)):
    fn = registry.make_loss_fns(cfg, model)[name][1] if cfg is cosine else loss_fns[name][1]
    grad_fn = jax.value_and_grad(lambda p, fn=fn: fn(p, batch, jax.random.PRNGKey(0))[0])
    measured = xla_flops(grad_fn, params)
    analytic = registry.loss_flops(cfg, name)
    assert analytic['synthesis'] == 0
    assert 0.9 * measured < analytic['train'] <= measured, (name, measured, analytic)


@pytest.mark.slow  # ~20 s
def test_one_step_samplers_match_xla(wide_model):
  config, model, params = wide_model
  m = config.model
  text = jnp.ones((4, m.max_text_len), jnp.int32)
  for guided in (False, True):
    sampler = functools.partial(generate.generate_images, model=model, num_steps=1,
                                guidance_scale=2.0 if guided else 0.0)
    measured = xla_flops(sampler, params, text, jax.random.PRNGKey(0))
    analytic = flops.image_sampler(m, 4, m.max_text_len, 1, guided)
    assert 0.95 * measured < analytic <= measured, (guided, measured, analytic)
  images = jnp.zeros((4, m.image_grid ** 2), jnp.int32)
  captioner = functools.partial(generate.generate_captions, model=model, max_len=1)
  measured = xla_flops(captioner, params, images)
  analytic = flops.captioner(m, 4, 1)
  assert 0.95 * measured < analytic <= measured, (measured, analytic)


def test_cosine_t2i_schedule_counts_the_undropped_encoder():
  config = tiny.get_config('row14')
  m, length = config.model, config.model.max_text_len
  n = m.image_grid ** 2
  cosine = config.copy_and_resolve_references()
  cosine.loss.t2i_mask_schedule = 'cosine'
  extra = lambda b: 3 * (flops.encoder(m, b, n, length)
                         - flops.encoder(m, b, n - m.num_dropped, length))
  assert extra(1) > 0
  for name, b, passes in (('t2i', config.batch.paired, 3),
                          ('i2t2i', config.batch.unpaired_image, 3),
                          ('t2i2t', config.batch.unpaired_text, 1)):
    # T2I2T's first encoder pass is forward only: the cycle stops its gradient.
    assert config.cycle.stop_first_encoder_grad
    difference = (registry.loss_flops(cosine, name)['train']
                  - registry.loss_flops(config, name)['train'])
    assert difference == pytest.approx(extra(b) * passes / 3), name
  assert registry.loss_flops(cosine, 'i2t') == registry.loss_flops(config, 'i2t')


def test_cycle_step_counts_synthesis_per_step():
  config = tiny.get_config('row14')
  m, c = config.model, config.cycle
  b, length = config.batch.unpaired_text, m.max_text_len
  t2i2t = registry.loss_flops(config, 't2i2t')
  assert t2i2t['synthesis'] == flops.image_sampler(m, b, length, c.synthesis_steps, True)
  more_steps = config.copy_and_resolve_references()
  more_steps.cycle.synthesis_steps = 2 * c.synthesis_steps
  step_cost = (flops.encoder(m, 2 * b, m.image_grid ** 2, length)
               + flops.image_decoder(m, 2 * b))
  assert (registry.loss_flops(more_steps, 't2i2t')['synthesis'] - t2i2t['synthesis']
          == pytest.approx(c.synthesis_steps * step_cost))
  step = registry.train_step_flops(config, ['t2i', 'i2t', 't2i2t', 'i2t2i'])
  assert step['total'] == pytest.approx(sum(step[k] for k in ('t2i', 'i2t', 't2i2t', 'i2t2i')))
  # Captioning with a cache costs far less than rerunning the decoder at every step.
  assert (flops.captioner(m, 4, length, cached=False)
          > 3 * flops.captioner(m, 4, length, cached=True))


def test_reused_pseudo_pairs_pay_synthesis_once_per_reuse():
  config = tiny.get_config('row14')
  reused = config.copy_and_resolve_references()
  reused.cycle.reuse = 4
  for name in ('t2i2t', 'i2t2i'):
    online, cheap = registry.loss_flops(config, name), registry.loss_flops(reused, name)
    assert cheap['synthesis'] == pytest.approx(online['synthesis'] / 4) and online['synthesis'] > 0
    assert cheap['train'] == online['train']  # every step still runs both passes of the cycle
  names = ['t2i', 'i2t', 't2i2t', 'i2t2i']
  online, cheap = registry.train_step_flops(config, names), registry.train_step_flops(reused, names)
  assert online['total'] - cheap['total'] == pytest.approx(0.75 * online['synthesis'])


def test_cycle_flops_table_of_synthesis_settings(capsys):
  assert cycle_flops.parse_setting('paper') == dict(synthesis_steps=24, guidance_scale=2.0,
                                                    reuse=1)
  assert cycle_flops.parse_setting('s8_r4') == dict(synthesis_steps=8, guidance_scale=0.0,
                                                    reuse=4)
  for bad in ('s0', 's4_r0', 'x4', 's4g_r'):
    with pytest.raises(ValueError, match='use s<steps>'):
      cycle_flops.parse_setting(bad)
  config = tiny.get_config()
  figures = cycle_flops.step_flops(config, 4, 's4g_r2')
  itit = benchmark.row_config(config, 14, 4)
  itit.cycle.update(synthesis_steps=4, guidance_scale=2.0, reuse=2)
  assert itit.batch.unpaired_text == 4 and benchmark.row_config(config, 3, 4).batch.paired == 12
  expected = registry.train_step_flops(itit, ['i2t', 't2i', 't2i2t', 'i2t2i'])
  assert figures['row14'] == pytest.approx(expected['total'])
  assert figures['synthesis_share'] == pytest.approx(expected['synthesis'] / expected['total'])
  assert figures['ratio'] == pytest.approx(expected['total'] / figures['row3'])
  # Fewer steps, no guidance and reuse each lower the ratio.
  ratios = [cycle_flops.step_flops(config, 4, s)['ratio'] for s in ('paper', 's24', 's4', 's4_r4')]
  assert ratios == sorted(ratios, reverse=True) and len(set(ratios)) == 4
  assert cycle_flops.main(['--config=configs/tiny.py', '--batch=4', '--settings=paper,s4_r4']) == 0
  out = capsys.readouterr().out
  assert '| s4_r4 | 4 | 0 | 4 | ' in out and f'{ratios[3]:.2f}x' in out
  with pytest.raises(SystemExit) as exited:
    cycle_flops.main(['--settings=s4,s0'])
  assert exited.value.code == 2
  assert "setting 's0': use s<steps>" in capsys.readouterr().err


def test_the_fast_cycles_preset_is_within_the_cost_target_at_itit_b():
  """The preset's synthesis, named 'fast_cycles' in the FLOP table, keeps an ITIT-B row-14 step
  at <= 1.5x the paired step's FLOPs (the cheap-cycles target); the paper's is 2.76x."""
  assert cycle_flops.parse_setting('fast_cycles') == base.FAST_CYCLES
  config = vit_b.get_config()
  fast = cycle_flops.step_flops(config, 32, 'fast_cycles')
  paper = cycle_flops.step_flops(config, 32, 'paper')
  assert fast['ratio'] <= 1.5 < paper['ratio']

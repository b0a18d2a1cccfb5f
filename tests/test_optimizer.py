"""The table-3 optimizer: Adafactor with lr-scaled decoupled weight decay, clipping, schedule."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import base
from itit.trainer import optimizer


def test_weight_decay_is_scaled_by_the_learning_rate():
  config = base.get_config().optimizer
  config.warmup_steps = 0
  config.schedule = 'constant'
  config.lr = 1e-3
  tx, _ = optimizer.make_optimizer(config, total_steps=10)
  params = {'w': jnp.full((4, 4), 2.0)}
  state = tx.init(params)
  updates, _ = tx.update({'w': jnp.zeros((4, 4))}, state, params)
  # With a zero gradient only the decay acts: -lr * wd * w.
  np.testing.assert_allclose(updates['w'], -1e-3 * 0.045 * 2.0, rtol=1e-6)


def test_schedule_warms_up_then_decays_to_zero():
  config = base.get_config().optimizer
  tx, schedule = optimizer.make_optimizer(config, total_steps=20_000)
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(config.warmup_steps)), config.lr, rtol=1e-6)
  assert float(schedule(20_000)) < 1e-9


def _second_moment_decays(config, steps):
  """The decay beta2_t the optimizer applies at each 1-based update t in `steps`.

  The gradient is 1 before update t and 2 at it, so v_t = d v_{t-1} + (1 - d) 4 gives
  d = (4 - v_t) / (4 - v_{t-1}) (v is in [0, 1] before t, so the division is safe). One
  weight keeps the gradient's norm under the clip of 3.0, and unfactored, so v is the
  accumulator itself.
  """
  tx, _ = optimizer.make_optimizer(config, total_steps=max(steps))
  params = {'w': jnp.zeros((1,))}

  def accumulator(state):
    return optax.tree_utils.tree_get(state, 'v')['w'][0]

  @jax.jit
  def decay_at(t):
    def body(_, state):
      return tx.update({'w': jnp.ones((1,))}, state, params)[1]
    before = jax.lax.fori_loop(0, t - 1, body, tx.init(params))
    _, after = tx.update({'w': jnp.full((1,), 2.0)}, before, params)
    return (4.0 - accumulator(after)) / (4.0 - accumulator(before))

  return [float(decay_at(t)) for t in steps]


def test_default_second_moment_decay_is_adafactors_schedule_capped_at_beta2():
  config = base.get_config().optimizer
  # min(0.96, 1 - t^-0.8): 0 at the first update (v_1 = g^2, no bias to correct), 1 - 10^-0.8 at
  # the tenth, and table 3's 0.96 from the 56th update on.
  np.testing.assert_allclose(_second_moment_decays(config, [1, 10, 55, 56, 100, 10_000]),
                             [0.0, 0.841511, 0.959476, 0.96, 0.96, 0.96], atol=2e-6)


def test_exponent_schedule_is_optaxs_power_decay_with_b2_as_exponent():
  config = base.get_config().optimizer
  config.b2_schedule = 'exponent'
  # optax counts the earlier updates from 0, so update t decays by 1 - t^-0.96.
  np.testing.assert_allclose(_second_moment_decays(config, [1, 100, 10_000]),
                             [0.0, 0.987977, 0.999855], atol=2e-6)


def test_constant_schedule_decays_by_beta2_from_the_first_update():
  config = base.get_config().optimizer
  config.b2_schedule = 'constant'
  np.testing.assert_allclose(_second_moment_decays(config, [1, 100, 10_000]),
                             [0.96, 0.96, 0.96], atol=2e-6)


def test_unknown_b2_schedule_is_refused():
  config = base.get_config().optimizer
  config.b2_schedule = 'linear'
  with pytest.raises(ValueError, match='b2_schedule'):
    optimizer.make_optimizer(config, total_steps=10)

"""The table-3 optimizer: Adafactor with lr-scaled decoupled weight decay, clipping, schedule."""
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from configs import base
from itit import optimizer


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

"""The optimizer of the paper's table 3: Adafactor, cosine schedule with warm-up, clipping.

Choices where the paper is silent, written down:
- beta2 = 0.96 is the second-moment decay itself (`optimizer.b2`), read as big_vision's Adafactor
  and "Scaling Vision Transformers" (Zhai et al., 2021) use it: Adafactor's increasing schedule
  capped at beta2, beta2_t = min(0.96, 1 - t^-0.8) for the t-th update, which is 0.96 from the
  56th update on. optax's own `decay_rate` is the exponent of that schedule, uncapped
  (beta2_t = 1 - t^-0.96 -> 0.9997 by step 5000); `optimizer.b2_schedule='exponent'` keeps that
  reading (docs/DESIGN_NOTES.md). beta1 = 0.9 is an undebiased EMA of the scaled updates.
- Updates are not scaled by the parameter RMS (`multiply_by_parameter_scale=False`) so the
  learning rate means the same as for Adam; Adafactor's own update clipping is off and the
  global-norm clip of 3.0 is applied to the raw gradients instead.
- Weight decay 0.045 is decoupled and multiplied by the learning rate, as in AdamW. optax's
  `adafactor(weight_decay_rate=...)` adds the decay AFTER its learning-rate scaling, i.e. 4.5% of
  every weight per step, which erases a model in ~100 steps; so the chain is assembled from
  optax's own pieces with the decay before the learning rate.
"""
from __future__ import annotations

import jax.numpy as jnp
import optax

# Adafactor's exponent (Shazeer & Stern, 2018; optax's and big_vision's default). Under 'capped' it
# only shapes the first 55 updates: its beta2_t = 0 on the first update stands in for Adam's bias
# correction, which the factored accumulator lacks.
_ADAFACTOR_EXPONENT = 0.8
B2_SCHEDULES = ('capped', 'constant', 'exponent')


def scale_by_factored_rms(b2: float, b2_schedule: str) -> optax.GradientTransformation:
  """optax's Adafactor second-moment scaling, with the decay of the t-th update (t = 1, 2, ...):

  'capped': min(b2, 1 - t^-0.8); 'constant': b2; 'exponent': 1 - t^-b2 (b2 is optax's
  `decay_rate`, the exponent). optax passes the count of earlier updates, t - 1.
  """
  if b2_schedule == 'exponent':
    return optax.scale_by_factored_rms(decay_rate=b2)
  if b2_schedule == 'capped':
    def decay(count, cap):
      return jnp.minimum(cap, 1.0 - (count + 1.0) ** -_ADAFACTOR_EXPONENT)
  elif b2_schedule == 'constant':
    def decay(count, b2):
      del count
      return jnp.asarray(b2, jnp.float32)
  else:
    raise ValueError(f'optimizer.b2_schedule must be one of {B2_SCHEDULES}, got {b2_schedule!r}')
  return optax.scale_by_factored_rms(decay_rate=b2, decay_rate_fn=decay)


def learning_rate_schedule(opt_config, total_steps: int) -> optax.Schedule:
  warmup = int(opt_config.warmup_steps)
  if opt_config.schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=opt_config.lr, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=0.0)
  if opt_config.schedule == 'constant':
    if warmup == 0:
      return optax.constant_schedule(opt_config.lr)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, opt_config.lr, warmup),
         optax.constant_schedule(opt_config.lr)], [warmup])
  raise ValueError(f"optimizer.schedule must be 'cosine' or 'constant', got {opt_config.schedule!r}")


def make_optimizer(opt_config, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Returns (transformation, learning-rate schedule)."""
  schedule = learning_rate_schedule(opt_config, total_steps)
  if opt_config.name == 'adafactor':
    parts = [scale_by_factored_rms(opt_config.b2, opt_config.b2_schedule)]
    if opt_config.b1:
      parts.append(optax.ema(opt_config.b1, debias=False))
    if opt_config.weight_decay:
      parts.append(optax.add_decayed_weights(opt_config.weight_decay))
    parts.append(optax.scale_by_learning_rate(schedule))
    inner = optax.chain(*parts)
  elif opt_config.name == 'adamw':
    inner = optax.adamw(schedule, b1=opt_config.b1, b2=opt_config.b2,
                        weight_decay=opt_config.weight_decay)
  else:
    raise ValueError(f"optimizer.name must be 'adafactor' or 'adamw', got {opt_config.name!r}")
  transforms = []
  if opt_config.grad_clip:
    transforms.append(optax.clip_by_global_norm(opt_config.grad_clip))
  transforms.append(inner)
  return optax.chain(*transforms), schedule

"""The optimizer of the paper's table 3: Adafactor, cosine schedule with warm-up, clipping.

Choices where the paper is silent, written down:
- beta2 = 0.96 maps onto optax.adafactor's `decay_rate` (as DESIGN.md prescribes). Note that in
  optax this is the exponent of Adafactor's increasing decay schedule beta2_t = 1 - t^-decay_rate,
  not a constant; beta1 = 0.9 is Adafactor's `momentum`.
- Updates are not scaled by the parameter RMS (`multiply_by_parameter_scale=False`) so the
  learning rate means the same as for Adam; Adafactor's own update clipping is off and the
  global-norm clip of 3.0 is applied to the raw gradients instead.
- Weight decay 0.045 is decoupled and multiplied by the learning rate, as in AdamW. optax's
  `adafactor(weight_decay_rate=...)` adds the decay AFTER its learning-rate scaling, i.e. 4.5% of
  every weight per step, which erases a model in ~100 steps; so the chain is assembled from
  optax's own pieces with the decay before the learning rate.
"""
from __future__ import annotations

import optax


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
    parts = [optax.scale_by_factored_rms(decay_rate=opt_config.decay_rate)]
    if opt_config.b1:
      parts.append(optax.ema(opt_config.b1, debias=False))
    if opt_config.weight_decay:
      parts.append(optax.add_decayed_weights(opt_config.weight_decay))
    parts.append(optax.scale_by_learning_rate(schedule))
    inner = optax.chain(*parts)
  elif opt_config.name == 'adamw':
    inner = optax.adamw(schedule, b1=opt_config.b1, b2=opt_config.decay_rate,
                        weight_decay=opt_config.weight_decay)
  else:
    raise ValueError(f"optimizer.name must be 'adafactor' or 'adamw', got {opt_config.name!r}")
  transforms = []
  if opt_config.grad_clip:
    transforms.append(optax.clip_by_global_norm(opt_config.grad_clip))
  transforms.append(inner)
  return optax.chain(*transforms), schedule

"""One training update and one evaluation step over the enabled losses (itit.losses.registry).

The step is pure: `train_step(state, batch, frozen)` -> (state, metrics), jitted by
`jit_train_step` with the state donated and laid out by `itit.trainer.state.state_layout`.
"""
from __future__ import annotations

import functools
import zlib
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax

from itit.losses import paired
from itit.losses import registry
from itit.trainer.state import full_params
from itit.trainer.state import TrainState


def loss_rng(rng: jax.Array, name: str) -> jax.Array:
  """A per-loss key that does not depend on which other losses are enabled."""
  return jax.random.fold_in(rng, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def paired_half(paired: Mapping[str, jax.Array], half: int) -> dict[str, jax.Array]:
  """Rows 0, 2, 4, ... (half 0) or 1, 3, 5, ... (half 1) of a paired batch {field: [B, ...]}.

  Interleaved rather than first/second half: the batch is sharded over its rows, and every
  device's contiguous block (of even size, config_check) holds both halves, so the split moves
  no data between devices.
  """
  return {k: v.reshape(v.shape[0] // 2, 2, *v.shape[1:])[:, half] for k, v in paired.items()}


def loss_inputs(batch: Mapping[str, Any], name: str, stream: str, paired_split: bool):
  """The examples loss `name` reads from `batch[stream]`: with paired_split (the paper's
  batch), T2I and I2T/I2I read different halves of the paired batch; otherwise all of it."""
  if paired_split and stream == 'paired':
    return paired_half(batch[stream], registry.LOSSES[name].paired_half)
  return batch[stream]


def pseudo_pairs_for_step(state: TrainState, batch: Mapping[str, Any], step_rng, frozen, *,
                          cycle_parts, reuse: int, cycle_start_step: int = 0) -> dict:
  """The pseudo pairs this step's cycles train on, {cycle loss: pair}: synthesized from this
  step's unpaired batches every `reuse`-th step from `cycle_start_step` on (`lax.cond`: the
  other steps run no synthesis), else state.pseudo_pairs, made up to reuse - 1 updates ago.
  The synthesis draws the key the on-line cycle would (`loss_rng`), so a fresh step computes
  what reuse = 1 computes."""
  fresh = (state.step >= cycle_start_step) & ((state.step - cycle_start_step) % reuse == 0)
  params = full_params(state.params, frozen)
  pairs = {}
  for name, (make_pair, _) in sorted(cycle_parts.items()):
    synthesize = functools.partial(make_pair, params, batch[registry.LOSSES[name].stream],
                                   loss_rng(step_rng, name))
    pairs[name] = jax.lax.cond(fresh, synthesize, lambda name=name: state.pseudo_pairs[name])
  return pairs


def train_step(state: TrainState, batch: Mapping[str, Any], frozen=None, *, loss_fns, tx,
               schedule, nan_policy: str, cycle_start_step: int = 0,
               paired_split: bool = False, cycle_parts=None,
               reuse: int = 1) -> tuple[TrainState, dict]:
  """One update: the enabled losses summed with equal weights (the paper's eqs. 1-4).

  `frozen` (the pretrained T5 encoder's parameters, or None) is an input, not state: it gets no
  gradient, no optimizer state and no checkpoint. Before `cycle_start_step` the cycle losses
  (`registry.Loss.cycle`) are skipped, synthesis included (`lax.cond`), and count 0 with 0 metrics.
  `paired_split`: T2I and I2T/I2I read different halves of batch['paired'] (`loss_inputs`).
  `reuse` > 1 (config.cycle.reuse): each pseudo pair serves `reuse` steps, kept in
  state.pseudo_pairs (`pseudo_pairs_for_step`); the cycles then train through `cycle_parts`
  (`registry.make_cycle_parts`) instead of their `loss_fns` entries.
  """
  rng, step_rng = jax.random.split(state.rng)
  pairs = state.pseudo_pairs
  if reuse > 1 and pairs is not None:  # None: no cycle loss is enabled, nothing to reuse
    if cycle_parts is None or sorted(cycle_parts) != sorted(pairs):
      raise ValueError(f'reuse={reuse} needs cycle_parts for the cycles state.pseudo_pairs '
                       f'holds ({sorted(pairs)})')
    pairs = pseudo_pairs_for_step(state, batch, step_rng, frozen, cycle_parts=cycle_parts,
                                  reuse=reuse, cycle_start_step=cycle_start_step)

  def total_loss(params):
    total, metrics = 0.0, {}
    params = full_params(params, frozen)
    for name, (stream, fn) in sorted(loss_fns.items()):
      compute = functools.partial(fn, batch=loss_inputs(batch, name, stream, paired_split),
                                  rng=loss_rng(step_rng, name))
      if pairs is not None and name in pairs:
        compute = functools.partial(cycle_parts[name][1], pair=pairs[name],
                                    rng=loss_rng(step_rng, name))
      if cycle_start_step > 0 and registry.LOSSES[name].cycle:
        skipped = lambda p, compute=compute: jax.tree.map(
            lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(compute, p))
        loss, loss_metrics = jax.lax.cond(state.step >= cycle_start_step, compute, skipped,
                                          params)
      else:
        loss, loss_metrics = compute(params)
      total = total + loss
      metrics.update({f'{name}/{k}': v for k, v in loss_metrics.items()})
    return total, metrics

  (loss, metrics), grads = jax.value_and_grad(total_loss, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  grad_norm = optax.tree.norm(grads)
  update_norm = optax.tree.norm(updates)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(update_norm)
  if nan_policy == 'skip':
    keep = lambda new, old: jnp.where(finite, new, old)
    params = jax.tree.map(keep, params, state.params)
    opt_state = jax.tree.map(keep, opt_state, state.opt_state)
  first_bad = jnp.where((state.first_nonfinite_step < 0) & ~finite, state.step,
                        state.first_nonfinite_step)
  skipped = state.skipped_steps + jnp.where(finite, 0, 1).astype(jnp.int32) * (nan_policy == 'skip')
  metrics.update(loss=loss, l2_grads=grad_norm, l2_params=optax.tree.norm(params),
                 l2_updates=update_norm, lr=schedule(state.step),
                 skipped_steps=skipped)
  new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state, rng=rng,
                         first_nonfinite_step=first_bad, skipped_steps=skipped,
                         pseudo_pairs=pairs)
  return new_state, metrics


def eval_step(params, batch: Mapping[str, Any], rng, *, loss_fns, model) -> dict:
  """Loss metrics without dropout on a held-out batch (teacher-forced, fixed masks per rng),
  and teacher-forced captioning of the whole, unmasked image."""
  metrics = {f'i2t/{k}': v for k, v in
             paired.i2t_full_image_metrics(params, batch['paired'], model=model).items()}
  for name, (stream, fn) in sorted(loss_fns.items()):
    if stream not in batch:
      continue  # the unpaired losses: the cycle evaluator measures cycle consistency
    _, loss_metrics = fn(params, batch[stream], loss_rng(rng, name), deterministic=True)
    metrics.update({f'{name}/{k}': v for k, v in loss_metrics.items()})
  return metrics


def jit_train_step(config, loss_fns, tx, schedule, state_shardings, cycle_parts=None):
  """`train_step` jitted with the state donated and its output laid out as `state_shardings`.

  cycle_parts: `registry.make_cycle_parts(config, model)`, needed when config.cycle.reuse > 1.

  Call it under `jax.set_mesh(mesh)` and `nn.logical_axis_rules(rules)`, which place the
  activation constraints.
  """
  return jax.jit(
      functools.partial(train_step, loss_fns=loss_fns, tx=tx, schedule=schedule,
                        nan_policy=config.nan_policy,
                        cycle_start_step=config.cycle.start_step,
                        paired_split=config.batch.paired_split, cycle_parts=cycle_parts,
                        reuse=config.cycle.reuse),
      out_shardings=(state_shardings, None), donate_argnums=(0,))

r"""Trains ITIT: `python -m itit.train --config=configs/shapes.py --workdir=DIR`.

Re-running the same command in the same workdir resumes from the last checkpoint, with the
optimizer state, RNG and input iterators exactly where they were. Resume order: the workdir's
last checkpoint, else the parameters of `config.init_from` (another run's checkpoint: 'WORKDIR'
for its latest step or 'WORKDIR:STEP'; fresh optimizer state, step 0), else from scratch.

Outputs in the workdir: checkpoints/, metrics.jsonl, tensorboard/, eval.json, config.json.
"""
from __future__ import annotations

import functools
import json
import os
import signal
import time
import zlib
from typing import Any, Callable, Mapping

from absl import app
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from itit import checkpointing
from itit import config_check
from itit import cycle_losses
from itit import distributed
from itit import errors
from itit import metric_writer
from itit import partitioning
from itit import evaluators
from itit import flops
from itit import train_data
from itit.models import itit as itit_model
from itit.models import t5_loader
from itit import losses
from itit import optimizer as optimizer_lib

_CONFIG = errors.config_flag('Training config file.')
_WORKDIR = errors.string_flag('workdir', 'Where checkpoints, metrics and samples go.')


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  first_nonfinite_step: jax.Array  # -1 until a step has a non-finite loss or gradient
  skipped_steps: jax.Array  # updates dropped under nan_policy='skip'


# The input stream each loss reads.
LOSS_STREAMS = {'t2i': 'paired', 'i2t': 'paired', 'i2i': 'paired', 't2t': 'unpaired_text',
                't2i2t': 'unpaired_text', 'unpaired_i2i': 'unpaired_image',
                'i2t2i': 'unpaired_image'}


def make_loss_fns(config, model) -> dict[str, tuple[str, Callable]]:
  """The enabled losses: name -> (input stream, fn(params, batch, rng) -> (loss, metrics)).

  Paired: 't2i', 'i2t' (I2T + I2I), and 'i2i' alone when loss.i2t is off but loss.i2i is on
  (table 2 row 1). Unpaired text: 't2t' or 't2i2t' (full or half, by loss.unpaired_text_loss);
  unpaired images: 'unpaired_i2i' or 'i2t2i'. Each loss is multiplied by loss.weights[name].
  """
  fns = {}
  bind = dict(model=model, config=config)
  if config.loss.t2i:
    fns['t2i'] = ('paired', functools.partial(losses.t2i_loss, **bind))
  if config.loss.i2t:
    fns['i2t'] = ('paired', functools.partial(losses.i2t_loss, **bind))
  elif config.loss.i2i:
    fns['i2i'] = ('paired', functools.partial(cycle_losses.i2i_loss, **bind))
  text_loss, image_loss = config.loss.unpaired_text_loss, config.loss.unpaired_image_loss
  if text_loss not in cycle_losses.TEXT_LOSSES:
    raise errors.UserError(f'loss.unpaired_text_loss={text_loss!r}; use one of '
                           f'{cycle_losses.TEXT_LOSSES}')
  if image_loss not in cycle_losses.IMAGE_LOSSES:
    raise errors.UserError(f'loss.unpaired_image_loss={image_loss!r}; use one of '
                           f'{cycle_losses.IMAGE_LOSSES}')
  if text_loss == 't2t':
    fns['t2t'] = ('unpaired_text', functools.partial(cycle_losses.t2t_loss, **bind))
  elif text_loss != 'none':
    fns['t2i2t'] = ('unpaired_text', functools.partial(cycle_losses.t2i2t_loss, **bind))
  if image_loss == 'i2i':
    fns['unpaired_i2i'] = ('unpaired_image', functools.partial(cycle_losses.i2i_loss, **bind))
  elif image_loss != 'none':
    fns['i2t2i'] = ('unpaired_image', functools.partial(cycle_losses.i2t2i_loss, **bind))
  if not fns:
    raise errors.UserError('config.loss enables no loss: set at least one of loss.t2i, '
                           'loss.i2t')

  def weighted(fn, weight):
    def fn_times_weight(*args, **kwargs):
      loss, metrics = fn(*args, **kwargs)
      return weight * loss, metrics
    return fn_times_weight

  return {name: (stream, fn if config.loss.weights[name] == 1.0
                 else weighted(fn, config.loss.weights[name]))
          for name, (stream, fn) in fns.items()}


_LOSS_LABELS = {'t2i': 'T2I (eq. 2)', 'i2t': 'I2T (eq. 1) + I2I', 'i2i': 'I2I',
                't2t': 'T2T', 'unpaired_i2i': 'I2I on unpaired images',
                't2i2t': 'T2I2T (eq. 3)', 'i2t2i': 'I2T2I (eq. 4)'}


def run_summary(config, loss_names, counts: Mapping[str, int], mesh_shape: Mapping) -> str:
  """What a run trains, as a block of lines: table-2 row, losses and weights, text encoder,
  per-loss batches, synthesis settings, parameters, optimizer and mesh."""
  row = cycle_losses.table2_row_of(config)
  split = config.batch.paired_split
  lines = [f'table 2 row: {row if row is not None else "custom"}']
  for name in sorted(loss_names):
    stream = LOSS_STREAMS[name]
    batch = config.batch[stream] // (2 if split and stream == 'paired' else 1)
    label = _LOSS_LABELS[name]
    if name == 't2i2t' and config.loss.unpaired_text_loss == 't2i2t_half':
      label += ', half cycle'
    if name == 'i2t2i' and config.loss.unpaired_image_loss == 'i2t2i_half':
      label += ', half cycle'
    lines.append(f'  loss {name}: {label}, weight {config.loss.weights[name]:g}, '
                 f'{batch} {stream} examples per step')
  encoder = config.model.text_encoder
  if encoder.kind == 't5':
    lines.append(f'text encoder: frozen T5 from {encoder.path or "(no path)"} '
                 f'({counts["text_encoder"] / 1e6:.1f}M parameters, width '
                 f'{encoder.t5.width}, depth {encoder.t5.depth})')
  else:
    lines.append(f'text encoder: learned jointly ({counts["text_encoder"] / 1e6:.2f}M '
                 f'parameters, width {encoder.learned.width}, depth {encoder.learned.depth})')
  streams = sorted({LOSS_STREAMS[name] for name in loss_names})
  paired_note = (' (T2I and I2T/I2I read different halves)' if split
                 else ' (T2I and I2T/I2I share it)')
  lines.append('examples per step: ' + ', '.join(
      f'{s} {config.batch[s]}' + (paired_note if s == 'paired' else '') for s in streams))
  c = config.cycle
  if {'t2i2t', 'i2t2i'} & set(loss_names):
    start = f'from step {c.start_step}' if c.start_step else 'from step 0'
    lines.append(f'synthesis: pseudo images {c.synthesis_steps} steps, guidance '
                 f'{c.guidance_scale:g}, temperature {c.temperature:g}; pseudo captions greedy, '
                 f'{config.model.max_text_len} tokens; Gumbel {c.gumbel_strength:g}; cycles '
                 f'{start}')
  lines.append(itit_model.format_param_counts(counts))
  o = config.optimizer
  lines.append(f'optimizer: {o.name}, lr {o.lr:g} ({o.schedule}, {o.warmup_steps} warm-up '
               f'steps), {config.total_steps} steps; mesh {dict(mesh_shape)}')
  return '\n'.join(lines)


def loss_rng(rng: jax.Array, name: str) -> jax.Array:
  """A per-loss key that does not depend on which other losses are enabled."""
  return jax.random.fold_in(rng, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def full_params(params, frozen):
  """The model's parameter tree: the trained ones plus the frozen text encoder, if any."""
  return params if frozen is None else t5_loader.merge(params, frozen)


# The losses that train on pseudo pairs the model makes itself (eqs. 3-4, full or half).
CYCLE_LOSSES = ('t2i2t', 'i2t2i')
# Under batch.paired_split: which half of the paired batch each paired loss reads.
PAIRED_HALF = {'t2i': 0, 'i2t': 1, 'i2i': 1}


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
    return paired_half(batch[stream], PAIRED_HALF[name])
  return batch[stream]


def train_step(state: TrainState, batch: Mapping[str, Any], frozen=None, *, loss_fns, tx,
               schedule, nan_policy: str, cycle_start_step: int = 0,
               paired_split: bool = False) -> tuple[TrainState, dict]:
  """One update: the enabled losses summed with equal weights (the paper's eqs. 1-4).

  `frozen` (the pretrained T5 encoder's parameters, or None) is an input, not state: it gets no
  gradient, no optimizer state and no checkpoint. Before `cycle_start_step` the cycle losses
  (CYCLE_LOSSES) are skipped, synthesis included (`lax.cond`), and count 0 with 0 metrics.
  `paired_split`: T2I and I2T/I2I read different halves of batch['paired'] (`loss_inputs`).
  """
  rng, step_rng = jax.random.split(state.rng)

  def total_loss(params):
    total, metrics = 0.0, {}
    params = full_params(params, frozen)
    for name, (stream, fn) in sorted(loss_fns.items()):
      compute = functools.partial(fn, batch=loss_inputs(batch, name, stream, paired_split),
                                  rng=loss_rng(step_rng, name))
      if cycle_start_step > 0 and name in CYCLE_LOSSES:
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
                         first_nonfinite_step=first_bad, skipped_steps=skipped)
  return new_state, metrics


def eval_step(params, batch: Mapping[str, Any], rng, *, loss_fns, model) -> dict:
  """Loss metrics without dropout on a held-out batch (teacher-forced, fixed masks per rng),
  and teacher-forced captioning of the whole, unmasked image."""
  metrics = {f'i2t/{k}': v for k, v in
             losses.i2t_full_image_metrics(params, batch['paired'], model=model).items()}
  for name, (stream, fn) in sorted(loss_fns.items()):
    if stream not in batch:
      continue  # the unpaired losses: the cycle evaluator measures cycle consistency
    _, loss_metrics = fn(params, batch[stream], loss_rng(rng, name), deterministic=True)
    metrics.update({f'{name}/{k}': v for k, v in loss_metrics.items()})
  return metrics


def opt_state_shardings(abstract_opt_state, abstract_params, param_shardings, mesh):
  """Optimizer-state leaves shaped like a parameter (momentum) take that parameter's sharding.

  Leaves are matched by tree path suffix and shape; factored or scalar statistics are replicated.
  """
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  by_path = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_params)[0]:
    by_path[tuple(str(k) for k in path)] = leaf.shape
  sharding_by_path = {
      tuple(str(k) for k in path): s
      for path, s in jax.tree_util.tree_flatten_with_path(param_shardings)[0]}

  def pick(path, leaf):
    keys = tuple(str(k) for k in path)
    for start in range(len(keys)):
      suffix = keys[start:]
      if suffix in by_path and by_path[suffix] == leaf.shape:
        return sharding_by_path[suffix]
    return replicated

  return jax.tree_util.tree_map_with_path(pick, abstract_opt_state)


def validate_config(config, num_devices: int, process_count: int) -> None:
  """Problems a user can fix, reported before anything compiles (itit/config_check.py)."""
  streams = {stream for stream, _ in make_loss_fns(config, itit_model.ITIT(config.model)).values()}
  config_check.check_train_config(config, num_devices, process_count, streams)


def check_resume_prng_impl(saved_config: dict, config, workdir: str) -> None:
  """A run resumes only with the PRNG implementation its checkpoints were written with (runs
  from before config.prng_impl existed used threefry2x32)."""
  saved = saved_config.get('prng_impl', 'threefry2x32')
  if saved != config.prng_impl:
    raise errors.UserError(
        f'{workdir} was trained with prng_impl={saved!r} and this config asks for '
        f'{config.prng_impl!r}: its keys cannot continue under another implementation. Pass '
        f'--config.prng_impl={saved} to resume, or use a new --workdir.')


class _Preemption:
  """Turns SIGTERM into a flag checked between steps, so the loop can save and exit cleanly."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)


def seed_key_data(config) -> jax.Array:
  """The run's root key as raw uint32 data (what `init_train_state` takes): [2] for
  threefry2x32, [4] for rbg and unsafe_rbg."""
  return jax.random.key_data(jax.random.key(config.seed, impl=config.prng_impl))


def init_train_state(config, tx, seed_data: jax.Array) -> TrainState:
  """A fresh state from `seed_key_data(config)`; a frozen T5 encoder is left out of params.

  state.rng is a typed key of `config.prng_impl`: every key the train step derives from it
  (dropout, masks, synthesis) draws its bits with that implementation.
  """
  init_rng, rng = jax.random.split(jax.random.wrap_key_data(seed_data, impl=config.prng_impl))
  params = nn.unbox(itit_model.init_params(config.model, init_rng))
  if config.model.text_encoder.kind == 't5':
    params, _ = t5_loader.split_frozen(params)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=rng, first_nonfinite_step=jnp.full((), -1, jnp.int32),
                    skipped_steps=jnp.zeros((), jnp.int32))


def state_layout(config, tx, mesh, rules) -> tuple[TrainState, TrainState, Any]:
  """(abstract_state, state_shardings, frozen_shardings), from shapes only (nothing allocated).

  frozen_shardings are the frozen T5 encoder's parameter shardings, or None. Initialization
  runs outside the mesh context: its layout comes from out_shardings, and flax's DenseGeneral
  would apply logical constraints to its flattened kernels there.
  """
  with nn.logical_axis_rules(rules):
    boxed_params = jax.eval_shape(
        lambda r: itit_model.init_params(config.model, r), jax.random.PRNGKey(0))
    param_shardings = partitioning.tree_shardings(boxed_params, mesh, rules)
    frozen_shardings = None
    if config.model.text_encoder.kind == 't5':
      param_shardings, frozen_shardings = t5_loader.split_frozen(param_shardings)
    abstract_state = jax.eval_shape(functools.partial(init_train_state, config, tx),
                                    seed_key_data(config))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  state_shardings = TrainState(
      step=replicated, params=param_shardings,
      opt_state=opt_state_shardings(abstract_state.opt_state, abstract_state.params,
                                    param_shardings, mesh),
      rng=replicated, first_nonfinite_step=replicated, skipped_steps=replicated)
  return abstract_state, state_shardings, frozen_shardings


def jit_train_step(config, loss_fns, tx, schedule, state_shardings):
  """`train_step` jitted with the state donated and its output laid out as `state_shardings`.

  Call it under `jax.set_mesh(mesh)` and `nn.logical_axis_rules(rules)`, which place the
  activation constraints.
  """
  return jax.jit(
      functools.partial(train_step, loss_fns=loss_fns, tx=tx, schedule=schedule,
                        nan_policy=config.nan_policy,
                        cycle_start_step=config.cycle.start_step,
                        paired_split=config.batch.paired_split),
      out_shardings=(state_shardings, None), donate_argnums=(0,))


def params_from_run(init_from: str, like, shardings):
  """Parameters of another run's checkpoint ('WORKDIR' or 'WORKDIR:STEP'), laid out as `like`.

  The trees must match in paths and shapes (the same model config); the frozen T5 encoder is in
  neither. Used when a workdir has no checkpoint yet (e.g. configs/coco_finetune.py).
  """
  workdir, step = init_from, None
  head, _, tail = init_from.rpartition(':')
  if head and tail.isdigit():
    workdir, step = head, int(tail)
  params, step = checkpointing.load_params(workdir, step)
  loaded = flax.traverse_util.flatten_dict(params, sep='/')
  wanted = flax.traverse_util.flatten_dict(like, sep='/')
  problems = [f'{k}: missing' for k in sorted(set(wanted) - set(loaded))]
  problems += [f'{k}: not in this model' for k in sorted(set(loaded) - set(wanted))]
  problems += [f'{k}: {tuple(loaded[k].shape)} vs {tuple(v.shape)}'
               for k, v in sorted(wanted.items()) if k in loaded and loaded[k].shape != v.shape]
  if problems:
    raise ValueError(f'init_from={init_from!r}: its step-{step} parameters do not fit this model '
                     f'({len(problems)} differences, e.g. {problems[:3]}); use the model config '
                     'of that run')
  params = jax.tree.map(lambda x, ref: np.asarray(x, ref.dtype), params, like)
  print(f'Initialised the parameters from {workdir} at step {step}.', flush=True)
  return jax.device_put(params, shardings)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains to config.total_steps (resuming if the workdir has a checkpoint); returns eval metrics."""
  jax.config.update('jax_threefry_partitionable', True)
  validate_config(config, jax.device_count(), jax.process_count())
  os.makedirs(workdir, exist_ok=True)
  mesh = partitioning.make_mesh(config.mesh)
  rules = partitioning.logical_rules(config)
  model = itit_model.ITIT(config.model)
  loss_fns = make_loss_fns(config, model)
  streams = sorted({stream for stream, _ in loss_fns.values()})
  data = train_data.TrainData(config, streams)
  data.check_model(config.model)
  tx, schedule = optimizer_lib.make_optimizer(config.optimizer, config.total_steps)

  frozen_kind = config.model.text_encoder.kind == 't5'
  abstract_state, state_shardings, frozen_shardings = state_layout(config, tx, mesh, rules)

  summary = run_summary(config, list(loss_fns), itit_model.count_params(config), mesh.shape)
  print('ITIT run:\n  ' + summary.replace('\n', '\n  '), flush=True)

  checkpointer = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                            max_to_keep=config.keep_checkpoints)
  meta = dict(config=json.loads(config.to_json_best_effort()), data=data.identities())
  frozen = None
  if frozen_kind:
    t5_path = config.model.text_encoder.path
    meta['text_encoder'] = t5_loader.t5_identity(t5_path)
    frozen = jax.device_put(t5_loader.load_t5_params(t5_path, config.model.text_encoder.t5),
                            frozen_shardings)
  latest = checkpointer.latest_step()
  with nn.logical_axis_rules(rules):
    if latest is not None:
      saved_meta = checkpointer.restore_meta(latest)
      check_resume_prng_impl(saved_meta.get('config', {}), config, workdir)
      train_data.check_resume_identities(saved_meta.get('data', {}), meta['data'], workdir)
      if 'text_encoder' in saved_meta:
        t5_loader.check_t5_identity(saved_meta['text_encoder'], config.model.text_encoder.path)
      state, _ = checkpointer.restore(
          latest, checkpointing.abstract_with_shardings(abstract_state, state_shardings),
          data.iterators)
      print(f'Resumed from {checkpointer.directory} at step {latest}.', flush=True)
    else:
      state = jax.jit(functools.partial(init_train_state, config, tx),
                      out_shardings=state_shardings)(seed_key_data(config))
      if config.get('init_from'):
        state = state.replace(params=params_from_run(config.init_from, state.params,
                                                     state_shardings.params))
    step_fn = jit_train_step(config, loss_fns, tx, schedule, state_shardings)
    eval_fn = jax.jit(functools.partial(eval_step, loss_fns=loss_fns, model=model))
  evaluator = evaluators.maybe_suite(config, model, workdir)

  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
  writer = metric_writer.MetricWriter(workdir)
  step = int(jax.device_get(state.step))
  writer.write_text(step, 'run', '\n'.join(f'    {line}' for line in summary.split('\n')))
  progress = metric_writer.Progress(config.total_steps, step)
  preemption = _Preemption()
  last_checked = step
  examples_per_step = sum(config.batch[s] for s in streams)
  # Analytic FLOPs of one step (itit.flops), for TFLOP/s per device and MFU in the log.
  flops_per_step = flops.train_step_flops(config, list(loss_fns))['total']
  device_kind = jax.devices()[0].device_kind
  t_log = time.perf_counter()
  step_at_log = step

  def check_finite():
    bad = int(jax.device_get(state.first_nonfinite_step))
    if bad >= 0 and config.nan_policy == 'halt':
      raise errors.TrainingDiverged(
          f'non-finite loss or gradient at step {bad + 1} (detected between steps {last_checked} '
          f"and {step}); no checkpoint was written after it. Lower the learning rate, or set "
          f"--config.nan_policy=skip to drop such updates.")

  # Stop early (with a checkpoint) after this many steps of this invocation: for time-sliced
  # jobs; the schedule still runs to total_steps across invocations.
  stop_at = config.total_steps
  if config.get('max_steps_per_run'):
    stop_at = min(stop_at, step + config.max_steps_per_run)

  try:
    while step < stop_at:
      with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        batch = partitioning.global_batch(data.next_batch(), mesh)
        state, metrics = step_fn(state, batch, frozen)
      step += 1
      if step % config.log_every == 0 or step == config.total_steps:
        metrics = jax.device_get(metrics)
        check_finite()
        last_checked = step
        now = time.perf_counter()
        steps_per_s = (step - step_at_log) / max(now - t_log, 1e-9)
        t_log, step_at_log = now, step
        scalars = {k: float(v) for k, v in metrics.items()}
        scalars.update(steps_per_s=steps_per_s, examples_per_s=steps_per_s * examples_per_step)
        scalars.update(flops.mfu(flops_per_step, 1.0 / max(steps_per_s, 1e-9),
                                 jax.device_count(), device_kind))
        writer.write_scalars(step, scalars)
        progress.report(step, {k: scalars[k] for k in ('loss', 'l2_grads', 'lr')})
      save_now = step % config.checkpoint_every == 0 or step == stop_at
      if save_now or preemption.requested:
        check_finite()
        checkpointer.save(step, state, meta, data.iterators, force=preemption.requested)
      if config.eval_every and step % config.eval_every == 0 and step < config.total_steps:
        results = evaluate(eval_fn, full_params(state.params, frozen), config, data, mesh, rules,
                           evaluator, writer, step)
      if preemption.requested:
        checkpointer.close()
        writer.close()
        print(f'SIGTERM: saved a checkpoint at step {step} in {checkpointer.directory}; '
              f're-run the same command to continue.', flush=True)
        return {'preempted_at_step': step}
    checkpointer.wait()
    if step < config.total_steps:
      print(f'Stopped at step {step} of {config.total_steps} (max_steps_per_run); re-run the '
            f'same command to continue.', flush=True)
      return {'stopped_at_step': step}
    results = evaluate(eval_fn, full_params(state.params, frozen), config, data, mesh, rules,
                       evaluator, writer, step)
    if jax.process_index() == 0:
      with open(os.path.join(workdir, 'eval.json'), 'w') as f:
        json.dump({'step': step, **results}, f, indent=2)
  finally:
    preemption.restore()
    checkpointer.close()
    writer.close()
  print(f'Done at step {step}. Eval: ' + ', '.join(f'{k}={v:.4f}' for k, v in results.items()))
  print(f'Outputs in {os.path.abspath(workdir)}: checkpoints/, metrics.jsonl, tensorboard/, '
        f'eval.json', flush=True)
  return results


def evaluate(eval_fn, params, config, data: train_data.TrainData, mesh, rules, evaluator,
             writer: metric_writer.MetricWriter, step: int) -> dict:
  """Teacher-forced loss metrics over the test split (no dropout), then the configured
  evaluators (`eval.evaluators`: itit/evaluators); written as eval/*."""
  totals, count = {}, 0
  rng = jax.random.PRNGKey(config.seed + 1)
  for index, batch in enumerate(data.test_batches()):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      metrics = eval_fn(params, partitioning.global_batch(batch, mesh),
                        jax.random.fold_in(rng, index))
    for k, v in jax.device_get(metrics).items():
      totals[k] = totals.get(k, 0.0) + float(v)
    count += 1
  results = {k: v / max(count, 1) for k, v in totals.items()}
  if evaluator is not None:
    scores, grids = evaluator.run(params, jax.random.PRNGKey(config.seed + 2), step=step)
    results.update(scores)
    writer.write_images(step, grids)
  writer.write_scalars(step, {f'eval/{k}': v for k, v in results.items()})
  return results


def main(argv):
  errors.quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _WORKDIR.value is None or _CONFIG.value is None:
    raise app.UsageError('--config and --workdir are required')
  distributed.initialize()
  errors.exit_on_user_error(lambda: train_and_evaluate(_CONFIG.value, _WORKDIR.value))


if __name__ == '__main__':
  app.run(main, flags_parser=errors.parse_flags)

"""The training loop of `itit.train`: validate, lay out, resume or initialise, step, log,
checkpoint, evaluate; SIGTERM saves and exits so a re-run resumes exactly.

Re-running in the same workdir resumes from the last checkpoint, with the optimizer state, RNG
and input iterators exactly where they were. Resume order: the workdir's newest intact
checkpoint (a damaged one is moved to checkpoints/damaged/ with a warning; if all are damaged the
run stops instead of starting over), else the parameters of `config.init_from` (another run's
checkpoint: 'WORKDIR' for its latest step or 'WORKDIR:STEP'; fresh optimizer state, step 0),
else from scratch.
"""
from __future__ import annotations

import functools
import json
import os
import signal
import time
from typing import Mapping

import flax.linen as nn
import jax
import ml_collections

from itit import errors
from itit import evaluation
from itit.losses import registry
from itit.models import flops
from itit.models import itit as itit_model
from itit.models import t5_loader
from itit.trainer import checkpoint_faults
from itit.trainer import checkpointing
from itit.trainer import config_check
from itit.trainer import metric_writer
from itit.trainer import optimizer as optimizer_lib
from itit.trainer import partitioning
from itit.trainer import state as state_lib
from itit.trainer import step as step_lib
from itit.trainer import train_data


def run_summary(config, loss_names, counts: Mapping[str, int], mesh_shape: Mapping) -> str:
  """What a run trains, as a block of lines: table-2 row, losses and weights, text encoder,
  per-loss batches, synthesis settings, parameters, optimizer and mesh."""
  row = registry.table2_row_of(config)
  split = config.batch.paired_split
  lines = [f'table 2 row: {row if row is not None else "custom"}']
  for name in sorted(loss_names):
    lines.append(f'  loss {name}: {registry.label(config, name)}, weight '
                 f'{config.loss.weights[name]:g}, {registry.batch_size(config, name)} '
                 f'{registry.LOSSES[name].stream} examples per step')
  encoder = config.model.text_encoder
  if encoder.kind == 't5':
    lines.append(f'text encoder: frozen T5 from {encoder.path or "(no path)"} '
                 f'({counts["text_encoder"] / 1e6:.1f}M parameters, width '
                 f'{encoder.t5.width}, depth {encoder.t5.depth})')
  else:
    lines.append(f'text encoder: learned jointly ({counts["text_encoder"] / 1e6:.2f}M '
                 f'parameters, width {encoder.learned.width}, depth {encoder.learned.depth})')
  streams = sorted({registry.LOSSES[name].stream for name in loss_names})
  paired_note = (' (T2I and I2T/I2I read different halves)' if split
                 else ' (T2I and I2T/I2I share it)')
  lines.append('examples per step: ' + ', '.join(
      f'{s} {config.batch[s]}' + (paired_note if s == 'paired' else '') for s in streams))
  c = config.cycle
  if {'t2i2t', 'i2t2i'} & set(loss_names):
    start = f'from step {c.start_step}' if c.start_step else 'from step 0'
    lines.append(f'synthesis: pseudo images {c.synthesis_steps} steps, guidance '
                 f'{c.guidance_scale:g}, temperature {c.temperature:g}, sampling at '
                 f'{c.sample_temperature:g}; pseudo captions greedy, '
                 f'{config.model.max_text_len} tokens; Gumbel {c.gumbel_strength:g}; cycles '
                 f'{start}' + ('' if c.t2i2t_trains_captioner
                               else '; T2I2T trains T2I only (fixed captioner)')
                 + (f'; each pseudo pair serves {c.reuse} steps' if c.reuse > 1 else ''))
  lines.append(itit_model.format_param_counts(counts))
  o = config.optimizer
  lines.append(f'optimizer: {o.name}, lr {o.lr:g} ({o.schedule}, {o.warmup_steps} warm-up '
               f'steps), {config.total_steps} steps; mesh {dict(mesh_shape)}')
  return '\n'.join(lines)


def validate_config(config, num_devices: int, process_count: int) -> None:
  """Problems a user can fix, reported before anything compiles (itit/trainer/config_check.py)."""
  config_check.check_train_config(config, num_devices, process_count,
                                  set(registry.streams(config)))


def check_resume_prng_impl(saved_config: dict, config, workdir: str) -> None:
  """A run resumes only with the PRNG implementation its checkpoints were written with (runs
  from before config.prng_impl existed used threefry2x32)."""
  saved = saved_config.get('prng_impl', 'threefry2x32')
  if saved != config.prng_impl:
    raise errors.UserError(
        f'{workdir} was trained with prng_impl={saved!r} and this config asks for '
        f'{config.prng_impl!r}: its keys cannot continue under another implementation. Pass '
        f'--config.prng_impl={saved} to resume, or use a new --workdir.')


def check_resume_reuse(saved_config: dict, config, workdir: str) -> None:
  """Pseudo pairs are kept in the state only with cycle.reuse > 1 and a cycle loss: such a run
  resumes on the same side of 1 (runs from before cycle.reuse existed used 1)."""
  saved = saved_config.get('cycle', {}).get('reuse', 1)
  cycles = any(registry.LOSSES[name].cycle for name in registry.enabled_losses(config))
  if cycles and (saved > 1) != (config.cycle.reuse > 1):
    raise errors.UserError(
        f'{workdir} was trained with cycle.reuse={saved} and this config asks for '
        f'{config.cycle.reuse}: its checkpoints {"hold" if saved > 1 else "lack"} the kept pseudo '
        f'pairs. Pass --config.cycle.reuse={saved} to resume, or use a new --workdir.')


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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains to config.total_steps (resuming if the workdir has a checkpoint); returns the
  final evaluation's metrics."""
  jax.config.update('jax_threefry_partitionable', True)
  validate_config(config, jax.device_count(), jax.process_count())
  os.makedirs(workdir, exist_ok=True)
  mesh = partitioning.make_mesh(config.mesh)
  rules = partitioning.logical_rules(config)
  model = itit_model.ITIT(config.model)
  loss_fns = registry.make_loss_fns(config, model)
  streams = sorted({stream for stream, _ in loss_fns.values()})
  data = train_data.TrainData(config, streams)
  data.check_model(config.model)
  tx, schedule = optimizer_lib.make_optimizer(config.optimizer, config.total_steps)

  frozen_kind = config.model.text_encoder.kind == 't5'
  abstract_state, state_shardings, frozen_shardings = state_lib.state_layout(config, tx, mesh,
                                                                            rules)

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

  def check_saved_meta(saved_meta):
    """A checkpoint's meta must match this run's PRNG, data and frozen text encoder."""
    check_resume_prng_impl(saved_meta.get('config', {}), config, workdir)
    check_resume_reuse(saved_meta.get('config', {}), config, workdir)
    train_data.check_resume_identities(saved_meta.get('data', {}), meta['data'], workdir)
    if 'text_encoder' in saved_meta:
      t5_loader.check_t5_identity(saved_meta['text_encoder'], config.model.text_encoder.path)

  with nn.logical_axis_rules(rules):
    # The newest INTACT checkpoint: damaged ones are moved aside (checkpoint_faults).
    restored = checkpointer.restore_latest(
        checkpointing.abstract_with_shardings(abstract_state, state_shardings), data.iterators,
        check_meta=check_saved_meta)
    if restored is not None:
      latest, state = restored
      print(f'Resumed from {checkpointer.directory} at step {latest}.', flush=True)
    else:
      state = jax.jit(functools.partial(state_lib.init_train_state, config, tx),
                      out_shardings=state_shardings)(state_lib.seed_key_data(config))
      if config.get('init_from'):
        state = state.replace(params=state_lib.params_from_run(config.init_from, state.params,
                                                               state_shardings.params))
    step_fn = step_lib.jit_train_step(config, loss_fns, tx, schedule, state_shardings,
                                      registry.make_cycle_parts(config, model))
    eval_fn = jax.jit(functools.partial(step_lib.eval_step, loss_fns=loss_fns, model=model))
  evaluator = evaluation.maybe_suite(config, model, workdir)

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
  # Analytic FLOPs of one step (itit.models.flops), for TFLOP/s per device and MFU in the log.
  flops_per_step = registry.train_step_flops(config, list(loss_fns))['total']
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
        results = evaluate(eval_fn, state_lib.full_params(state.params, frozen), config, data,
                           mesh, rules, evaluator, writer, step)
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
    results = evaluate(eval_fn, state_lib.full_params(state.params, frozen), config, data, mesh,
                       rules, evaluator, writer, step)
    if jax.process_index() == 0:
      with open(os.path.join(workdir, 'eval.json'), 'w') as f:
        json.dump({'step': step, **results}, f, indent=2)
  except OSError as e:  # the metrics or an evaluator's files; a checkpoint's is DiskFullError
    if not checkpoint_faults.is_disk_full(e):
      raise
    raise checkpointing.DiskFullError(
        f'disk full writing {e.filename or workdir}: free space in {os.path.abspath(workdir)} '
        'and re-run the same command (it resumes from the last checkpoint)') from None
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
  evaluators (`eval.evaluators`: itit/evaluation); written as eval/*."""
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

r"""Trains the VQGAN image tokenizer.

  python -m itit.train_tokenizer --config=configs/vqgan_shapes.py --workdir=DIR \
      [--config.total_steps=...]

Re-running the same command in the same workdir resumes from the last checkpoint and ends with
bitwise the same parameters as an uninterrupted run: the batch of step s is a pure function of
(config.seed, s), and so is every random choice of the step.

The workdir gets: checkpoints/ (Orbax), metrics.jsonl + tensorboard/ (scalars), images/
(reconstruction grids: originals above, reconstructions below), eval.json (held-out evaluation),
tokenizer.msgpack + tokenizer_config.json (`vqgan.load_tokenizer(DIR)` reads them).

The training library is itit/vqgan_training/: data.py (batches, held-out set), step.py (state,
optimizer, train step, evaluation) and losses.py; this module is the command and its loop.
"""
import functools
import json
import os
import signal

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from itit import errors
from itit.models import vqgan
from itit.trainer import metric_writer
from itit.vqgan_training import data as vqgan_data
from itit.vqgan_training import losses
from itit.vqgan_training import step as vqgan_step

_CONFIG = errors.config_flag('Tokenizer config (configs/vqgan_*.py).')
_WORKDIR = errors.string_flag('workdir', 'Output directory; re-running resumes in it.')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (resuming from workdir's last checkpoint), evaluates, writes the tokenizer."""
  os.makedirs(workdir, exist_ok=True)
  train_files, eval_files = (vqgan_data.image_files(config) if config.data.source == 'folder'
                             else (None, None))
  if train_files is not None:  # refuse a folder with no usable image now, not in the loop
    vqgan_data.check_train_files(config, train_files)
  feature_net = None
  if config.loss.perceptual_weight:
    feature_net = losses.load_feature_net(config.loss.perceptual_weights)
  eval_images, parse_images = vqgan_data.eval_set(config, eval_files)

  manager = ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, 'checkpoints')),
      options=ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints, create=True))
  abstract_state = jax.eval_shape(functools.partial(vqgan_step.init_state, config))
  last = manager.latest_step()
  if last is None:
    state = vqgan_step.init_state(config)
  else:
    state = manager.restore(last, args=ocp.args.StandardRestore(abstract_state))
    print(f'Resuming from {workdir}/checkpoints step {last}.', flush=True)
  step = int(state['step'])

  train_step = vqgan_step.make_train_step(config, feature_net)
  writer = metric_writer.MetricWriter(workdir)
  progress = metric_writer.Progress(config.total_steps, step)
  preempted = []
  previous_handler = signal.signal(signal.SIGTERM, lambda *_: preempted.append(True))
  to_float = lambda x: jnp.asarray(x, jnp.float32) / 255.0
  log_metrics = []
  try:
    while step < config.total_steps and not preempted:
      images = to_float(vqgan_data.train_batch(config, step, train_files))
      state, metrics = train_step(state, images)
      step += 1
      log_metrics.append(metrics)
      if step % config.log_every == 0 or step == config.total_steps:
        means = {k: float(np.mean([m[k] for m in log_metrics])) for k in log_metrics[0]}
        means['restarted_codes'] = float(sum(m['restarted_codes'] for m in log_metrics))
        if not all(np.isfinite(v) for v in means.values()):
          raise FloatingPointError(f'non-finite metrics between steps {step - len(log_metrics)}'
                                   f' and {step}: {means}')
        log_metrics = []
        writer.write_scalars(step, means)
        progress.report(step, {k: means[k] for k in ('loss', 'psnr', 'codebook_usage')})
      if step % config.image_every == 0 or step == config.total_steps:
        results, reconstructions = vqgan_step.evaluate(state['params'], config, eval_images[:64],
                                                       parse_images)
        writer.write_scalars(step, {f'eval/{k}': v for k, v in results.items()})
        writer.write_images(step, {'reconstructions': vqgan_step.reconstruction_grid(
            eval_images, reconstructions)})
      if step % config.checkpoint_every == 0 or step == config.total_steps:
        manager.save(step, args=ocp.args.StandardSave(state))
    if preempted:
      manager.save(step, args=ocp.args.StandardSave(state), force=True)
  finally:
    manager.wait_until_finished()
    signal.signal(signal.SIGTERM, previous_handler)
    writer.flush()
  if preempted:
    manager.close()
    writer.close()
    raise SystemExit(f'SIGTERM: saved step {step} to {workdir}/checkpoints; re-run to resume.')

  results, _ = vqgan_step.evaluate(state['params'], config, eval_images, parse_images)
  results['step'] = step
  results['sha256'] = vqgan.save_tokenizer(workdir, state['params'], config)
  with open(os.path.join(workdir, 'eval.json'), 'w') as f:
    json.dump(results, f, indent=2)
  writer.write_scalars(step, {f'final/{k}': v for k, v in results.items()
                              if isinstance(v, (int, float))})
  manager.close()
  writer.close()
  print(json.dumps(results), flush=True)
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required.')
  errors.quiet_library_logs()
  train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  errors.run_app(main, outputs=lambda: [_WORKDIR.value])

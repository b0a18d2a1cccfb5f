r"""Per-loss gradients of a trained run: how much each loss pushes each part of the model.

  python -m tools.loss_gradients --workdir=RUN [--batches=4] [--out=FILE.json]

For every kept checkpoint of RUN (so over training), on `--batches` training batches drawn as
the run draws them, the gradient of each enabled loss separately (the train step sums them,
itit/trainer/step.py): its L2 norm over the whole model and per part (the shared encoder, the image
decoder, the text decoder, the text encoder), and the cosine between every two losses' whole
gradients. A cycle loss that helps points with the paired losses (cosine > 0); one with a tiny
norm next to them barely moves the model. This is the study's evidence for why a table-2 row
does or does not beat another (docs/results/). With a frozen T5 text encoder its gradient is
reported too, though training never applies it.
"""
from __future__ import annotations

import itertools
import json
from typing import Mapping

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import optax

from itit import errors
from itit.losses import registry
from itit.models import itit as itit_model
from itit.trainer import checkpointing
from itit.trainer import run as run_lib
from itit.trainer import step as step_lib
from itit.trainer import train_data


def per_loss_gradients(params, batch: Mapping, rng: jax.Array, loss_fns) -> dict:
  """{loss name: gradient of that loss alone}, each with the key the train step gives it."""
  grads = {}
  for name, (stream, fn) in sorted(loss_fns.items()):
    loss_fn = lambda p, fn=fn, stream=stream, name=name: fn(
        p, batch[stream], step_lib.loss_rng(rng, name))[0]
    grads[name] = jax.grad(loss_fn)(params)
  return grads


def gradient_summary(grads: Mapping) -> dict:
  """Norms (whole model and per part) of each loss's gradient, and pairwise cosines."""
  summary = {}
  for name, grad in grads.items():
    summary[f'{name}/norm'] = optax.tree.norm(grad)
    by_part = {}
    for module, subtree in grad.items():
      by_part.setdefault(itit_model.part_of(module), []).append(subtree)
    for part, subtrees in by_part.items():
      summary[f'{name}/norm_{part}'] = optax.tree.norm(subtrees)
  for a, b in itertools.combinations(sorted(grads), 2):
    denominator = jnp.maximum(summary[f'{a}/norm'] * summary[f'{b}/norm'], 1e-30)
    summary[f'cosine/{a}|{b}'] = optax.tree.vdot(grads[a], grads[b]) / denominator
  return summary


def run_summaries(workdir: str, steps, num_batches: int, log=print) -> list[dict]:
  """Per checkpoint step: the mean over `num_batches` training batches of `gradient_summary`.

  The batches are the run's first training batches (its streams and seed), the same for every
  step, so the rows differ only by the parameters.
  """
  rows, summarize = [], None
  for step in steps:
    config, model, params, _ = run_lib.load_run(workdir, step)
    if summarize is None:  # the config is the same at every step
      loss_fns = registry.make_loss_fns(config, model)
      data = train_data.TrainData(config, sorted({s for s, _ in loss_fns.values()}))
      batches = [data.next_batch() for _ in range(num_batches)]
      summarize = jax.jit(lambda p, batch, rng: gradient_summary(
          per_loss_gradients(p, batch, rng, loss_fns)))
      rng = jax.random.PRNGKey(config.seed)
    totals = {}
    for index, batch in enumerate(batches):
      values = jax.device_get(summarize(params, batch, jax.random.fold_in(rng, index)))
      for key, value in values.items():
        totals[key] = totals.get(key, 0.0) + float(value) / num_batches
    rows.append(dict(step=step, losses=sorted(loss_fns), **totals))
    log(f'step {step}: ' + ', '.join(f'{k}={v:.3g}' for k, v in totals.items()
                                     if k.endswith('/norm') or k.startswith('cosine/')))
  return rows


def format_table(rows: list[dict]) -> str:
  """A Markdown table: a row per checkpoint, a column per figure."""
  keys = sorted({k for row in rows for k in row if k not in ('step', 'losses')})
  lines = ['| step | ' + ' | '.join(keys) + ' |', '|---:|' + '---:|' * len(keys)]
  for row in rows:
    lines.append(f'| {row["step"]} | ' + ' | '.join(
        f'{row[k]:.3g}' if k in row else '–' for k in keys) + ' |')
  return '\n'.join(lines)


def define_flags() -> None:
  """Defined only when run as a program; --workdir is shared with itit.train, imported here."""
  errors.string_flag('workdir', 'An itit.train workdir (config.json + checkpoints/).')
  flags.DEFINE_integer('batches', 4, 'Training batches averaged per checkpoint.')
  flags.DEFINE_string('out', None, 'JSON file for the figures; default: print only.')


def main(argv):
  del argv
  args = flags.FLAGS
  errors.quiet_library_logs()
  if not args.workdir:
    raise app.UsageError('--workdir is required')
  run_lib.check_workdir(args.workdir)
  steps = checkpointing.all_steps(args.workdir)
  rows = run_summaries(args.workdir, steps, args.batches)
  print(format_table(rows))
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(dict(workdir=args.workdir, batches=args.batches, rows=rows), f, indent=1)
    print(f'Wrote {args.out}')


if __name__ == '__main__':
  define_flags()
  errors.run_app(main)

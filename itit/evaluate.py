r"""Evaluates a trained run: `python -m itit.evaluate --workdir=DIR --eval=shapes,cycle`.

  python -m itit.evaluate --workdir=DIR --eval=coco_captions,coco_fid \
      --config.coco.dataset_json=dataset_coco.json --config.coco.images=COCO_ROOT \
      --config.coco_fid.annotations=COCO_ROOT/annotations/captions_val2014.json \
      --config.coco_fid.images=COCO_ROOT/val2014 --config.inception=inception_fid.npz

Reads the run's config.json and checkpoint (latest, or --step), and the VQGAN and SentencePiece
model that made its data. The evaluator settings are `itit.evaluators.default_config()`, updated
by the run's `eval` block, updated by `--config.*` flags. Writes DIR/eval/<step>.json (metrics,
notes, settings; metrics of earlier calls at the same step are kept unless recomputed), a
Markdown table DIR/eval/<step>.md, and for coco_captions the captions in COCO's results format
DIR/eval/<step>_coco_captions.json.
"""
from __future__ import annotations

import argparse
import json
import os

from absl import app
from absl import flags
import jax
import ml_collections
from ml_collections import config_flags

from itit import checkpointing
from itit import errors
from itit import evaluators
from itit.evaluators import common
from itit.models import itit as itit_model
from itit.models import t5_loader



def load_run(workdir: str, step: int | None = None):
  """(config, model, full params, step) of a training workdir's checkpoint."""
  config_path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(config_path):
    raise FileNotFoundError(f'{config_path} is missing: --workdir must be an itit.train workdir')
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  params, step = checkpointing.load_params(workdir, step)
  if config.model.text_encoder.kind == 't5':  # the frozen encoder is not in the checkpoint
    frozen = t5_loader.load_t5_params(config.model.text_encoder.path,
                                      config.model.text_encoder.t5)
    params = t5_loader.merge(params, frozen)
  return config, itit_model.ITIT(config.model), params, step


def run_argument_parser(doc: str) -> argparse.ArgumentParser:
  """An argparse parser for a diagnostic script over one run's split: --workdir, --step,
  --split, --num_examples, --seed; `doc`'s first paragraph is its description."""
  parser = argparse.ArgumentParser(description=doc.split('\n\n')[0])
  parser.add_argument('--workdir', required=True, help='an itit.train workdir')
  parser.add_argument('--step', type=int, default=None, help='checkpoint (default latest)')
  parser.add_argument('--split', default='test', help="a prepared split of the run's data")
  parser.add_argument('--num_examples', type=int, default=256)
  parser.add_argument('--seed', type=int, default=0)
  return parser


def markdown_table(workdir: str, step: int, metrics: dict, notes: list[str]) -> str:
  """The metrics as a Markdown table, grouped by evaluator prefix, then the notes."""
  lines = [f'# Evaluation of `{workdir}` at step {step}', '', '| evaluator | metric | value |',
           '|---|---|---:|']
  for name in sorted(metrics):
    group, _, metric = name.rpartition('/')
    value = metrics[name]
    shown = f'{value:.0f}' if metric.startswith('num_') else f'{value:.4f}'
    lines.append(f'| {group} | {metric} | {shown} |')
  if notes:
    lines += ['', 'Notes:', ''] + [f'- {note}' for note in notes]
  return '\n'.join(lines) + '\n'


def write_results(out_dir: str, workdir: str, step: int, metrics: dict, notes: list[str],
                  settings: dict) -> tuple[str, str]:
  """Writes OUT/<step>.json (merged with earlier metrics of that step) and OUT/<step>.md."""
  os.makedirs(out_dir, exist_ok=True)
  json_path = os.path.join(out_dir, f'{step}.json')
  previous = {}
  if os.path.isfile(json_path):
    with open(json_path) as f:
      previous = json.load(f)
  merged = dict(previous.get('metrics', {}), **metrics)
  all_notes = list(dict.fromkeys(previous.get('notes', []) + notes))
  with open(json_path, 'w') as f:
    json.dump(dict(workdir=workdir, step=step, metrics=merged, notes=all_notes,
                   settings=settings), f, indent=2)
  md_path = os.path.join(out_dir, f'{step}.md')
  with open(md_path, 'w') as f:
    f.write(markdown_table(workdir, step, merged, all_notes))
  return json_path, md_path


def evaluate_run(workdir: str, names, *, step: int | None = None, overrides=None,
                 out_dir: str | None = None) -> dict:
  """Runs the evaluators `names` on a workdir's checkpoint and writes the results.

  Args:
    workdir: an itit.train workdir. names: evaluator names (list or comma string).
    step: checkpoint step (default the latest). overrides: `eval.*` settings (nested dict) on
      top of the run's own `eval` block. out_dir: default WORKDIR/eval.

  Returns:
    {'metrics': {...}, 'notes': [...], 'json': path, 'markdown': path, 'step': step}.
  """
  jax.config.update('jax_threefry_partitionable', True)  # as in training: the same samples
  names = evaluators.parse_names(names)
  if not names:
    raise ValueError(f'no evaluator given: choose from {", ".join(evaluators.NAMES)}')
  config, model, params, step = load_run(workdir, step)
  eval_config = evaluators.merged_config(config.get('eval', None), overrides)
  out_dir = out_dir or os.path.join(workdir, 'eval')
  context = common.EvalContext(config, model, eval_config, workdir=workdir, out_dir=out_dir)
  suite = evaluators.Suite(context, names)
  metrics, _ = suite.run(params, step=step)
  json_path, md_path = write_results(out_dir, os.path.abspath(workdir), step, metrics,
                                     suite.notes, eval_config.to_dict())
  written = {'json': json_path, 'markdown': md_path}
  for evaluator in suite.evaluators:
    if evaluator.name == 'coco_captions':
      path = os.path.join(out_dir, f'{step}_coco_captions.json')
      with open(path, 'w') as f:
        json.dump([{'image_id': i, 'caption': c} for i, c in evaluator.predictions.items()], f)
      written['coco_captions'] = path
  return dict(metrics=metrics, notes=suite.notes, step=step, **written)


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, since itit.train and
  itit.prepare define `--config` and `--workdir` too and a process may import all three."""
  flags.DEFINE_string('workdir', None, 'A training workdir (config.json + checkpoints/).')
  flags.DEFINE_string('eval', 'shapes,cycle',
                      f'Comma list of evaluators: {", ".join(evaluators.NAMES)}.')
  flags.DEFINE_integer('step', None, 'Checkpoint step; default the latest.')
  flags.DEFINE_string('out', None, 'Output folder; default WORKDIR/eval.')
  config_flags.DEFINE_config_dict(
      'config', evaluators.default_config(),
      'Evaluator settings, e.g. --config.num_examples=512 --config.coco.beam_size=1.')


def _flag_overrides() -> dict:
  """The `--config.*` settings given on the command line, as a nested dict."""
  overrides = {}
  for name in flags.FLAGS:
    if name.startswith('config.') and flags.FLAGS[name].present:
      *parents, leaf = name.split('.')[1:]
      target, source = overrides, flags.FLAGS.config
      for parent in parents:
        target = target.setdefault(parent, {})
        source = source[parent]
      target[leaf] = source[leaf]
  return overrides


def main(argv):
  errors.quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  args = flags.FLAGS
  if not args.workdir:
    raise app.UsageError('--workdir is required')
  result = evaluate_run(args.workdir, args.eval, step=args.step, overrides=_flag_overrides(),
                        out_dir=args.out)
  print(markdown_table(os.path.abspath(args.workdir), result['step'], result['metrics'],
                       result['notes']))
  print('Wrote ' + ', '.join(result[k] for k in ('json', 'markdown', 'coco_captions')
                             if k in result))


if __name__ == '__main__':
  define_flags()
  app.run(main)

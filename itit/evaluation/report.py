"""Evaluating a training workdir's checkpoint with the evaluator suite, and writing the results:
WORKDIR/eval/<step>.json (metrics, notes, settings; metrics of earlier calls at the same step
kept unless recomputed), <step>.md, for coco_captions <step>_coco_captions.json and for folder
<step>_folder_captions.jsonl (the generated captions, {"image", "caption"} per line). The
command line over this is `python -m itit.evaluate`."""
from __future__ import annotations

import json
import os

import jax

from itit import errors
from itit import evaluation
from itit.evaluation import common
from itit.trainer import run as run_lib


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
  names = evaluation.parse_names(names)
  if not names:
    raise errors.UserError(f'no evaluator given: choose from {", ".join(evaluation.NAMES)} '
                           '(e.g. --eval=shapes,cycle)')
  config, model, params, step = run_lib.load_run(workdir, step)
  eval_config = evaluation.merged_config(config.get('eval', None), overrides)
  out_dir = out_dir or os.path.join(workdir, 'eval')
  context = common.EvalContext(config, model, eval_config, workdir=workdir, out_dir=out_dir)
  suite = evaluation.Suite(context, names)
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
    if evaluator.name == 'folder':  # an image folder's captions file, as prepare reads one
      path = os.path.join(out_dir, f'{step}_folder_captions.jsonl')
      with open(path, 'w') as f:
        for name, caption in evaluator.predictions.items():
          f.write(json.dumps({'image': name, 'caption': caption}) + '\n')
      written['folder_captions'] = path
  return dict(metrics=metrics, notes=suite.notes, step=step, **written)

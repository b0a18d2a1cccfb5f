r"""Evaluates a trained run: `python -m itit.evaluate --workdir=DIR --eval=shapes,cycle`.

  python -m itit.evaluate --workdir=DIR --eval=coco_captions,coco_fid \
      --config.coco.dataset_json=dataset_coco.json --config.coco.images=COCO_ROOT \
      --config.coco_fid.annotations=COCO_ROOT/annotations/captions_val2014.json \
      --config.coco_fid.images=COCO_ROOT/val2014 --config.inception=inception_fid.npz

Reads the run's config.json and checkpoint (latest, or --step), and the VQGAN and SentencePiece
model that made its data. The evaluator settings are `itit.evaluation.default_config()`, updated
by the run's `eval` block, updated by `--config.*` flags. Writes DIR/eval/<step>.json (metrics,
notes, settings; metrics of earlier calls at the same step are kept unless recomputed), a
Markdown table DIR/eval/<step>.md, for coco_captions the captions in COCO's results format
DIR/eval/<step>_coco_captions.json, and for folder (a captioned test folder of your own images,
`--config.folder.images=DATA/test`) its generated captions DIR/eval/<step>_folder_captions.jsonl.
"""
from __future__ import annotations

import os

from absl import app
from absl import flags
from ml_collections import config_flags

from itit import errors
from itit import evaluation
from itit.evaluation import report


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, since itit.train and
  itit.prepare define `--config` and `--workdir` too and a process may import all three."""
  flags.DEFINE_string('workdir', None, 'A training workdir (config.json + checkpoints/).')
  flags.DEFINE_string('eval', 'shapes,cycle',
                      f'Comma list of evaluators: {", ".join(evaluation.NAMES)}.')
  flags.DEFINE_integer('step', None, 'Checkpoint step; default the latest.')
  flags.DEFINE_string('out', None, 'Output folder; default WORKDIR/eval.')
  config_flags.DEFINE_config_dict(
      'config', evaluation.default_config(),
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
  result = report.evaluate_run(args.workdir, args.eval, step=args.step, overrides=_flag_overrides(),
                        out_dir=args.out)
  print(report.markdown_table(os.path.abspath(args.workdir), result['step'], result['metrics'],
                       result['notes']))
  print('Wrote ' + ', '.join(result[k] for k in ('json', 'markdown', 'coco_captions',
                                                 'folder_captions') if k in result))


if __name__ == '__main__':
  define_flags()
  errors.run_app(main, outputs=lambda: [flags.FLAGS.out or flags.FLAGS.workdir and os.path.join(
      flags.FLAGS.workdir, 'eval')])

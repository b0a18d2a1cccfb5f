"""A finished or running training workdir, read back: its config, model and parameters, and the
flags every diagnostic over one run shares."""
from __future__ import annotations

import argparse
import json
import os

import ml_collections

from itit import errors
from itit.models import itit as itit_model
from itit.models import t5_loader
from itit.trainer import checkpoint_faults
from itit.trainer import checkpointing


def check_workdir(workdir: str, step: int | None = None) -> None:
  """Refuses, in one `UserError` line, a workdir without config.json or checkpoint, and a `step`
  it has no checkpoint of (listing the steps it has); reads no checkpoint."""
  if not os.path.isdir(workdir):
    raise errors.MissingFileError(f'workdir {workdir} does not exist: pass the --workdir of an '
                                  'itit.train run')
  config_path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(config_path):
    raise errors.MissingFileError(f'{config_path} is missing: {workdir} is not an itit.train '
                                  'workdir (pass the --workdir of an itit.train run)')
  steps = checkpointing.all_steps(workdir)
  # Only damaged steps (checkpoints/damaged/): load_params says which, in its own line.
  if not steps and not checkpoint_faults.damaged_names(os.path.join(workdir, 'checkpoints')):
    raise errors.MissingFileError(f'{os.path.join(workdir, "checkpoints")} holds no checkpoint: '
                                  'train first (python -m itit.train), or pass another --workdir')
  if step is not None and step not in steps:
    shown = steps if len(steps) <= 12 else steps[:6] + ['...'] + steps[-6:]
    raise errors.UserError(f'{workdir} has no checkpoint of step {step}; its steps are '
                           f'{", ".join(map(str, shown))} (pass one as --step, or no --step for '
                           'the latest)')


# Config fields added after runs were saved without them, each at the value that reproduces how
# those runs trained (every new field defaults to the behaviour from before it existed).
LATER_FIELDS = {
    'cycle.sample_temperature': 1.0,
    'cycle.t2i2t_trains_captioner': True,
    'cycle.reuse': 1,
    'cycle.encoder_grad_scale': 1.0,
}


def with_later_fields(saved: dict) -> dict:
  """A run's saved config (config.json) with the LATER_FIELDS it predates added; saved values
  win, so older runs load (evaluate, sample, tools) as they trained."""
  merged = json.loads(json.dumps(saved))
  for path, value in LATER_FIELDS.items():
    *sections, field = path.split('.')
    node = merged
    for section in sections:
      node = node.get(section)
      if not isinstance(node, dict):
        break
    else:
      node.setdefault(field, value)
  return merged


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a training workdir trained with (its config.json, `with_later_fields`)."""
  with open(os.path.join(workdir, 'config.json')) as f:
    return ml_collections.ConfigDict(with_later_fields(json.load(f)))


def load_run(workdir: str, step: int | None = None):
  """(config, model, full params, step) of a training workdir's checkpoint."""
  check_workdir(workdir, step)
  config = load_config(workdir)
  params, step = checkpointing.load_params(workdir, step)
  if config.model.text_encoder.kind == 't5':  # the frozen encoder is not in the checkpoint
    frozen = t5_loader.load_t5_params(config.model.text_encoder.path,
                                      config.model.text_encoder.t5)
    params = t5_loader.merge(params, frozen)
  return config, itit_model.ITIT(config.model), params, step


def run_argument_parser(doc: str) -> argparse.ArgumentParser:
  """An argparse parser for a diagnostic script over one run's split: --workdir, --step,
  --split, --num_examples, --seed; `doc`'s first paragraph is its description."""
  parser = errors.ArgumentParser(description=doc.split('\n\n')[0])
  parser.add_argument('--workdir', required=True, help='an itit.train workdir')
  parser.add_argument('--step', type=int, default=None, help='checkpoint (default latest)')
  parser.add_argument('--split', default='test', help="a prepared split of the run's data")
  parser.add_argument('--num_examples', type=int, default=256)
  parser.add_argument('--seed', type=int, default=0)
  return parser

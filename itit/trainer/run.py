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


def with_later_fields(saved: dict) -> dict:
  """A run's saved config (config.json) plus the fields added to the configs after it was
  written, at their defaults: a new field defaults to the behaviour from before it existed
  (e.g. cycle.sample_temperature 1.0), so older runs load as they trained. Saved values win."""
  from configs import base  # pylint: disable=g-import-not-at-top  (configs import itit)

  def merge(saved_part, defaults):
    merged = dict(saved_part)
    for key, value in defaults.items():
      if key not in merged:
        merged[key] = value
      elif isinstance(value, dict) and isinstance(merged[key], dict):
        merged[key] = merge(merged[key], value)
    return merged

  return merge(saved, base.paper_config().to_dict())


def load_run(workdir: str, step: int | None = None):
  """(config, model, full params, step) of a training workdir's checkpoint."""
  check_workdir(workdir, step)
  config_path = os.path.join(workdir, 'config.json')
  with open(config_path) as f:
    config = ml_collections.ConfigDict(with_later_fields(json.load(f)))
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

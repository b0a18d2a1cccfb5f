"""The shapes-world study's design: its cells, their runs and the data each one sees.

A *cell* is one training setup: a table-2 row and the data it sees. `extra` is the fraction of
the training scenes outside the small paired set that the cell uses, either as unpaired images
and texts (ITIT's cycles; `itit.data.shapes_splits.make_splits` halves them into disjoint
image and text scenes) or, with `as_pairs`, as more pairs (`make_splits` extends the same
paired set). A cell runs once per seed: a *run*, whose results are one JSON file
`OUT/cells/<cell>-seed<k>.json`.

Two prepared datasets serve the table and the scaling curve: 'mixed' (the paired fraction +
unpaired images and texts) and 'pairs' (every training scene paired); partial data is
`data.max_records`, the first records of a stream (itit/trainer/train_data.py). A cell of the
paired-fraction sweep (`paired_fraction`) reads its own 'mixed_p<fraction>', prepared at that
fraction: `make_splits` pairs the first scenes of the same shuffled order at every fraction, so
it holds exactly the pairs of the as-pairs cell with as many. A `compositional` cell reads
'compositional', prepared with configs/prepare_shapes.py's `compositional` preset (the pairs show
half of the colour x shape looks, the unpaired data all) at the same fraction.

Every dataset is prepared at the budget's level (`prepare_arg`), so the counts here are the
prepared streams' counts at either level.
"""
from __future__ import annotations

import dataclasses

from configs import base


def cycle_warmup(start_step: int) -> tuple[tuple[str, int], ...]:
  """The ITIT recipe of the scaling curve: the cycles join at `start_step` (plan.py: halfway).

  Row 14 with cycles from step 0 trains on pseudo pairs that are still noise early on, and at
  the standard level's budget ended below pairs only
  (docs/results/standard_2026-11-28/ANALYSIS.md, sections 1-3), which would make the curve a
  measure of that, not of how much unpaired data buys; its full-data point is drawn on its own.
  """
  return (('cycle.start_step', start_step),)


def warmup_step(cell) -> int | None:
  """The step a cell's cycles join at when its only override is a `cycle_warmup`, else None."""
  step = dict(cell.overrides).get('cycle.start_step') if len(cell.overrides) == 1 else None
  return step if step else None


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
  # The pairs show only half of the colour x shape looks (the unpaired data all of them); the
  # cell is also evaluated on 'novel_test', the test scenes with a look no pair shows.
  compositional: bool = False

  @property
  def dataset(self) -> str:
    if self.as_pairs and self.extra > 0:
      return 'pairs'
    name = 'compositional' if self.compositional else 'mixed'
    return name if self.paired_fraction is None else f'{name}_p{self.paired_fraction:g}'


@dataclasses.dataclass(frozen=True)
class Run:
  cell: Cell
  seed: int

  @property
  def name(self) -> str:
    return f'{self.cell.name}-seed{self.seed}'


def make_cells(table) -> list[Cell]:
  cells = [row if isinstance(row, Cell) else Cell(*row) for row in table]
  for cell in cells:
    if cell.row not in base.TABLE2_ROWS or not 0.0 <= cell.extra <= 1.0 or cell.seeds < 1 or (
        not all(isinstance(o, tuple) and len(o) == 2 for o in cell.overrides)) or (
            cell.paired_fraction is not None and not 0.0 < cell.paired_fraction < 1.0):
      raise ValueError(f'study cell {cell}: row must be one of {sorted(base.TABLE2_ROWS)}, '
                       'extra in [0, 1], seeds >= 1, overrides (field, value) pairs and '
                       'paired_fraction None or in (0, 1)')
    if cell.as_pairs and (cell.paired_fraction is not None or cell.compositional):
      raise ValueError(f'study cell {cell.name}: an as-pairs cell reads the all-pairs data; '
                       'give paired_fraction or compositional only to cells of unpaired data')
    uses_unpaired = base.TABLE2_ROWS[cell.row][2:] != ('none', 'none')
    if uses_unpaired and (cell.as_pairs or cell.extra == 0):
      raise ValueError(f'study cell {cell.name}: row {cell.row} trains on unpaired data; give it '
                       'extra > 0 and as_pairs=False')
  return cells


def parse_seeds(text: str) -> tuple[int, int]:
  """`--seeds`: 'N' (seeds 1..N) or 'A-B' (seeds A..B, e.g. more seeds of a study whose VQGAN was
  lost: the runs on a new one pair only with each other). Returns (first, last)."""
  first, dash, last = text.strip().partition('-')
  try:
    bounds = (int(first), int(last)) if dash else (1, int(first))
  except ValueError:
    bounds = None
  if bounds is None or not 1 <= bounds[0] <= bounds[1]:
    raise ValueError(f'{text!r} is neither a count N (seeds 1..N) nor a range A-B with '
                     '1 <= A <= B (e.g. 3 or 4-6)')
  return bounds


def plan_runs(cells, names=None, seeds: int | tuple[int, int] | None = None) -> list[Run]:
  """Runs of the chosen cells (all if `names` is empty), seed by seed: every cell's first seed
  first, so a study cut short still has a whole table (fewer seeds), not a half one. `seeds`:
  None (each cell's own 1..cell.seeds), a count n (1..n) or a range (first, last)."""
  by_name = {cell.name: cell for cell in cells}
  unknown = [n for n in names or () if n not in by_name]
  if unknown:
    raise ValueError(f'--cells: unknown cell(s) {unknown}; the plan has {", ".join(by_name)}')
  chosen = [by_name[n] for n in names] if names else cells
  if isinstance(seeds, tuple):
    first, last = seeds
    return [Run(cell, seed) for seed in range(first, last + 1) for cell in chosen]
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


def prepare_arg(budget, fraction: float, compositional: bool = False) -> str:
  """The configs/prepare_shapes.py argument of a dataset: the budget's level, the paired
  fraction and the compositional preset, e.g. 'laptop,0.05,compositional' ('0.02' at the
  standard level)."""
  return ','.join(part for part in (budget['level'], str(fraction),
                                    'compositional' if compositional else '') if part)


def data_counts(budget, paired_fraction: float | None = None,
                compositional: bool = False) -> dict[str, int]:
  """Record counts of the prepared streams, computed as `make_splits` splits the scenes, at the
  budget's paired fraction or `paired_fraction`, from the config the prepare command reads."""
  from configs import prepare_shapes  # pylint: disable=g-import-not-at-top
  fraction = budget['paired_fraction'] if paired_fraction is None else paired_fraction
  config = set_fields(prepare_shapes.get_config(prepare_arg(budget, fraction, compositional)),
                      budget['prepare'], 'budget prepare')
  num_train = config.shapes.num_train
  paired = round(config.shapes.paired_fraction * num_train)
  rest = num_train - paired
  return dict(num_train=num_train, paired=paired, rest=rest, unpaired_image=(rest + 1) // 2,
              unpaired_text=rest // 2)


def cell_counts(cell: Cell, budget) -> dict[str, int]:
  """`data_counts` of the paired split the cell starts from (the counts every function below
  takes)."""
  return data_counts(budget, cell.paired_fraction, cell.compositional)


def datasets(cells, budget) -> dict[str, str]:
  """{dataset: its `prepare_arg`} of the cells, 'mixed' first: its SentencePiece model is the
  others' too, so every dataset tokenizes text alike."""
  args = {'mixed': prepare_arg(budget, budget['paired_fraction'])}
  for cell in cells:
    if cell.dataset == 'pairs':
      fraction = 1.0
    elif cell.paired_fraction is None:
      fraction = budget['paired_fraction']
    else:
      fraction = cell.paired_fraction
    args.setdefault(cell.dataset, prepare_arg(budget, fraction, cell.compositional))
  return args


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

"""The shapes-world study's results as tables and curves: mean ± std over seeds, per-seed
differences against row 3 (against row3_comp on novel looks, for the compositional cells), and
the series of the scaling curve and the paired-fraction sweep.

Results are the runs' JSON files, OUT/cells/<cell>-seed<k>.json (`load_results`).
"""
from __future__ import annotations

import json
import os

import numpy as np

from configs import base
from experiments.shapes_study import design

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
# The compositional cells' table: seen scenes, and 'novel_test' (the evaluator's
# 'shapes_novel_test/' metrics), the test scenes with a colour x shape look no pair shows.
COMPOSITIONAL_METRICS = (
    ('shapes/i2t_exact', 'caption exact % (seen)', 100.0),
    ('shapes/t2i_exact', 'T2I exact % (seen)', 100.0),
    ('shapes_novel_test/i2t_exact', 'caption exact % (novel looks)', 100.0),
    ('shapes_novel_test/t2i_exact', 'T2I exact % (novel looks)', 100.0),
    ('shapes_novel_test/i2t_color', 'caption colour % (novel looks)', 100.0),
    ('shapes_novel_test/t2i_color', 'T2I colour % (novel looks)', 100.0),
    ('shapes_novel_test/t2i_shape', 'T2I shape % (novel looks)', 100.0),
)


def load_results(out: str) -> dict[str, list[dict]]:
  """{cell name: [run results, by seed]} from OUT/cells/*.json."""
  folder = os.path.join(out, 'cells')
  results = {}
  for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
    if name.endswith('.json'):
      with open(os.path.join(folder, name)) as f:
        result = json.load(f)
      results.setdefault(result['cell']['name'], []).append(result)
  for runs in results.values():
    runs.sort(key=lambda r: r['seed'])
  return results


def pair_key(run: dict) -> tuple:
  """What two runs share to be compared seed by seed: the seed and the image tokenizer their
  shards were made with (`image_tokenizer`, the VQGAN's sha256). A re-trained VQGAN gives other
  tokens, which moves a cell as much as a seed does, so runs on two tokenizers are no pair."""
  return run['seed'], run.get('image_tokenizer')


def paired_differences(results, name: str, reference: str, metric: str,
                       scale: float = 100.0) -> list[float]:
  """`scale` x (`name` - `reference`) in `metric`, per run of `name` with a twin of the same
  `pair_key` in `reference` where both have the metric."""
  twins = {pair_key(r): r['metrics'] for r in results.get(reference, [])}
  return [scale * (r['metrics'][metric] - twins[pair_key(r)][metric])
          for r in results.get(name, [])
          if pair_key(r) in twins and metric in r['metrics'] and metric in twins[pair_key(r)]]


def tokenizer_note(results) -> str:
  """One sentence where the runs read shards of more than one image tokenizer (a VQGAN
  re-trained after its scratch folder was lost): how many runs each, and that comparisons stay
  within one. '' for one tokenizer."""
  counts = {}
  for runs in results.values():
    for run in runs:
      tokenizer = run.get('image_tokenizer') or 'not recorded'
      counts[tokenizer] = counts.get(tokenizer, 0) + 1
  if len(counts) < 2:
    return ''
  parts = [f'{n} on {name[:12] + "…" if len(name) == 64 else name}' for name, n in counts.items()]
  return (f'The runs read shards of {len(counts)} image tokenizers (VQGANs): '
          + '; '.join(parts) + '. Per-seed differences and gaps pair runs of one tokenizer only.')


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


def table_markdown(cells, results, metrics=METRICS) -> str:
  """Table 2's layout: a row per cell, its losses as ✓ columns, then metrics mean ± std; a
  metric no run of the cells has (e.g. held-out scenes at the laptop level) gets no column."""
  metrics = [m for m in metrics if any(m[0] in r['metrics'] for c in cells
                                       for r in results.get(c.name, []))]
  header = (['cell', 'row', 'T2I', 'I2T', 'T2T', 'I2I', 'T2I2T', 'I2T2I', 'data', 'seeds']
            + [label for _, label, _ in metrics])
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * 10 + '---:|' * len(metrics)]
  for cell in cells:
    runs = results.get(cell.name, [])
    if not runs:
      continue
    pairs, extra = runs[0].get('paired_records', '?'), runs[0].get('extra_scenes', 0)
    data = f'{pairs} pairs' + (f' + {extra} unpaired' if extra and not cell.as_pairs else '')
    values = [format_cell([r['metrics'][m] for r in runs if m in r['metrics']], scale)
              for m, _, scale in metrics]
    lines.append('| ' + ' | '.join([cell.name, str(cell.row)] + _loss_marks(cell.row)
                                   + [data, str(len(runs))] + values) + ' |')
  return '\n'.join(lines) + '\n'


# The figures `seed_differences_markdown` compares with row 3 (all higher-is-better).
DIFFERENCE_METRICS = (
    ('shapes/i2t_exact', 'caption exact', 100.0),
    ('shapes/t2i_exact', 'T2I exact', 100.0),
    ('shapes/i2t_tf_valid_accuracy', 'caption teacher-forced valid', 100.0),
    ('shapes/i2t_color', 'caption colour', 100.0),
    ('shapes/i2t_cider', 'caption CIDEr', 100.0),
    ('shapes/t2i_color', 'T2I colour', 100.0),
    ('shapes/t2i_shape', 'T2I shape', 100.0),
    ('shapes_heldout_test/i2t_cider', 'caption CIDEr (held-out)', 100.0),
)
# What the compositional cells are compared on with row3_comp: the looks no pair shows.
NOVEL_DIFFERENCE_METRICS = (
    ('shapes_novel_test/i2t_exact', 'caption exact (novel looks)', 100.0),
    ('shapes_novel_test/t2i_exact', 'T2I exact (novel looks)', 100.0),
    ('shapes_novel_test/i2t_color', 'caption colour (novel looks)', 100.0),
    ('shapes_novel_test/t2i_color', 'T2I colour (novel looks)', 100.0),
)


def paired_t_pvalue(differences) -> float | None:
  """Two-sided p-value of the paired t-test that the mean per-seed difference is 0.

  None for fewer than 2 seeds; differences that are all equal (up to rounding) give 0, or 1
  when they are all 0.
  t = mean / (std / sqrt(n)) with n - 1 degrees of freedom; the tail is the regularised
  incomplete beta function I_{df / (df + t^2)}(df / 2, 1 / 2).
  """
  differences = np.asarray(differences, np.float64)
  count = len(differences)
  if count < 2:
    return None
  mean, std = differences.mean(), differences.std(ddof=1)
  if std <= 1e-9 * max(1.0, abs(mean)):  # equal up to rounding (scores are counts / n)
    return 1.0 if abs(mean) <= 1e-9 else 0.0
  t = mean / (std / np.sqrt(count))
  dof = count - 1
  from jax.scipy import special  # pylint: disable=g-import-not-at-top
  return float(special.betainc(dof / 2, 0.5, dof / (dof + t * t)))


def format_difference(differences) -> str:
  """'+25.0 ± 7.1 (2/2 ahead, p 0.26)': mean ± std, seeds ahead, paired t-test's p."""
  mean, std = mean_std(differences)
  spread = f' ± {std:.1f}' if len(differences) > 1 else ''
  p_value = paired_t_pvalue(differences)
  test = '' if p_value is None else (', p < 0.001' if p_value < 1e-3 else f', p {p_value:.2g}')
  ahead = sum(d > 0 for d in differences)
  return f'{mean:+.1f}{spread} ({ahead}/{len(differences)}{test})'


def seed_differences_markdown(cells, results, reference: str = 'row3',
                              metrics=DIFFERENCE_METRICS) -> str:
  """Each cell minus `reference` on the SAME seed: mean ± std of the differences, on how
  many seeds the cell is ahead ("2/3"), and the paired t-test's p-value (from 2 seeds).

  Cells trained on the reference's data with the same seed start from its initial parameters
  and read its paired batches in its order (row 14 with a cycle warm-up is bitwise row 3 until
  the cycles join), so a per-seed difference removes the seed's own luck, which the separate
  means of `table_markdown` keep. Runs pair by `pair_key` (the seed and the image tokenizer);
  cells without such a pair with the reference are left out. Returns '' when no cell has one.
  """
  by_seed = {pair_key(r): r['metrics'] for r in results.get(reference, [])}
  header = ['cell', 'seeds'] + [label for _, label, _ in metrics]
  lines = []
  for cell in cells:
    runs = [r for r in results.get(cell.name, []) if pair_key(r) in by_seed]
    if cell.name == reference or not runs:
      continue
    values = []
    for metric, _, scale in metrics:
      diffs = paired_differences(results, cell.name, reference, metric, scale)
      if not diffs:
        values.append('–')
        continue
      values.append(format_difference(diffs))
    lines.append('| ' + ' | '.join([cell.name, ','.join(str(r['seed']) for r in runs)]
                                   + values) + ' |')
  if not lines:
    return ''
  return '\n'.join(['| ' + ' | '.join(header) + ' |', '|---|---|' + '---:|' * len(metrics)]
                   + lines) + '\n'


SCALING_SERIES = ('ITIT with a cycle warm-up (extra scenes unpaired)',
                  'baseline (extra scenes as pairs)',
                  'ITIT, cycles from step 0 (row 14)',
                  "ITIT with T2I2T's captioner fixed (extra scenes unpaired)")


def scaling_series(cells, results, metric: str) -> dict[str, list[tuple[int, float, float]]]:
  """{series: [(extra scenes, mean, std)]} of SCALING_SERIES, by x.

  The warm-up, baseline and fixed-captioner curves start at the pairs-only cell (row 3, no
  extra data); ITIT's points are the row-14 cells trained with a design.cycle_warmup, the
  baseline's the as-pairs cells, the fixed-captioner curve's the row-14 cells whose only
  override is cycle.t2i2t_trains_captioner=False; row-14 cells without overrides form the
  third series. Other variants, sweep cells and compositional cells (other data) are not on
  the curve.
  """
  itit, pairs, from_step0, fixed_captioner = SCALING_SERIES
  series = {name: [] for name in SCALING_SERIES}
  for cell in cells:
    runs = [r for r in results.get(cell.name, []) if metric in r['metrics']]
    if not runs or cell.paired_fraction is not None or cell.compositional:
      continue
    point = (runs[0]['extra_scenes'], *mean_std([r['metrics'][metric] * 100 for r in runs]))
    if cell.row == 3 and cell.extra == 0 and not cell.overrides:
      targets = [itit, pairs, fixed_captioner]
    elif cell.row == 14 and not cell.as_pairs and design.warmup_step(cell):
      targets = [itit]
    elif cell.row == 14 and not cell.as_pairs and not cell.overrides:
      targets = [from_step0]
    elif (cell.row == 14 and not cell.as_pairs
          and dict(cell.overrides) == {'cycle.t2i2t_trains_captioner': False}):
      targets = [fixed_captioner]
    elif cell.row == 3 and cell.as_pairs and not cell.overrides:
      targets = [pairs]
    else:
      continue
    for target in targets:
      series[target].append(point)
  if len(series[fixed_captioner]) == 1:  # the pairs-only point alone: no such cell has run
    series[fixed_captioner] = []
  return {name: sorted(points) for name, points in series.items()}


SWEEP_SERIES = ('pairs only (row 3)', 'ITIT (row 14): the other training scenes unpaired')


def sweep_series(cells, results, metric: str) -> dict[str, list[tuple[int, float, float]]]:
  """The paired-fraction sweep: {series: [(paired scenes, mean, std)]}, by x. Row-3 cells are
  the pairs-only curve, full-data row-14 cells the ITIT curve; both end at the all-paired cell,
  where no scene is left to be unpaired."""
  series = {name: [] for name in SWEEP_SERIES}
  for cell in cells:
    runs = [r for r in results.get(cell.name, []) if metric in r['metrics']]
    if not runs or cell.overrides or cell.compositional:
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


# The lead table's figures: the exact-scene accuracy of both directions.
LEAD_METRICS = (('shapes/i2t_exact', 'captions exact %'),
                ('shapes/t2i_exact', 'drawings exact %'))


def gap_closed(results, name: str, metric: str, reference: str = 'row3',
               bound: str = 'all_paired') -> list[float]:
  """Per seed (and tokenizer: `pair_key`) that `name`, `reference` and `bound` all have:
  (cell - reference) / (bound - reference), the fraction of the gap between pairs only and
  every scene paired that the cell closes (1 = the bound, < 0 = below pairs only). [] unless
  the bound is ahead of the reference on every seed the two share: where it is not, there is
  no gap to close and the ratio is noise over noise (the standard level's 800-step study)."""
  by_seed = lambda cell: {pair_key(r): r['metrics'][metric] for r in results.get(cell, [])
                          if metric in r['metrics']}
  low, high, cell = by_seed(reference), by_seed(bound), by_seed(name)
  if any(high[k] <= low[k] for k in low.keys() & high.keys()):
    return []
  keys = sorted(cell, key=lambda key: (key[0], str(key[1])))
  return [(cell[k] - low[k]) / (high[k] - low[k]) for k in keys if k in low and k in high]


def _exact_columns(name: str, results, metric: str, reference: str, gap_shown: bool = True,
                   bound: str = 'all_paired') -> list[str]:
  """A cell's three columns for `metric`: mean ± std (%), the per-seed difference against
  `reference` (`format_difference`, '–' for the reference itself) and the gap closed between
  row3 and `bound` (`gap_closed`, in %, with the number of seeds all three have)."""
  runs = results.get(name, [])
  diffs = paired_differences(results, name, reference, metric)
  gaps = gap_closed(results, name, metric, bound=bound) if gap_shown else []
  return [format_cell([r['metrics'][metric] for r in runs if metric in r['metrics']], 100.0),
          format_difference(diffs) if diffs and name != reference else '–',
          f'{format_cell(gaps, 100.0)} % ({len(gaps)})' if gaps else '–']


def lead_markdown(cells, results, reference: str = 'row3', bound: str | None = 'all_paired',
                  metrics=None) -> str:
  """The study in one table: per cell and direction, exact-scene accuracy (mean ± std), the
  per-seed difference against `reference` (`format_difference`) and, with a `bound`, the
  fraction of the row-3-to-bound gap closed (mean ± std over seeds, in %). `metrics`: (metric,
  label) pairs, default LEAD_METRICS. '' when no cell has a run."""
  metrics = metrics or LEAD_METRICS
  per_metric = 3 if bound else 2
  header = ['cell', 'what', 'seeds']
  for _, label in metrics:
    header += [label, f'minus {reference}, same seed'] + (['gap closed'] if bound else [])
  lines = []
  for cell in cells:
    runs = results.get(cell.name, [])
    if not runs:
      continue
    row = [cell.name, cell.what, str(len(runs))]
    for metric, _ in metrics:
      row += _exact_columns(cell.name, results, metric, reference,
                            gap_shown=bool(bound) and cell.name not in (reference, bound),
                            bound=bound)[:per_metric]
    lines.append('| ' + ' | '.join(row) + ' |')
  if not lines:
    return ''
  return '\n'.join(['| ' + ' | '.join(header) + ' |',
                    '|---|---|---:|' + '---:|' * (per_metric * len(metrics))] + lines) + '\n'


# The compositional cells' lead: the test scenes with a look no pair shows.
NOVEL_LEAD_METRICS = (('shapes_novel_test/i2t_exact', 'novel-look captions exact %'),
                      ('shapes_novel_test/t2i_exact', 'novel-look drawings exact %'))


# tools.pseudo_pairs' figures of a run (its JSON's 'pseudo_pairs' rows, one per kept step).
PSEUDO_PAIR_METRICS = (('pseudo_caption/exact', 'pseudo captions exact %'),
                       ('pseudo_image/exact', 'pseudo images exact %'))


def pseudo_pairs_markdown(cells, results) -> str:
  """A row per cell with scored runs: how many of the pseudo pairs its model makes of the
  unpaired data are right, at each kept step (mean ± std over seeds). '' when no run has them."""
  scored = {c.name: [r for r in results.get(c.name, []) if r.get('pseudo_pairs')] for c in cells}
  steps = sorted({row['step'] for runs in scored.values() for r in runs
                  for row in r['pseudo_pairs']})
  if not steps:
    return ''
  header = ['cell', 'what', 'seeds'] + [f'{label}, step {step}'
                                        for _, label in PSEUDO_PAIR_METRICS for step in steps]
  lines = ['| ' + ' | '.join(header) + ' |', '|---|---|---:|' + '---:|' * (len(header) - 3)]
  for cell in cells:
    runs = scored[cell.name]
    if not runs:
      continue
    row = [cell.name, cell.what, str(len(runs))]
    for metric, _ in PSEUDO_PAIR_METRICS:
      row += [format_cell([x[metric] for r in runs for x in r['pseudo_pairs']
                           if x['step'] == step and metric in x], 100.0) for step in steps]
    lines.append('| ' + ' | '.join(row) + ' |')
  return '\n'.join(lines) + '\n'


def headline(results, name: str = 'row14', reference: str = 'row3',
             bound: str = 'all_paired') -> str:
  """One sentence: the fraction of the gap that `name` closes in each direction, or ''."""
  parts = []
  for metric, label in LEAD_METRICS:
    gaps = gap_closed(results, name, metric, reference, bound)
    if gaps:
      mean, std = mean_std(np.asarray(gaps) * 100)
      spread = f' ± {std:.0f}' if len(gaps) > 1 else ''
      parts.append(f'{mean:.0f}{spread} % of the {label.split()[0][:-1]} gap '
                   f'({len(gaps)} seed{"s" if len(gaps) > 1 else ""})')
  if not parts:
    return ''
  return (f'{name} closes ' + ' and '.join(parts) + f' between {reference} (pairs only) and '
          f'{bound} (every training scene paired), exact scenes, per seed.')


def cost_table_markdown(cells, results, costs: dict, reference: str) -> str:
  """Cost against quality: per cell of `costs` ({cell: {'synthesis': str, 'itit_b': FLOP
  ratio, 'level_flops': FLOP ratio, 'step_time': measured ratio or None}}), its step's cost
  over row 3's and its exact-scene accuracy, per seed minus `reference` (`format_difference`)
  and the fraction of the row-3-to-bound gap closed. '' when no cell of `costs` has a run."""
  header = ['cell', 'synthesis', 'FLOPs / row 3 (ITIT-B)', 'FLOPs / row 3 (this level)',
            'CPU step time / row 3 (this level)']
  for _, label in LEAD_METRICS:
    header += [label, f'minus {reference}, same seed', 'gap closed']
  lines = []
  for cell in cells:
    runs, cost = results.get(cell.name, []), costs.get(cell.name)
    if not runs or cost is None:
      continue
    step_time = cost.get('step_time')
    row = [cell.name, cost['synthesis'], f'{cost["itit_b"]:.2f}x', f'{cost["level_flops"]:.2f}x',
           '–' if step_time is None else f'{step_time:.2f}x']
    for metric, _ in LEAD_METRICS:
      row += _exact_columns(cell.name, results, metric, reference)
    lines.append('| ' + ' | '.join(row) + ' |')
  if not lines:
    return ''
  return '\n'.join(['| ' + ' | '.join(header) + ' |', '|---|---|' + '---:|' * 9] + lines) + '\n'

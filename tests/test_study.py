"""experiments.shapes_study: the plan, its commands, resuming and the report.

Nothing is trained: a fake runner plays the CLIs, writing what they would write.
"""
import json
import os
import re

import numpy as np
from PIL import Image
import pytest

from configs import shapes as shapes_config
from experiments.shapes_study import cli
from experiments.shapes_study import commands
from experiments.shapes_study import design
from experiments.shapes_study import plan
from experiments.shapes_study import report
from experiments.shapes_study import tables
from itit.data import shards
from itit.losses import registry
from itit.models import itit as itit_model
from itit.trainer import metric_writer


def flag(command, name):
  return next((a.split('=', 1)[1] for a in command if a.startswith(f'--{name}=')), None)


class FakeCLIs:
  """Records each command and writes the files its CLI would leave behind."""

  def __init__(self):
    self.commands = []

  def __call__(self, command, log_path):
    self.commands.append(command)
    module = command[2] if command[1] == '-m' else os.path.basename(command[1])
    if module == 'itit.prepare':
      out_dir = flag(command, 'out_dir')
      os.makedirs(os.path.join(out_dir, 'paired'), exist_ok=True)
      with open(os.path.join(out_dir, 'prepare_summary.json'), 'w') as f:
        f.write('{}')
      # The manifest's identity of the VQGAN, as itit.prepare records it (a stand-in hash).
      vqgan = os.path.basename(flag(command, 'config.image_tokenizer'))
      with open(os.path.join(out_dir, 'paired', shards.MANIFEST_NAME), 'w') as f:
        json.dump({'format_version': shards.FORMAT_VERSION,
                   'identities': {'image_tokenizer': {'sha256': f'sha-of-{vqgan}'}}}, f)
    elif module == 'itit.train':
      # The budget's total_steps, else its config's (the laptop level's come from the preset).
      preset = flag(command, 'config').partition(':')[2]
      step = int(flag(command, 'config.total_steps')
                 or shapes_config.get_config(preset).total_steps)
      workdir = flag(command, 'workdir')
      seed = int(flag(command, 'config.seed'))
      os.makedirs(os.path.join(workdir, 'images'), exist_ok=True)
      Image.new('RGB', (8, 8)).save(os.path.join(workdir, 'images', f'shapes_t2i_{step}.png'))
      metrics = {'step': step, 'shapes/i2t_exact': 0.1 * seed, 'shapes/t2i_exact': 0.05 * seed}
      with open(os.path.join(workdir, 'eval.json'), 'w') as f:
        json.dump(metrics, f)
    elif module == 'itit.sample':
      os.makedirs(flag(command, 'out'), exist_ok=True)
      Image.new('RGB', (400, 300)).save(os.path.join(flag(command, 'out'), 'cycle.png'))
    elif module == 'tools.pseudo_pairs':
      with open(flag(command, 'out'), 'w') as f:
        json.dump({'rows': [{'step': 100, 'pseudo_caption/exact': 0.5,
                             'pseudo_image/exact': 0.25}]}, f)
    elif module == 'benchmarks.benchmark':
      os.makedirs(os.path.dirname(flag(command, 'out')), exist_ok=True)
      with open(flag(command, 'out'), 'w') as f:
        json.dump({f'itit_over_baseline{flag(command, "tag")}': 1.25}, f)

  def trained(self):
    return [os.path.basename(flag(c, 'workdir')) for c in self.commands if 'itit.train' in c]


def quiet(*args, **kwargs):
  del args, kwargs


def standard_cells():
  return design.make_cells(plan.CELLS['standard'])


def laptop_cells():
  return design.make_cells(plan.CELLS['laptop'])


def dry_run(args):
  lines = []
  assert cli.main(args + ['--dry_run'], log=lambda *a, **k: lines.append(a[0])) == 0
  return lines


def test_standard_plan_has_the_issue_cells():
  cells = {c.name: c for c in standard_cells()}
  table = {name: cells[name].row for name in ('row3', 'row7', 'row10', 'row11', 'row12', 'row14')}
  assert table == dict(row3=3, row7=7, row10=10, row11=11, row12=12, row14=14)
  assert cells['all_paired'].as_pairs and cells['all_paired'].extra == 1.0
  assert all(cells[n].seeds >= 3 for n in list(table) + ['all_paired', 'row14_warmup'])
  assert cells['row14_warmup'].row == 14
  assert cells['row14_warmup'].overrides == plan.STANDARD_WARMUP == (('cycle.start_step', 400),)
  # The scaling curve's ITIT cells share one recipe and match the as-pairs cells point for point.
  itit_points = sorted(c.extra for c in cells.values() if c.row == 14 and not c.as_pairs
                       and c.overrides == plan.STANDARD_WARMUP and c.paired_fraction is None)
  pair_points = sorted(c.extra for c in cells.values() if c.as_pairs)
  assert itit_points == pair_points == [0.1, 0.3, 1.0]
  assert [n for n, c in cells.items() if c.row == 14 and not c.overrides
          and c.paired_fraction is None] == ['row14']
  assert all(c.seeds >= 2 for c in cells.values())
  assert [c.name for c in cells.values() if c.paired_fraction] == ['row14_p10', 'row14_p30']
  runs = design.plan_runs(list(cells.values()))
  assert len(runs) == 8 * 3 + 6 * 2 and runs[0].name == 'row3-seed1'
  # Seed by seed: all 14 cells' seed 1, then seed 2, then seed 3 of the 8 three-seed cells.
  assert [r.seed for r in runs] == [1] * 14 + [2] * 14 + [3] * 8
  assert runs[1].name == 'row7-seed1' and runs[-1].name == 'all_paired-seed3'
  quick = design.plan_runs(list(cells.values()), plan.QUICK_CELLS['standard'], 1)
  assert [r.name for r in quick] == ['row3-seed1', 'row14-seed1', 'all_paired-seed1']
  with pytest.raises(ValueError, match=r"unknown cell\(s\) \['row99'\]"):
    design.plan_runs(list(cells.values()), ['row99'])


def test_laptop_plan_has_the_issue_cells():
  cells = {c.name: c for c in laptop_cells()}
  rows = ('row3', 'row7', 'row10', 'row11', 'row12', 'row14')
  assert {n: cells[n].row for n in rows} == dict(row3=3, row7=7, row10=10, row11=11, row12=12,
                                                 row14=14)
  assert all(not cells[n].overrides for n in rows)  # cycles from step 0
  # The bound has the seeds of rows 3 and 14: the gap-closed fraction pairs the three per seed.
  assert {n: c.seeds for n, c in cells.items() if c.seeds != 3} == dict(row3=5, row14=5,
                                                                        all_paired=5)
  # The warm-up joins halfway through the laptop preset's steps, wherever those are set.
  half = shapes_config.get_config('laptop').total_steps // 2
  assert cells['row14_warmup'].overrides == plan.LAPTOP_WARMUP == (('cycle.start_step', half),)
  assert design.warmup_step(cells['row14_warmup']) == half and f'step {half}' in (
      cells['row14_warmup'].what)
  assert cells['all_paired'].as_pairs and cells['all_paired'].extra == 1.0
  itit_points = sorted(c.extra for c in cells.values() if design.warmup_step(c))
  pair_points = sorted(c.extra for c in cells.values() if c.as_pairs)
  assert itit_points == pair_points == [0.1, 0.3, 1.0]
  comp = {n: (c.row, c.extra, c.as_pairs, c.dataset) for n, c in cells.items() if c.compositional}
  assert comp == dict(row3_comp=(3, 0.0, False, 'compositional'),
                      row14_comp=(14, 1.0, False, 'compositional'))
  assert not any(c.paired_fraction for c in cells.values())
  # The variant that keeps T2I2T off the captioner, beside the paper's row 14.
  assert (cells['row14_critic'].row, cells['row14_critic'].overrides) == (
      14, (('cycle.t2i2t_trains_captioner', False),))
  runs = design.plan_runs(list(cells.values()))
  assert len(runs) == 3 * 5 + 12 * 3
  assert [r.name for r in runs[-6:]] == ['row3-seed4', 'row14-seed4', 'all_paired-seed4',
                                         'row3-seed5', 'row14-seed5', 'all_paired-seed5']
  quick = design.plan_runs(list(cells.values()), plan.QUICK_CELLS['laptop'], 1)
  assert [r.name for r in quick] == ['row3-seed1', 'row14-seed1', 'all_paired-seed1']
  with pytest.raises(ValueError, match='give paired_fraction or compositional only'):
    design.make_cells([design.Cell('bad', 3, 1.0, True, 1, 'x', compositional=True)])


def test_data_limits_and_extra_scenes():
  counts = design.data_counts(plan.BUDGETS['standard'])
  assert counts == dict(num_train=20000, paired=400, rest=19600, unpaired_image=9800,
                        unpaired_text=9800)
  cells = {c.name: c for c in standard_cells()}
  assert design.max_records(cells['itit_u10'], counts) == {'unpaired_image': 980,
                                                           'unpaired_text': 980}
  assert design.max_records(cells['pairs_p30'], counts) == {'paired': 400 + 5880}
  assert design.max_records(cells['row14'], counts) == {}
  assert design.max_records(cells['all_paired'], counts) == {}
  extra = {n: design.extra_scenes(cells[n], counts) for n in
           ('row3', 'itit_u10', 'pairs_p10', 'row14', 'all_paired')}
  assert extra == dict(row3=0, itit_u10=1960, pairs_p10=1960, row14=19600, all_paired=19600)
  assert {c.dataset for c in cells.values() if c.as_pairs} == {'pairs'}
  assert cells['row3'].dataset == cells['row14'].dataset == 'mixed'


@pytest.mark.parametrize('budget_name', ['default', 'quick'])
def test_laptop_data_counts_are_the_laptop_prepare_configs(budget_name):
  budget = plan.BUDGETS[budget_name]
  fraction = plan.LAPTOP_PAIRED_FRACTION
  paired = round(fraction * 480)
  rest = 480 - paired
  expected = dict(num_train=480, paired=paired, rest=rest, unpaired_image=(rest + 1) // 2,
                  unpaired_text=rest // 2)
  assert design.data_counts(budget) == expected
  assert design.data_counts(budget, compositional=True) == expected
  cells = {c.name: c for c in laptop_cells()}
  assert design.cell_counts(cells['row14_comp'], budget) == expected
  assert design.max_records(cells['pairs_p10'], expected) == {
      'paired': paired + round(0.1 * rest)}
  assert design.extra_scenes(cells['row14'], expected) == rest
  assert design.datasets(cells.values(), budget) == {
      'mixed': f'laptop,{fraction}', 'pairs': 'laptop,1.0',
      'compositional': f'laptop,{fraction},compositional'}
  # The split the counts describe is the one the prepare config makes.
  from configs import prepare_shapes  # pylint: disable=g-import-not-at-top
  from itit.data import shapes_splits  # pylint: disable=g-import-not-at-top
  config = prepare_shapes.get_config(design.prepare_arg(budget, fraction, compositional=True))
  splits = shapes_splits.make_splits(
      0, paired_fraction=fraction, num_train=config.shapes.num_train,
      num_test=config.shapes.num_test, max_objects=config.shapes.max_objects,
      heldout_combinations=(), paired_looks_fraction=config.shapes.paired_looks)
  assert [len(splits[s]) for s in ('paired', 'unpaired_image', 'unpaired_text', 'test')] == [
      paired, expected['unpaired_image'], expected['unpaired_text'], 96]
  assert splits['novel_test'] and 'novel_test' in config.streams


def test_paired_fraction_sweep_cells_hold_the_pairs_of_their_row3_twins():
  budget = plan.BUDGETS['standard']
  cells = {c.name: c for c in standard_cells()}
  for sweep, twin in (('row14_p10', 'pairs_p10'), ('row14_p30', 'pairs_p30')):
    counts = design.cell_counts(cells[sweep], budget)
    twin_pairs = design.max_records(cells[twin], design.cell_counts(cells[twin], budget))['paired']
    assert counts['paired'] == twin_pairs == {'row14_p10': 2360, 'row14_p30': 6280}[sweep]
    assert counts['unpaired_image'] + counts['unpaired_text'] == 20000 - twin_pairs
    assert design.max_records(cells[sweep], counts) == {}
    assert design.extra_scenes(cells[sweep], counts) == 20000 - twin_pairs
  assert design.datasets(cells.values(), budget) == {
      'mixed': '0.02', 'pairs': '1.0', 'mixed_p0.118': '0.118', 'mixed_p0.314': '0.314'}
  # make_splits pairs a prefix of one shuffled order, so the sweep's pairs ARE the twin's.
  from itit.data import shapes_splits  # pylint: disable=g-import-not-at-top
  small = shapes_splits.make_splits(0, paired_fraction=0.118, num_train=2000, num_test=50)
  everything = shapes_splits.make_splits(0, paired_fraction=1.0, num_train=2000, num_test=50)
  assert small['paired'] == everything['paired'][:236]
  with pytest.raises(ValueError, match='paired_fraction None or in'):
    design.make_cells([('bad', 14, 1.0, False, 1, 'x', (), 1.5)])
  with pytest.raises(ValueError, match='an as-pairs cell reads the all-pairs data'):
    design.make_cells([('bad', 3, 0.1, True, 1, 'x', (), 0.1)])


@pytest.mark.parametrize('level', ['laptop', 'standard'])
def test_estimate_counts_warmup_steps_without_the_cycles(level, tmp_path):
  budget = plan.BUDGETS[plan.budget_name(level, quick=False)]
  paths = commands.Paths(str(tmp_path), str(tmp_path / 'work'), str(tmp_path / 'vq'))
  cells = {c.name: c for c in design.make_cells(plan.CELLS[level])}
  counts = design.cell_counts(cells['row14'], budget)
  seconds = {name: commands.estimated_seconds(design.Run(cells[name], 1), paths, budget, counts)
             for name in ('row14', 'row14_warmup')}
  config = commands.train_config(design.Run(cells['row14'], 1), paths, budget, counts)
  names = sorted(registry.make_loss_fns(config, itit_model.ITIT(config.model)))
  assert set(registry.CYCLE_LOSSES) <= set(names)
  full = registry.train_step_flops(config, names)['total']
  uncycled = registry.train_step_flops(
      config, [n for n in names if n not in registry.CYCLE_LOSSES])['total']
  assert 0 < uncycled < full
  rate = budget['estimate']['gflops_per_s'] * 1e9
  overhead = budget['estimate']['overhead_s']
  steps = {'laptop': shapes_config.get_config('laptop').total_steps, 'standard': 800}[level]
  assert config.total_steps == steps
  assert seconds['row14'] == pytest.approx(overhead + steps * full / rate)
  half = steps // 2
  assert seconds['row14_warmup'] == pytest.approx(overhead + half * (full + uncycled) / rate)


@pytest.mark.parametrize('mode', sorted(plan.BUDGETS))
def test_every_budget_override_is_a_config_field(mode, tmp_path):
  budget = plan.BUDGETS[mode]
  # The study level that uses the budget (each budget belongs to one).
  [level] = [name for name, budgets in plan.LEVELS.items() if mode in budgets]
  paths = commands.Paths(str(tmp_path), str(tmp_path / 'work'), str(tmp_path / 'vq'))
  # The laptop budgets take steps, lr, batches and weight decay from the preset; they set only
  # seed-independent evaluation fields. The cheap-cycles study pins the weight decay it ran
  # with, before the preset decayed.
  preset_steps = shapes_config.get_config(budget['level']).total_steps
  if mode == 'default':
    assert sorted(budget['train']) == ['eval.evaluators', 'eval.shapes_splits']
    assert not budget['fid'] and budget['train']['eval.shapes_splits'] == 'test'
    assert budget['paired_fraction'] == plan.LAPTOP_PAIRED_FRACTION == 0.35
    assert shapes_config.get_config('laptop').optimizer.weight_decay == 1.0
  if level == 'cheap_cycles':
    assert budget['train']['optimizer.weight_decay'] == 0.0
    assert budget['paired_fraction'] == plan.CHEAP_CYCLES_PAIRED_FRACTION == 0.5
    laptop = plan.BUDGETS[{'cheap_cycles': 'default', 'cheap_cycles_quick': 'quick'}[mode]]
    differ = ('train', 'paired_fraction')
    assert ({k: v for k, v in budget.items() if k not in differ}
            == {k: v for k, v in laptop.items() if k not in differ})
    assert budget['train'] == {**laptop['train'], 'optimizer.weight_decay': 0.0}
  for run in design.plan_runs(design.make_cells(plan.CELLS[level]), seeds=1):
    counts = design.cell_counts(run.cell, budget)
    config = commands.train_config(run, paths, budget, counts)
    assert config.total_steps == budget['train'].get('total_steps', preset_steps)
    assert config.model.image_grid == (3 if budget['level'] == 'laptop' else 8)
    assert commands.estimated_seconds(run, paths, budget, counts) > budget['estimate']['overhead_s']
  from configs import vqgan_shapes  # pylint: disable=g-import-not-at-top
  arg = budget['vqgan_config'].partition(':')[2]
  design.set_fields(vqgan_shapes.get_config(arg), budget['vqgan'], 'vqgan')
  with pytest.raises(ValueError, match='train: total_stepz=1 is not a valid field'):
    design.set_fields(vqgan_shapes.get_config(), {'total_stepz': 1}, 'train')


def test_standard_level_dry_run_prints_the_exact_commands(tmp_path):
  out = tmp_path / 'out'
  lines = dry_run(['--out', str(out), '--level', 'standard'])
  text = '\n'.join(lines)
  assert re.search(r'Plan: 36 runs, ~\d+h\d\dm estimated', text)
  assert '-m itit.train_tokenizer --config=configs/vqgan_shapes.py ' in text
  assert '-m itit.prepare --config=configs/prepare_shapes.py:0.02 ' in text
  assert '-m itit.prepare --config=configs/prepare_shapes.py:1.0 ' in text
  sweep_prepare = next(line for line in lines if 'prepare_shapes.py:0.118 ' in line)
  assert f'--out_dir={out}/work/data_mixed_p0.118 ' in sweep_prepare
  assert f'--config.text_tokenizer={out}/work/data_mixed/spiece.model' in sweep_prepare
  row14_p10 = next(line for line in lines if 'runs/row14_p10-seed2 ' in line)
  assert f'--config.data.dir={out}/work/data_mixed_p0.118 ' in row14_p10
  assert 'max_records' not in row14_p10
  itit_u10 = next(line for line in lines if 'runs/itit_u10-seed2 ' in line)
  assert '--config=configs/shapes.py:row14 ' in itit_u10 and '--config.seed=2' in itit_u10
  assert '--config.data.max_records.unpaired_image=980' in itit_u10
  assert f'--config.data.dir={out}/work/data_mixed' in itit_u10
  pairs_p10 = next(line for line in lines if 'runs/pairs_p10-seed1 ' in line)
  assert '--config.data.max_records.paired=2360' in pairs_p10 and 'data_pairs' in pairs_p10
  warmup = next(line for line in lines if 'runs/row14_warmup-seed3 ' in line)
  assert ' --config.cycle.start_step=400' in warmup
  assert ' --config.cycle.start_step=400' in itit_u10
  row14 = next(line for line in lines if 'runs/row14-seed3 ' in line)
  assert 'start_step' not in row14
  assert '-m itit.sample' in text and '--cycle=4' in text
  assert 'laptop' not in text and 'novel_test' not in text and 'compositional' not in text
  assert not out.exists()  # a dry run writes nothing


def test_laptop_dry_run_names_the_laptop_presets(tmp_path):
  out = tmp_path / 'out'
  lines = dry_run(['--out', str(out)])
  text = '\n'.join(lines)
  assert re.search(r'Plan: 51 runs, ~\d+h\d\dm estimated', text)
  assert "Level: laptop (budget 'default'); data: {'num_train': 480, " in text
  fraction = plan.LAPTOP_PAIRED_FRACTION
  assert text.count('-m itit.train_tokenizer --config=configs/vqgan_shapes.py:laptop ') == 1
  assert f'-m itit.prepare --config=configs/prepare_shapes.py:laptop,{fraction} ' in text
  assert '-m itit.prepare --config=configs/prepare_shapes.py:laptop,1.0 ' in text
  comp_prepare = next(line for line in lines if f'prepare_shapes.py:laptop,{fraction},'
                      'compositional ' in line)
  assert f'--out_dir={out}/work/data_compositional ' in comp_prepare
  assert f'--config.text_tokenizer={out}/work/data_mixed/spiece.model' in comp_prepare
  trains = [line for line in lines if '-m itit.train ' in line]
  assert len(trains) == 51
  assert all(re.search(r' --config=configs/shapes\.py:row\d+,laptop ', line) for line in trains)
  # The preset sets steps, lr, batches and weight decay; the budget adds only the evaluation
  # it needs.
  assert not any(f'--config.{field}' in line for line in trains
                 for field in ('total_steps', 'optimizer.lr', 'optimizer.name', 'batch',
                               'eval.inception'))
  row3 = next(line for line in trains if 'runs/row3-seed5 ' in line)
  assert row3.endswith('--config.eval.evaluators=shapes,cycle --config.eval.shapes_splits=test')
  assert not any('weight_decay' in line for line in trains)
  half = shapes_config.get_config('laptop').total_steps // 2
  warmup = next(line for line in trains if 'runs/row14_warmup-seed3 ' in line)
  assert f' --config.cycle.start_step={half}' in warmup
  itit_u10 = next(line for line in trains if 'runs/itit_u10-seed1 ' in line)
  unpaired = round(0.1 * design.data_counts(plan.BUDGETS['default'])['unpaired_image'])
  assert f'--config.data.max_records.unpaired_image={unpaired}' in itit_u10
  for name in ('row3_comp', 'row14_comp'):
    line = next(line for line in trains if f'runs/{name}-seed3 ' in line)
    assert f'--config.data.dir={out}/work/data_compositional ' in line
    assert '--config.eval.shapes_splits=test,novel_test' in line
  assert sum('novel_test' in line for line in trains) == 6
  assert '--num_steps=4' in next(line for line in lines if '-m itit.sample' in line)
  assert not out.exists()


def test_laptop_quick_dry_run(tmp_path):
  lines = dry_run(['--out', str(tmp_path / 'out'), '--quick'])
  text = '\n'.join(lines)
  assert re.search(r'Plan: 3 runs, ~\dm\d\ds estimated', text)
  assert '-m itit.train_tokenizer --config=configs/vqgan_shapes.py:laptop ' in text
  assert '--config.total_steps=800' in next(line for line in lines if 'train_tokenizer' in line)
  trains = [line for line in lines if '-m itit.train ' in line]
  assert [re.search(r'runs/(\S+) ', line).group(1) for line in trains] == [
      'row3-seed1', 'row14-seed1', 'all_paired-seed1']
  assert all(',laptop ' in line and '--config.total_steps=300 ' in line for line in trains)
  assert 'prepare_compositional' not in text  # no compositional cell in the quick plan


def test_standard_quick_is_the_old_quick(tmp_path):
  lines = dry_run(['--out', str(tmp_path / 'out'), '--quick', '--level', 'standard'])
  text = '\n'.join(lines)
  assert "budget 'standard_quick'" in text and 'laptop' not in text
  assert '-m itit.train_tokenizer --config=configs/vqgan_shapes.py:quick ' in text
  assert '--config=configs/shapes.py:row14 ' in text and '--config.total_steps=60 ' in text


def test_a_bad_level_is_one_error_line(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(['--out', str(tmp_path), '--level', 'huge', '--dry_run'])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and err.startswith('error: ') and "'huge'" in err
  assert 'laptop' in err and 'standard' in err


@pytest.mark.parametrize('text', ['0', '6-4', 'x', '4-', '-2', '2-x'])
def test_a_bad_seeds_argument_is_one_error_line(tmp_path, capsys, text):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(['--out', str(tmp_path), '--seeds', text, '--dry_run'])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and err.startswith('error: argument --seeds: ')
  assert repr(text) in err and 'A-B' in err


def test_seeds_are_a_count_or_a_range():
  assert design.parse_seeds('3') == (1, 3) and design.parse_seeds(' 4-6 ') == (4, 6)
  cells = design.make_cells(plan.CELLS['cheap_cycles'])
  runs = design.plan_runs(cells, ['row3', 'synth_s4'], design.parse_seeds('4-6'))
  # Seed by seed, every chosen cell at each seed, whatever the cells' own seed counts.
  assert [r.name for r in runs] == [f'{c}-seed{s}' for s in (4, 5, 6) for c in ('row3', 'synth_s4')]
  assert [r.name for r in design.plan_runs(cells, ['row3'], (2, 2))] == ['row3-seed2']
  assert design.plan_runs(cells, ['row3'], 2) == design.plan_runs(cells, ['row3'], (1, 2))
  lines = '\n'.join(dry_run(['--out', '/tmp/unused', '--level', 'cheap_cycles', '--cells',
                              'synth_s4_r4', '--seeds', '5-6'])).splitlines()
  trained = [line[2:].split(':')[0] for line in lines if line.startswith('# synth_s4_r4-seed')]
  assert trained == ['synth_s4_r4-seed5', 'synth_s4_r4-seed6']
  command = lines[lines.index(next(l for l in lines if l.startswith('# synth_s4_r4-seed6'))) + 1]
  assert '--config.seed=6' in command and 'runs/synth_s4_r4-seed6' in command


def test_a_warmup_after_the_last_step_is_refused_before_any_command(tmp_path):
  fake, lines = FakeCLIs(), []
  args = ['--out', str(tmp_path / 'out'), '--quick', '--cells', 'row3,row14_warmup']
  assert cli.main(args, runner=fake, log=lines.append) == 2
  assert fake.commands == [] and not (tmp_path / 'out').exists()
  half = shapes_config.get_config('laptop').total_steps // 2
  assert lines == [f'error: the cycles of row14_warmup (step {half} of 300) would join after '
                   'the last training step; leave these cells out of --cells at this budget']


def test_config_changes_fill_new_fields_from_base_defaults():
  saved = {'loss': {'t2i': True}, 'model': {'width': 64}, 'gone': 1}
  now = {'loss': {'t2i': True, 't2i_mask_schedule': 'cosine', 'new_without_default': 3},
         'model': {'width': 64}}
  defaults = {'loss': {'t2i': True, 't2i_mask_schedule': 'truncated_gaussian'}}
  # A field added since the run started counts as base's default; a field with no default is
  # not compared; a removed field is a change.
  assert commands.config_changes(saved, now, defaults) == [
      "gone: 1 -> '(removed)'", "loss.t2i_mask_schedule: 'truncated_gaussian' -> 'cosine'"]
  now['loss']['t2i_mask_schedule'] = 'truncated_gaussian'
  now['gone'] = 1
  assert commands.config_changes(saved, now, defaults) == []


def test_a_config_change_since_a_run_started_stops_the_study(tmp_path):
  out, vqgan = tmp_path / 'out', tmp_path / 'vqgan'
  vqgan.mkdir()
  # The standard level: its config keeps base's loss.t2i_mask_schedule (the laptop preset's
  # is another).
  args = ['--out', str(out), '--quick', '--level', 'standard', '--vqgan', str(vqgan)]
  budget = plan.BUDGETS['standard_quick']
  paths = commands.Paths(str(out), str(out / 'work'), str(vqgan))
  run = design.Run({c.name: c for c in standard_cells()}['row14'], 1)
  config = json.loads(commands.train_config(run, paths, budget,
                                            design.cell_counts(run.cell, budget)).to_json())
  # Written before loss.t2i_mask_schedule existed: base's default is what the run did.
  del config['loss']['t2i_mask_schedule']
  workdir = out / 'work' / 'runs' / 'row14-seed1'
  workdir.mkdir(parents=True)
  (workdir / 'config.json').write_text(json.dumps(config))
  fake = FakeCLIs()
  assert cli.main(args, runner=fake, log=quiet) == 0
  assert 'row14-seed1' in fake.trained()  # resumed (the fake trainer keeps config.json)
  # configs/shapes.py or a default changed since: the study stops before any command.
  config['model']['width'] += 8
  (workdir / 'config.json').write_text(json.dumps(config))
  messages, again = [], FakeCLIs()
  assert cli.main(args, runner=again, log=messages.append) == 1
  assert again.commands == []
  width = config['model']['width']
  assert f'row14-seed1: model.width: {width} -> {width - 8}' in messages[-1]
  assert 'configs have changed since runs in' in messages[-1]


def test_runs_resume_and_never_touch_finished_cells(tmp_path):
  out = tmp_path / 'out'
  vqgan = tmp_path / 'vqgan'
  vqgan.mkdir()
  kept = out / 'cells' / 'row3-seed1.json'
  kept.parent.mkdir(parents=True)
  finished = dict(cell=dict(name='row3', row=3, extra=0.0, as_pairs=False, seeds=3,
                            what='pairs only'), seed=1, run='row3-seed1', step=60, seconds=5.0,
                  timed=True, metrics={'shapes/i2t_exact': 0.25}, extra_scenes=0,
                  paired_records=40)
  kept.write_text(json.dumps(finished))
  # all_paired-seed1 was interrupted: its workdir has a checkpoint but no eval.json.
  (out / 'work' / 'runs' / 'all_paired-seed1' / 'checkpoints').mkdir(parents=True)
  fake = FakeCLIs()
  args = ['--out', str(out), '--quick', '--vqgan', str(vqgan)]
  assert cli.main(args, runner=fake, log=quiet) == 0
  assert fake.trained() == ['row14-seed1', 'all_paired-seed1']
  # The chains are drawn as soon as rows 3 and 14 are finished, before the runs after them.
  modules = [c[2] if c[1] == '-m' else os.path.basename(c[1]) for c in fake.commands]
  # all_paired's interrupted workdir has checkpoints, so its pseudo pairs are scored after it.
  assert modules[-5:] == ['itit.train', 'itit.sample', 'itit.sample', 'itit.train',
                          'tools.pseudo_pairs']
  assert flag(fake.commands[-1], 'data_dir') == str(out / 'work' / 'data_mixed')
  assert not any('itit.train_tokenizer' in c for c in fake.commands)  # --vqgan reuses one
  assert json.loads(kept.read_text()) == finished
  row14 = json.loads((out / 'cells' / 'row14-seed1.json').read_text())
  assert row14['metrics'] == {'shapes/i2t_exact': 0.1, 'shapes/t2i_exact': 0.05}
  assert row14['step'] == 300 and row14['extra_scenes'] == 480 - round(plan.LAPTOP_PAIRED_FRACTION * 480) and row14['timed']
  assert row14['paired_records'] == design.data_counts(plan.BUDGETS['quick'])['paired']
  assert row14['image_tokenizer'] == 'sha-of-vqgan'  # the manifest of the shards it read
  all_paired = json.loads((out / 'cells' / 'all_paired-seed1.json').read_text())
  assert not all_paired['timed'] and all_paired['pseudo_pairs'][0]['pseudo_image/exact'] == 0.25
  assert row14['pseudo_pairs'] is None  # the fake trainer leaves no checkpoints to score
  assert (out / 'samples' / 'row14-seed1_shapes_t2i.png').is_file()
  assert (out / 'cycle_chain.png').is_file()
  for name in ('README.md', 'table2.md', 'scaling.png', 'study.json'):
    assert (out / name).is_file(), name

  again = FakeCLIs()
  assert cli.main(args, runner=again, log=quiet) == 0
  invocations = json.loads((out / 'study.json').read_text())['invocations']
  assert len(invocations) == 2 and all(i.endswith(' '.join(args)) for i in invocations)
  text = (out / 'README.md').read_text()
  assert '--out ' + str(out) + ' --quick`' in text and text.count(' '.join(args)) == 2
  assert again.commands == []  # setup markers, cell JSONs and the chain figure are all there
  assert json.loads(kept.read_text()) == finished

  # A run whose training finished (eval.json at total_steps) is not trained again.
  (out / 'cells' / 'row14-seed1.json').unlink()
  third = FakeCLIs()
  assert cli.main(args, runner=third, log=quiet) == 0
  assert third.commands == [] and (out / 'cells' / 'row14-seed1.json').is_file()


def test_pseudo_pairs_are_scored_once_backfilled_and_never_stop_the_study(tmp_path):
  out = tmp_path / 'out'
  vqgan = tmp_path / 'vqgan'
  vqgan.mkdir()
  args = ['--out', str(out), '--quick', '--vqgan', str(vqgan), '--cells', 'row3']
  # row3-seed1 finished before the study scored pseudo pairs; its checkpoints are still here.
  earlier = dict(cell=dict(name='row3', row=3, extra=0.0, as_pairs=False, seeds=3,
                           what='pairs only'), seed=1, run='row3-seed1', step=300, seconds=5.0,
                 timed=True, metrics={'shapes/i2t_exact': 0.25}, extra_scenes=0,
                 paired_records=40)
  kept = out / 'cells' / 'row3-seed1.json'
  kept.parent.mkdir(parents=True)
  kept.write_text(json.dumps(earlier))
  (out / 'work' / 'runs' / 'row3-seed1' / 'checkpoints').mkdir(parents=True)
  lines, fake = [], FakeCLIs()
  assert cli.main(args, runner=fake, log=lambda *a, **k: lines.append(a[0])) == 0
  assert [c[2] for c in fake.commands if c[1] == '-m'] == ['itit.prepare', 'tools.pseudo_pairs']
  assert json.loads(kept.read_text()) == dict(earlier, pseudo_pairs=[
      {'step': 100, 'pseudo_caption/exact': 0.5, 'pseudo_image/exact': 0.25}])
  assert any(line.endswith('its pseudo pairs scored now') for line in lines)
  assert 'How right the pseudo pairs are' in (out / 'table2.md').read_text()
  assert '| row3 | pairs only | 1 | 50.0 | 25.0 |' in (out / 'table2.md').read_text()
  again = FakeCLIs()
  assert cli.main(args, runner=again, log=quiet) == 0 and again.commands == []  # kept in JSON

  # A scoring that fails is one line, the run is kept without scores, and the study goes on.
  def failing(command, log_path):
    if 'tools.pseudo_pairs' in command:
      raise commands.StudyError(f'tools.pseudo_pairs ... exited with 1; its log {log_path}')
    fake(command, log_path)
    if 'itit.train' in command:
      os.makedirs(os.path.join(flag(command, 'workdir'), 'checkpoints'), exist_ok=True)

  lines = []
  assert cli.main(args[:-1] + ['row3,all_paired'], runner=failing,
                  log=lambda *a, **k: lines.append(a[0])) == 0
  failed = [line for line in lines if 'scoring its pseudo pairs failed' in line]
  assert len(failed) == 1 and failed[0].startswith('all_paired-seed1: ')
  result = json.loads((out / 'cells' / 'all_paired-seed1.json').read_text())
  assert result['pseudo_pairs'] is None and result['metrics']['shapes/i2t_exact'] == 0.1


def test_pseudo_pairs_table_is_the_mean_over_seeds_at_each_step():
  cells = design.make_cells(plan.CELLS['laptop'])
  rows = lambda caption, image: [
      {'step': 400, 'pseudo_caption/exact': caption, 'pseudo_image/exact': image},
      {'step': 1200, 'pseudo_caption/exact': caption + 0.1, 'pseudo_image/exact': image}]
  results = {'row14': [dict(seed=1, pseudo_pairs=rows(0.5, 0.2)),
                       dict(seed=2, pseudo_pairs=rows(0.7, 0.4)),
                       dict(seed=3, pseudo_pairs=None)],
             'row3': [dict(seed=1)]}
  table = tables.pseudo_pairs_markdown(cells, results).splitlines()
  assert table[0] == ('| cell | what | seeds | pseudo captions exact %, step 400 | pseudo captions '
                      'exact %, step 1200 | pseudo images exact %, step 400 | pseudo images '
                      'exact %, step 1200 |')
  assert len(table) == 3 and table[2].startswith('| row14 | full cycles (ITIT) | 2 |')
  assert table[2].endswith('| 60.0 ± 14.1 | 70.0 ± 14.1 | 30.0 ± 14.1 | 30.0 ± 14.1 |')
  assert tables.pseudo_pairs_markdown(cells, {'row3': [dict(seed=1)]}) == ''


def write_cell(out, name, row, extra, as_pairs, seed, metrics, extra_scenes, paired_records=400):
  path = out / 'cells' / f'{name}-seed{seed}.json'
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(dict(
      cell=dict(name=name, row=row, extra=extra, as_pairs=as_pairs, seeds=3, what=name),
      seed=seed, run=f'{name}-seed{seed}', step=10, seconds=1.0, timed=True, metrics=metrics,
      extra_scenes=extra_scenes, paired_records=paired_records,
      finished=f'2026-11-2{seed}T10:00:00+00:00')))


def test_report_table_and_scaling_plot(tmp_path):
  out = tmp_path / 'out'
  for seed, value in enumerate((0.5, 0.7), 1):
    write_cell(out, 'row3', 3, 0.0, False, seed, {'shapes/i2t_exact': value,
                                                  'shapes/t2i_exact': value / 2}, 0)
  for seed, value in enumerate((0.8, 0.9, 1.0), 1):
    write_cell(out, 'row14', 14, 1.0, False, seed,
               {'shapes/i2t_exact': value, 'shapes/t2i_exact': 0.4,
                'cycle/i2t2i_fid': 10.0 * seed, 'shapes/i2t_cider': 2.5}, 19600)
  write_cell(out, 'itit_u10', 14, 0.1, False, 1, {'shapes/i2t_exact': 0.6}, 1960)
  write_cell(out, 'row14_warmup', 14, 1.0, False, 1, {'shapes/i2t_exact': 0.99}, 19600)
  write_cell(out, 'pairs_p10', 3, 0.1, True, 1, {'shapes/i2t_exact': 0.55}, 1960, 2360)
  write_cell(out, 'row14_p10', 14, 1.0, False, 1, {'shapes/i2t_exact': 0.75}, 17640, 2360)
  paths = commands.Paths(str(out), str(out / 'work'), '')
  readme = report.write_report(standard_cells(), paths)

  table = (out / 'table2.md').read_text()
  # The cells' tables (the per-seed differences come later, with their own columns).
  listed = table.split('## Against row 3')[0] + table.split('## Scaling cells')[1]
  rows = {line.split(' | ')[0][2:]: line.split(' | ') for line in listed.splitlines()
          if line.startswith('| ') and not line.startswith('| cell')}
  header = next(line for line in table.splitlines() if line.startswith('| cell')).split(' | ')
  column = {name.strip(' |'): i for i, name in enumerate(header)}
  assert rows['row3'][column['caption exact % (seen)']] == '60.0 ± 14.1'  # ddof=1
  assert rows['row3'][column['T2I exact % (seen)']] == '30.0 ± 7.1'
  assert rows['row3'][column['caption CIDEr (seen)']] == '–'
  assert rows['row14'][column['caption exact % (seen)']] == '90.0 ± 10.0'
  assert rows['row14'][column['caption CIDEr (seen)']] == '250.0 ± 0.0'
  assert rows['row14'][column['I→T→I FID'] ].strip(' |') == '20.0 ± 10.0'
  assert rows['row14'][column['T2I2T']] == '✓' and rows['row3'][column['T2I2T']] == ''
  assert rows['row14'][column['seeds']] == '3' and 'itit_u10' in rows
  assert rows['row14_warmup'][column['caption exact % (seen)']] == '99.0'
  assert rows['row14'][column['data']] == '400 pairs + 19600 unpaired'
  assert table.index('## Scaling cells') < table.index('| itit_u10')
  assert table.index('## Paired-fraction sweep') < table.index('| row14_p10')
  assert rows['row14_p10'][column['data']] == '2360 pairs + 17640 unpaired'
  # Against row 3 on the same seed: row 14's seeds 1-2 (seed 3 has no row-3 twin): captions
  # +30 and +20 points, drawings +15 and +5; no other figure of DIFFERENCE_METRICS is in both.
  differences = table.split('## Against row 3 on the same seed')[1].split('##')[0]
  assert '| row14 | 1,2 | +25.0 ± 7.1 (2/2, p 0.13) | +10.0 ± 7.1 (2/2, p 0.3) | – | –' in differences
  assert re.search(r'\| row14_warmup \| 1 \| \+49\.0 \(1/1\) \| – \|', differences)
  assert 'itit_u10' not in differences and 'row14_p10' not in differences

  cells = standard_cells()
  results = tables.load_results(str(out))
  series = tables.scaling_series(cells, results, 'shapes/i2t_exact')
  assert list(series) == list(tables.SCALING_SERIES)
  itit, pairs, from_step0, fixed_captioner = series.values()
  # ITIT's curve is the warm-up recipe (itit_u10, row14_warmup); row 14 from step 0 and the
  # sweep's row14_p10 are not on it.
  assert [(x, round(m, 6)) for x, m, _ in itit] == [(0, 60.0), (1960, 60.0), (19600, 99.0)]
  assert [(x, round(m, 6)) for x, m, _ in pairs] == [(0, 60.0), (1960, 55.0)]
  assert [(x, round(m, 6)) for x, m, _ in from_step0] == [(19600, 90.0)]
  row3_curve, row14_curve = tables.sweep_series(cells, results, 'shapes/i2t_exact').values()
  assert [(x, round(m, 6)) for x, m, _ in row3_curve] == [(400, 60.0), (2360, 55.0)]
  assert [(x, round(m, 6)) for x, m, _ in row14_curve] == [(400, 90.0), (2360, 75.0)]
  assert (out / 'paired_sweep.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  png = out / 'scaling.png'
  assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert Image.open(png).size[0] > 500
  text = open(readme).read()
  assert '[table2.md](table2.md)' in text and '[scaling.png](scaling.png)' in text
  assert re.search(r'Machine: .*, \d+ CPUs; ', text) and '60.0 ± 14.1' in text
  assert ('Command (the whole plan; re-running it resumes): '
          f'`python -m experiments.shapes_study --out {out}`') in text
  assert 'Status: 9 of the plan\'s 36 runs are finished; re-running' in text
  assert '[paired_sweep.png](paired_sweep.png)' in text
  assert 'ANALYSIS.md' not in text
  (out / 'ANALYSIS.md').write_text('# by hand')
  assert '[ANALYSIS.md](ANALYSIS.md)' in open(report.write_report(cells, paths)).read()


def readme_text(path):
  with open(path) as f:
    return f.read()


def test_report_shows_the_novel_looks_of_the_compositional_cells(tmp_path):
  out = tmp_path / 'out'
  for seed in (1, 2, 3):
    write_cell(out, 'row3', 3, 0.0, False, seed, {'shapes/i2t_exact': 0.5}, 0, 24)
    write_cell(out, 'row3_comp', 3, 0.0, False, seed,
               {'shapes/i2t_exact': 0.5, 'shapes_novel_test/i2t_exact': 0.1 * seed,
                'shapes_novel_test/t2i_exact': 0.1}, 0, 24)
  for seed in (1, 2):
    write_cell(out, 'row14_comp', 14, 1.0, False, seed,
               {'shapes/i2t_exact': 0.6, 'shapes_novel_test/i2t_exact': 0.1 * seed + 0.2,
                'shapes_novel_test/t2i_exact': 0.05}, 456, 24)
  cells = laptop_cells()
  readme = report.write_report(cells, commands.Paths(str(out), str(out / 'work'), ''))
  table = (out / 'table2.md').read_text()
  main, compositional = table.split('## Compositional data (novel looks)')
  # The main table: no compositional cell, and no column that no run has (held-out, FID).
  main_header = next(line for line in main.splitlines() if line.startswith('| cell'))
  assert 'row3_comp' not in main and 'held-out' not in main_header and 'FID' not in main_header
  header = next(line for line in compositional.splitlines() if line.startswith('| cell'))
  column = {name.strip(' |'): i for i, name in enumerate(header.split(' | '))}
  listed, differences = compositional.split('Each cell minus row3_comp on the same seed')
  rows = {line.split(' | ')[0][2:]: line.split(' | ') for line in listed.splitlines()
          if line.startswith('| row')}
  assert rows['row3_comp'][column['caption exact % (novel looks)']] == '20.0 ± 10.0'
  assert rows['row14_comp'][column['caption exact % (novel looks)']] == '35.0 ± 7.1'
  assert rows['row14_comp'][column['T2I exact % (novel looks)']].strip(' |') == '5.0 ± 0.0'
  assert rows['row14_comp'][column['data']] == '24 pairs + 456 unpaired'
  # Per seed against row3_comp, on the novel looks: +20 and +20 points of caption exact.
  assert '| row14_comp | 1,2 | +20.0 ± 0.0 (2/2, p < 0.001) | -5.0 ± 0.0 (0/2, p < 0.001) | – | – |' in differences
  # The README's lead shows the novel looks beside the seen scenes' table.
  lead = readme_text(readme).split('## The study in one table')[1].split('Command (the whole')[0]
  novel = {line.split(' | ')[0][2:]: line.strip(' |').split(' | ')
           for line in lead.split('a look no pair shows')[1].splitlines()
           if line.startswith('| row')}
  assert novel['row3_comp'][2:] == ['3', '20.0 ± 10.0', '–', '10.0 ± 0.0', '–']
  assert novel['row14_comp'][2:] == ['2', '35.0 ± 7.1', '+20.0 ± 0.0 (2/2, p < 0.001)',
                                     '5.0 ± 0.0', '-5.0 ± 0.0 (0/2, p < 0.001)']
  results = tables.load_results(str(out))
  # Compositional cells are on neither curve.
  itit, pairs, _, fixed_captioner = tables.scaling_series(
      cells, results, 'shapes/i2t_exact').values()
  assert fixed_captioner == []  # no fixed-captioner cell has run: no curve
  assert [x for x, _, _ in itit] == [x for x, _, _ in pairs] == [0]
  row3_curve, _ = tables.sweep_series(cells, results, 'shapes/i2t_exact').values()
  assert [(x, round(m, 6)) for x, m, _ in row3_curve] == [(24, 50.0)]
  text = open(readme).read()
  # The title names the level and dates the results by their runs' days.
  assert text.startswith('# The shapes-world study: the laptop level, runs of 2026-11-21 to '
                         '2026-11-23\n')
  assert 'Status: 8 of the plan\'s 51 runs are finished' in text
  assert f'--out {out}`' in text  # the laptop level needs no flag
  half = shapes_config.get_config('laptop').total_steps // 2
  assert f'(ITIT: cycles from step {half}, ' in text


def test_a_study_recorded_before_levels_resumes_at_the_standard_level(tmp_path):
  out, vqgan = tmp_path / 'out', tmp_path / 'vqgan'
  vqgan.mkdir()
  tail = ['--quick', '--vqgan', str(vqgan), '--cells', 'row3']
  standard = ['--out', str(out), '--level', 'standard'] + tail
  assert cli.main(standard, runner=FakeCLIs(), log=quiet) == 0
  meta_path = out / 'study.json'
  meta = json.loads(meta_path.read_text())
  assert meta['level'] == 'standard' and meta['budget']['level'] == ''
  assert f'--out {out} --level standard --quick`' in (out / 'README.md').read_text()
  # study.json as written before levels existed: the same budget, without `level`.
  del meta['level'], meta['budget']['level']
  meta_path.write_text(json.dumps(meta))
  fake = FakeCLIs()
  assert cli.main(standard, runner=fake, log=quiet) == 0 and fake.commands == []
  lines = []
  assert cli.main(['--out', str(out)] + tail, runner=fake, log=lines.append) == 1
  assert fake.commands == []
  assert 'holds a study run with another budget (it is a --level standard study)' in lines[-1]


def test_seed_differences_pair_runs_by_seed():
  cells = standard_cells()
  metrics = (('shapes/i2t_color', 'caption colour', 100.0),
             ('shapes/t2i_shape', 'T2I shape', 100.0))
  run = lambda seed, **m: {'seed': seed, 'metrics': m}
  results = {
      'row3': [run(1, **{'shapes/i2t_color': 0.40, 'shapes/t2i_shape': 0.30}),
               run(2, **{'shapes/i2t_color': 0.60, 'shapes/t2i_shape': 0.30})],
      # Seed 3 has no row-3 twin and must not count; seed 2 lacks T2I shape.
      'row14': [run(1, **{'shapes/i2t_color': 0.45, 'shapes/t2i_shape': 0.20}),
                run(2, **{'shapes/i2t_color': 0.50}),
                run(3, **{'shapes/i2t_color': 0.99, 'shapes/t2i_shape': 0.99})],
      'row7': [run(2, **{'shapes/i2t_color': 0.70, 'shapes/t2i_shape': 0.35})],
      'row10': [run(3, **{'shapes/i2t_color': 0.5})],
      # Seed 1 on shards of another (re-trained) VQGAN: no pair with row 3's seed 1.
      'row11': [dict(run(1, **{'shapes/i2t_color': 0.9}), image_tokenizer='sha-B')],
  }
  table = tables.seed_differences_markdown(cells, results, metrics=metrics)
  rows = {line.split(' | ')[0][2:]: line.strip(' |').split(' | ')
          for line in table.splitlines()[2:]}
  # row 14: +5 and -10 points of caption colour (mean -2.5, std 10.6), ahead on 1 of 2 seeds;
  # t = -1/3 on 1 degree of freedom: p = 1 - 2 atan(1/3) / pi = 0.795.
  assert rows['row14'] == ['row14', '1,2', '-2.5 ± 10.6 (1/2, p 0.8)', '-10.0 (0/1)']
  assert rows['row7'] == ['row7', '2', '+10.0 (1/1)', '+5.0 (1/1)']
  # No seed (and tokenizer) in common with row 3 (row10, row11), and row 3 itself: no row.
  assert set(rows) == {'row14', 'row7'}
  # With row 3's seed 1 on that tokenizer too, row 11 pairs with it.
  results['row3'][0]['image_tokenizer'] = 'sha-B'
  rows = tables.seed_differences_markdown(cells, results, metrics=metrics).splitlines()[2:]
  assert [r.split(' | ')[0][2:] for r in rows] == ['row7', 'row11', 'row14']
  assert rows[1] == '| row11 | 1 | +50.0 (1/1) | – |'
  assert rows[2].startswith('| row14 | 2 | -10.0 (0/1) |')  # its seed 1 is on the first VQGAN
  assert table.splitlines()[0] == '| cell | seeds | caption colour | T2I shape |'
  assert tables.seed_differences_markdown(cells, {'row3': results['row3']}) == ''


def test_tokenizer_note_counts_the_runs_of_each_vqgan():
  run = lambda seed, tokenizer=None: {'seed': seed, 'metrics': {},
                                      **({'image_tokenizer': tokenizer} if tokenizer else {})}
  assert tables.tokenizer_note({'row3': [run(1, 'a' * 64), run(2, 'a' * 64)]}) == ''
  results = {'row3': [run(1), run(2, 'b' * 64)], 'row14': [run(1), run(2, 'b' * 64),
                                                           run(3, 'b' * 64)]}
  assert tables.tokenizer_note(results) == (
      'The runs read shards of 2 image tokenizers (VQGANs): 2 on not recorded; 3 on '
      'bbbbbbbbbbbb…. Per-seed differences and gaps pair runs of one tokenizer only.')


def test_eta_scales_the_prior_by_measured_time():
  assert commands.eta_seconds([100.0, 50.0], [], []) == 150.0
  assert commands.eta_seconds([100.0, 50.0], [10.0, 30.0], [20.0, 60.0]) == 300.0
  assert metric_writer.format_duration(3725) == '1h02m'
  assert metric_writer.format_duration(65) == '1m05s'
  assert tables.mean_std([1.0]) == (1.0, 0.0)
  assert tables.mean_std([1.0, 3.0]) == pytest.approx((2.0, np.sqrt(2.0)))


def test_a_changed_budget_is_refused_not_mixed(tmp_path):
  out, vqgan = tmp_path / 'out', tmp_path / 'vqgan'
  vqgan.mkdir()
  args = ['--out', str(out), '--quick', '--vqgan', str(vqgan), '--cells', 'row3']
  assert cli.main(args, runner=FakeCLIs(), log=quiet) == 0
  meta_path = out / 'study.json'
  meta = json.loads(meta_path.read_text())
  meta['budget']['train']['total_steps'] = 30
  meta['budget']['estimate'] = {'overhead_s': 1.0}  # the ETA prior may change freely
  meta_path.write_text(json.dumps(meta))
  fake, lines = FakeCLIs(), []
  assert cli.main(args, runner=fake, log=lines.append) == 1
  assert fake.commands == []
  assert 'train.total_steps: 30 -> 300' in lines[-1] and 'estimate' not in lines[-1]
  assert 'it is a --level' not in lines[-1]
  budget = plan.BUDGETS['quick']
  assert commands.budget_changes(None, budget) == []
  assert commands.budget_changes(json.loads(json.dumps(budget)), budget) == []
  # A train override added since (a pinned config field) is left to the runs' config check;
  # one removed, or a new key of another section, is a change.
  pinned = dict(budget, train=dict(budget['train'], **{'loss.t2i_mask_schedule': 'cosine'}))
  assert commands.budget_changes(json.loads(json.dumps(budget)), pinned) == []
  assert commands.budget_changes(json.loads(json.dumps(pinned)), budget) == [
      "train.loss.t2i_mask_schedule: 'cosine' -> None"]
  grown = dict(budget, sample=dict(budget['sample'], top_k=5))
  assert commands.budget_changes(json.loads(json.dumps(budget)), grown) == [
      'sample.top_k: None -> 5']


def test_a_pinned_train_field_that_differs_from_the_runs_is_refused(tmp_path,
                                                                   monkeypatch):
  """Pinning a value the started runs did not have passes the budget check and is caught by
  the runs' own configs. At the standard level, whose config keeps base's
  loss.t2i_mask_schedule (the laptop preset's is the one pinned here)."""
  out, vqgan = tmp_path / 'out', tmp_path / 'vqgan'
  vqgan.mkdir()
  args = ['--out', str(out), '--quick', '--level', 'standard', '--vqgan', str(vqgan),
          '--cells', 'row3']
  assert cli.main(args, runner=FakeCLIs(), log=quiet) == 0
  budget = plan.BUDGETS['standard_quick']
  paths = commands.Paths(str(out), str(out / 'work'), str(vqgan))
  run = design.Run({c.name: c for c in standard_cells()}['row3'], 1)
  config = commands.train_config(run, paths, budget, design.cell_counts(run.cell, budget))
  (out / 'work' / 'runs' / 'row3-seed1' / 'config.json').write_text(config.to_json())
  monkeypatch.setitem(plan.BUDGETS, 'standard_quick', dict(budget, train=dict(
      budget['train'], **{'loss.t2i_mask_schedule': 'cosine'})))
  fake, lines = FakeCLIs(), []
  assert cli.main(args, runner=fake, log=lines.append) == 1
  assert fake.commands == []
  assert "loss.t2i_mask_schedule: 'truncated_gaussian' -> 'cosine'" in lines[-1]
  assert 'the configs have changed' in lines[-1]


def test_paired_t_test_matches_the_closed_forms():
  # 1 degree of freedom: p = 1 - 2 atan(|t|) / pi; 2: p = 1 - |t| / sqrt(2 + t^2).
  assert tables.paired_t_pvalue([1.0, 3.0]) == pytest.approx(1 - 2 * np.arctan(2.0) / np.pi,
                                                             abs=1e-5)
  t = 2.0 / (1.0 / np.sqrt(3.0))
  assert tables.paired_t_pvalue([3.0, 1.0, 2.0]) == pytest.approx(1 - t / np.sqrt(2 + t * t),
                                                                  abs=1e-5)
  # The sign of the differences does not change a two-sided p; more agreement lowers it.
  assert tables.paired_t_pvalue([-1.0, -3.0]) == pytest.approx(tables.paired_t_pvalue([1, 3]))
  assert tables.paired_t_pvalue([9.0, 10.0, 11.0, 10.0, 10.0]) < 1e-3
  assert tables.format_difference([9.0, 10.0, 11.0, 10.0, 10.0]) == '+10.0 ± 0.7 (5/5, p < 0.001)'
  assert tables.paired_t_pvalue([0.2 - 0.1, 0.3 - 0.2]) == 0.0  # equal up to rounding
  assert tables.paired_t_pvalue([5.0]) is None
  assert tables.paired_t_pvalue([2.0, 2.0]) == 0.0 and tables.paired_t_pvalue([0.0, 0.0]) == 1.0
  assert tables.format_difference([30.0, 20.0]) == '+25.0 ± 7.1 (2/2, p 0.13)'
  assert tables.format_difference([-4.0]) == '-4.0 (0/1)'


def test_report_leads_with_one_table_one_plot_and_the_gap_closed(tmp_path):
  out = tmp_path / 'out'
  exact = lambda captions, drawings: {'shapes/i2t_exact': captions, 'shapes/t2i_exact': drawings}
  # Per seed: row3 (0.5, 0.2), (0.6, 0.3), (0.4, 0.2); the bound 0.9 / 1.0 on every seed.
  for seed, (captions, drawings) in enumerate(((0.5, 0.2), (0.6, 0.3), (0.4, 0.2)), 1):
    write_cell(out, 'row3', 3, 0.0, False, seed, exact(captions, drawings), 0)
    write_cell(out, 'all_paired', 3, 1.0, True, seed, exact(0.9, 1.0), 0, 480)
  # row 14: captions +0.2 on seeds 1, 2 (half the gap on seed 1, two thirds on seed 2), -0.1 on
  # seed 3 (-0.2 of the gap); drawings at the row-3 value + 0.4 on seeds 1-2 only.
  for seed, (captions, drawings) in enumerate(((0.7, 0.6), (0.8, 0.7), (0.3, None)), 1):
    metrics = exact(captions, drawings)
    if drawings is None:
      del metrics['shapes/t2i_exact']
    write_cell(out, 'row14', 14, 1.0, False, seed, metrics, 240)
  results = tables.load_results(str(out))
  np.testing.assert_allclose(tables.gap_closed(results, 'row14', 'shapes/i2t_exact'),
                             [0.5, 2 / 3, -0.2])
  np.testing.assert_allclose(tables.gap_closed(results, 'row14', 'shapes/t2i_exact'),
                             [0.5, 4 / 7])
  # A seed whose run read another VQGAN's shards has no gap: its row 3 and bound are not twins.
  moved = {**results, 'row14': [dict(results['row14'][2], image_tokenizer='sha-B')]}
  assert tables.gap_closed(moved, 'row14', 'shapes/i2t_exact') == []
  # A bound that is not ahead of pairs only on every seed leaves no gap to close.
  level = {**results, 'all_paired': [dict(r, metrics=exact(0.9, 0.2 if r['seed'] == 3 else 1.0))
                                     for r in results['all_paired']]}
  assert tables.gap_closed(level, 'row14', 'shapes/t2i_exact') == []
  assert len(tables.gap_closed(level, 'row14', 'shapes/i2t_exact')) == 3
  assert tables.headline(level, 'row14') == ('row14 closes 32 ± 46 % of the caption gap (3 '
                                             'seeds) between row3 (pairs only) and all_paired '
                                             '(every training scene paired), exact scenes, per '
                                             'seed.')
  paths = commands.Paths(str(out), str(out / 'work'), '')
  with open(report.write_report(laptop_cells(), paths)) as f:
    readme = f.read()
  lead = readme.split('## The study in one table')[1].split('Command (the whole plan')[0]
  assert readme.index('## The study in one table') < readme.index('Command (the whole plan')
  rows = {line.split(' | ')[0][2:]: line.strip(' |').split(' | ') for line in lead.splitlines()
          if line.startswith('| ') and not line.startswith('| cell')}
  assert list(rows) == ['row3', 'row14', 'all_paired']
  # row 14 minus row 3: captions +20, +20, -10 points; drawings +40, +40 (std 0: p 0).
  assert rows['row3'] == ['row3', 'pairs only', '3', '50.0 ± 10.0', '–', '–', '23.3 ± 5.8',
                          '–', '–']
  p_captions = tables.paired_t_pvalue([20.0, 20.0, -10.0])
  assert rows['row14'][2:6] == ['3', '60.0 ± 26.5', f'+10.0 ± 17.3 (2/3, p {p_captions:.2g})',
                                '32.2 ± 46.0 % (3)']
  assert rows['row14'][6:] == ['65.0 ± 7.1', '+40.0 ± 0.0 (2/2, p < 0.001)', '53.6 ± 5.1 % (2)']
  assert rows['all_paired'][3:6] == ['90.0 ± 0.0', '+40.0 ± 10.0 (3/3, p 0.02)', '–']
  assert ('- row14 closes 32 ± 46 % of the caption gap (3 seeds) and 54 ± 5 % of the drawing '
          'gap (2 seeds)') in lead
  assert '![summary](summary.png)' in lead
  png = out / 'summary.png'
  assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and Image.open(png).size[0] >= 1200


def test_cheap_cycles_plan_measures_each_setting_against_the_papers():
  cells = {c.name: c for c in design.make_cells(plan.CELLS['cheap_cycles'])}
  # The laptop level's world and budget, at 50% pairs without weight decay (its runs' recipe).
  assert plan.LEVELS['cheap_cycles'] == ('cheap_cycles', 'cheap_cycles_quick')
  synthesis = {n: {k: v for k, v in c.overrides if k != 'cycle.t2i2t_trains_captioner'}
               for n, c in cells.items() if c.row == 14}
  assert synthesis['synth_paper'] == {'cycle.synthesis_steps': 24, 'cycle.guidance_scale': 2.0,
                                      'cycle.reuse': 1}
  assert synthesis['synth_s4_r4'] == {'cycle.synthesis_steps': 4, 'cycle.guidance_scale': 0.0,
                                      'cycle.reuse': 4}
  assert all(dict(c.overrides)['cycle.t2i2t_trains_captioner'] is False
             for c in cells.values() if c.row == 14)
  assert plan.COST_REFERENCE in cells and {'row3', 'all_paired'} <= set(cells)
  assert all(c.seeds >= 3 for c in cells.values())
  for level, quick in plan.QUICK_CELLS.items():
    assert set(quick) <= {c.name for c in design.make_cells(plan.CELLS[level])}, level


def test_cheap_cycles_dry_run_times_every_row14_cell(tmp_path):
  out = tmp_path / 'cheap'
  lines = dry_run(['--out', str(out), '--level', 'cheap_cycles'])
  text = '\n'.join(lines)
  benches = [line for line in lines if '-m benchmarks.benchmark ' in line]
  assert len(benches) == 5  # each row-14 cell; rows 3 and all_paired are trained, not timed
  paper = next(line for line in benches if '--tag=_synth_paper ' in line)
  for flag_text in ('--config=configs/shapes.py:laptop', '--rows=3,14', '--batch=64',
                    '--steps=10', f'--out={out}/step_times/synth_paper.json',
                    '--config.cycle.synthesis_steps=24', '--config.cycle.guidance_scale=2.0',
                    '--config.cycle.reuse=1', '--config.cycle.t2i2t_trains_captioner=False'):
    assert flag_text in paper, flag_text
  assert re.search(r'Plan: 21 runs, ~\d+h\d\dm estimated', text)
  quick = dry_run(['--out', str(out), '--level', 'cheap_cycles', '--quick'])
  assert sum('-m benchmarks.benchmark ' in line for line in quick) == 2
  assert all('--steps=2' in line for line in quick if '-m benchmarks.benchmark ' in line)
  # The laptop level times nothing.
  assert not any('benchmarks.benchmark' in line for line in dry_run(['--out', str(out)]))


def test_cheap_cycles_report_puts_cost_beside_quality(tmp_path):
  out = tmp_path / 'out'
  exact = lambda captions, drawings: {'shapes/i2t_exact': captions, 'shapes/t2i_exact': drawings}
  for seed in (1, 2, 3):
    write_cell(out, 'row3', 3, 0.0, False, seed, exact(0.5, 0.2), 0, 240)
    write_cell(out, 'all_paired', 3, 1.0, True, seed, exact(0.9, 1.0), 0, 480)
    write_cell(out, 'synth_paper', 14, 1.0, False, seed, exact(0.75, 0.6), 240, 240)
    # Captions 0.75, 0.5, 1.0 against the paper synthesis' 0.75; drawings 0.1 below it.
    write_cell(out, 'synth_s4_r4', 14, 1.0, False, seed, exact((0.75, 0.5, 1.0)[seed - 1], 0.5),
               240, 240)
  (out / 'step_times').mkdir()
  (out / 'step_times' / 'synth_s4_r4.json').write_text(json.dumps(
      {'itit_over_baseline_synth_s4_r4': 1.234}))
  cells = design.make_cells(plan.CELLS['cheap_cycles'])
  paths = commands.Paths(str(out), str(out / 'work'), '')
  with open(report.write_report(cells, paths)) as f:
    readme = f.read()
  section = readme.split('## Cost and quality of the synthesis settings')[1].split('![cost]')[0]
  rows = {line.split(' | ')[0][2:]: line.strip(' |').split(' | ') for line in section.splitlines()
          if line.startswith('| synth')}
  assert list(rows) == ['synth_paper', 'synth_s4_r4']
  costs = report.cell_costs(cells, paths, 'laptop')
  from benchmarks import cycle_flops  # pylint: disable=g-import-not-at-top
  from configs import vit_b  # pylint: disable=g-import-not-at-top
  expected = cycle_flops.step_flops(vit_b.get_config(), 32, 's4_r4')['ratio']
  assert costs['synth_s4_r4']['itit_b'] == pytest.approx(expected)
  assert rows['synth_s4_r4'][1:5] == ['4 steps, guidance 0, each pair 4 steps',
                                      f'{expected:.2f}x', f'{costs["synth_s4_r4"]["level_flops"]:.2f}x',
                                      '1.23x']
  assert rows['synth_paper'][4] == '–'  # not measured yet
  assert costs['synth_paper']['itit_b'] > 2 * costs['synth_s4_r4']['itit_b']
  # Against the paper's synthesis: captions 0, -25, +25 points (p 1), gap closed 62.5%, 0%,
  # 125%; drawings -10 on all three seeds.
  assert rows['synth_s4_r4'][5:8] == ['75.0 ± 25.0', '+0.0 ± 25.0 (1/3, p 1)', '62.5 ± 62.5 % (3)']
  assert rows['synth_s4_r4'][8:10] == ['50.0 ± 0.0', '-10.0 ± 0.0 (0/3, p < 0.001)']
  assert rows['synth_paper'][6] == '–'
  assert (out / 'cost.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert "The `fast_cycles` preset of every ITIT config (configs/base.py) is synth_s4's" in readme
  assert 'minus the preset' not in readme  # no synth_s4 run yet
  assert "Status: 12 of the plan's 21 runs are finished; re-running" in readme

  # The preset's cell on seeds 1-3, and seed 4 of row 3 and of the preset (`--seeds 4-4`).
  for seed in (1, 2, 3, 4):
    write_cell(out, 'synth_s4', 14, 1.0, False, seed, exact(0.75, (0.5, 0.6, 0.6, 0.9)[seed - 1]),
               240, 240)
  write_cell(out, 'row3', 3, 0.0, False, 4, exact(0.5, 0.2), 0, 240)
  with open(report.write_report(cells, paths)) as f:
    readme = f.read()
  table = readme.split('minus the preset (synth_s4)')[1].split('\n\n')[1]
  rows = {line.split(' | ')[0][2:]: line.strip(' |').split(' | ') for line in table.splitlines()[2:]}
  assert table.splitlines()[0] == '| cell | seeds | captions exact | drawings exact |'
  # synth_s4_r4 against the preset: captions 0, -25, +25; drawings 0, -10, -10.
  assert rows == {'synth_paper': ['synth_paper', '1,2,3', '+0.0 ± 0.0 (0/3, p 1)',
                                  '+3.3 ± 5.8 (1/3, p 0.42)'],
                  'synth_s4_r4': ['synth_s4_r4', '1,2,3', '+0.0 ± 25.0 (1/3, p 1)',
                                  '-6.7 ± 5.8 (0/3, p 0.18)']}
  assert ("Status: 15 of the plan's 21 runs are finished; re-running the command continues the "
          "study where it stopped. Beyond the plan's seeds (`--seeds A-B`): row3 seeds 4; "
          "synth_s4 seeds 4.") in readme


def test_the_fast_cycles_preset_is_its_cells_synthesis():
  """configs/base.py's FAST_CYCLES is exactly the synthesis of the study cell the report names."""
  from configs import base  # pylint: disable=g-import-not-at-top
  cell = {c.name: c for c in design.make_cells(plan.CELLS['cheap_cycles'])}[plan.FAST_CYCLES_CELL]
  synthesis = {key.split('.')[1]: value for key, value in dict(cell.overrides).items()
               if key.split('.')[1] in base.FAST_CYCLES}
  assert synthesis == base.FAST_CYCLES


def test_cheap_cycles_times_each_setting_once_and_reports_it(tmp_path):
  out, vqgan = tmp_path / 'out', tmp_path / 'vqgan'
  vqgan.mkdir()
  args = ['--out', str(out), '--level', 'cheap_cycles', '--quick', '--vqgan', str(vqgan)]
  fake = FakeCLIs()
  assert cli.main(args, runner=fake, log=quiet) == 0
  timed = [flag(c, 'tag') for c in fake.commands if 'benchmarks.benchmark' in c]
  assert timed == ['_synth_paper', '_synth_s4_r4']
  assert fake.trained() == ['row3-seed1', 'synth_paper-seed1', 'synth_s4_r4-seed1']
  # A benchmark cut short (its JSON without the ratio) runs again; finished ones do not.
  (out / 'step_times' / 'synth_s4_r4.json').write_text('{"step_row3_synth_s4_r4": {}}')
  fake = FakeCLIs()
  assert cli.main(args, runner=fake, log=quiet) == 0
  assert [flag(c, 'tag') for c in fake.commands] == ['_synth_s4_r4'] and not fake.trained()
  readme = (out / 'README.md').read_text()
  assert '## Cost and quality of the synthesis settings' in readme
  assert re.search(r'\| synth_s4_r4 \| 4 steps, guidance 0, each pair 4 steps \| [\d.]+x \| '
                   r'[\d.]+x \| 1\.25x \|', readme)
  assert '[cost.png](cost.png)' in readme and '[summary.png](summary.png)' in readme
  # No figure-5 cells at this level: no scaling curve.
  assert 'scaling' not in readme and not (out / 'scaling.png').exists()


def test_fixed_captioner_scaling_curve_runs_from_pairs_only_to_row14_critic():
  # The study at 50% pairs ran this curve's 10% point (critic_u10); the plan has it no more,
  # but a plan that names such a cell draws it.
  cells = {c.name: c for c in laptop_cells() + design.make_cells([(
      'critic_u10', 14, 0.1, False, 3, 'row14_critic with 10% of the unpaired scenes',
      plan.FIXED_CAPTIONER)])}
  run = lambda seed, value, extra: {'seed': seed, 'extra_scenes': extra,
                                    'metrics': {'shapes/i2t_exact': value}}
  results = {'row3': [run(1, 0.6, 0), run(2, 0.7, 0)], 'critic_u10': [run(1, 0.65, 12)],
             'row14_critic': [run(1, 0.8, 120), run(2, 0.9, 120)],
             'row14_warmup': [run(1, 0.5, 120)], 'row14': [run(1, 0.4, 120)]}
  itit, pairs, from_step0, fixed = tables.scaling_series(list(cells.values()), results,
                                                         'shapes/i2t_exact').values()
  assert [(x, round(m, 6)) for x, m, _ in fixed] == [(0, 65.0), (12, 65.0), (120, 85.0)]
  assert [(x, round(m, 6)) for x, m, _ in itit] == [(0, 65.0), (120, 50.0)]
  assert [x for x, _, _ in pairs] == [0] and [(x, m) for x, m, _ in from_step0] == [(120, 40.0)]


def test_status_line_counts_seeds_beyond_the_plan_only_when_every_cell_has_enough():
  cells = design.make_cells(plan.CELLS['cheap_cycles'])
  run = lambda name, seed: {'cell': {'name': name}, 'seed': seed}
  # Seeds 1-3 of row3 and the bound; every other cell only on seeds 4-6 (another VQGAN).
  runs = [run(c.name, seed) for c in cells for seed in (
      (1, 2, 3) if c.name in ('row3', 'all_paired') else (4, 5, 6))]
  line = report.status_line(cells, runs)
  assert line.startswith("Status: 6 of the plan's 21 runs are finished; re-running")
  assert 'synth_s2 seeds 4,5,6' in line
  assert line.endswith('Counting those, every cell has at least its planned number of seeds.')
  # One seed short anywhere: no such claim.
  short = [r for r in runs if (r['cell']['name'], r['seed']) != ('synth_s2', 6)]
  assert 'Counting those' not in report.status_line(cells, short)
  # The plan done: a plain full stop, nothing more.
  full = [run(c.name, seed) for c in cells for seed in (1, 2, 3)]
  assert report.status_line(cells, full) == "Status: 21 of the plan's 21 runs are finished."

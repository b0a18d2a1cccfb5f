"""Reliability: kills, preemption, NaNs, damaged data, bad configs and untrusted files.

Every run here trains the same tiny T2I-only model for 6 steps, so one XLA compile (kept in a
persistent compilation cache shared with the subprocesses) serves all of them; the runs that
must be separate processes (SIGTERM, SIGKILL, the CLI's error lines) go through
tests/reliability_worker.py or `python -m itit.train`. docs/RELIABILITY.md maps each guarantee
to its test.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import tiny
from itit.data import shards
from itit import errors
from itit.trainer import config_check
from itit.trainer import loop
from itit.trainer import state as state_lib
from itit.trainer import train_data
import conftest  # pylint: disable=g-bad-import-order

# The run every test shares: T2I only (the cheapest compile), metrics every step, a checkpoint
# every 2 steps, all kept.
OVERRIDES = {'total_steps': 6, 'log_every': 1, 'checkpoint_every': 2, 'keep_checkpoints': 10,
             'optimizer.warmup_steps': 2, 'optimizer.lr': 0.001, 'eval_every': 0,
             'loss.i2t': False, 'loss.i2i': False}


@pytest.fixture(scope='module')
def data_dir(shapes_spiece, tmp_path_factory):
  return conftest.write_pooled_shards(tmp_path_factory.mktemp('shards'), shapes_spiece(60),
                                      ('paired',), num_test=0, sha256='pooled-v1')


def overrides(data_dir, **changes):
  return {'data.dir': data_dir, **OVERRIDES, **changes}


def make_config(data_dir, **changes):
  return conftest.apply_overrides(tiny.get_config('row3'), overrides(data_dir, **changes))


def cli(script, workdir, data_dir, env=None, **changes):
  """Runs `script` (a module name or a .py path) with the test config as flags."""
  command = [sys.executable] + (['-m', script] if not script.endswith('.py') else [script])
  command += ['--config=configs/tiny.py:row3', f'--workdir={workdir}']
  command += [f'--config.{k}={v}' for k, v in overrides(data_dir, **changes).items()]
  return subprocess.run(command, cwd=conftest.REPO, env=conftest.repo_env(**(env or {})),
                        capture_output=True, text=True, timeout=600)


def losses(workdir):
  """step -> loss, the last line per step winning (a resumed run re-logs the steps it redoes)."""
  result = {}
  for line in open(os.path.join(workdir, 'metrics.jsonl')):
    entry = json.loads(line)
    if 'loss' in entry:
      result[entry['step']] = entry['loss']
  return result


def checkpoint(workdir, step=None):
  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'))
  step = manager.latest_step() if step is None else step
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  manager.close()
  return step, state['state']


def assert_same_params(a, b):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def one_error_line(result):
  """The CLI failed with exactly one `error: ...` line on stderr and no traceback."""
  assert result.returncode != 0, result.stdout
  assert 'Traceback' not in result.stderr, result.stderr
  lines = [l for l in result.stderr.splitlines() if l.startswith('error: ')]
  assert len(lines) == 1, result.stderr
  return lines[0]


@pytest.fixture(scope='module')
def straight(compile_cache, data_dir, tmp_path_factory):
  """An uninterrupted run: the reference every interrupted run must match bitwise."""
  workdir = str(tmp_path_factory.mktemp('straight'))
  loop.train_and_evaluate(make_config(data_dir), workdir)
  return workdir


# 2. Preemption ------------------------------------------------------------------------------

def test_sigterm_saves_exits_zero_and_resumes_exactly(straight, compile_cache, data_dir,
                                                      tmp_path):
  workdir = str(tmp_path / 'preempted')
  result = cli('tests/reliability_worker.py', workdir, data_dir,
               env={**compile_cache, 'ITIT_SIGTERM_AT_BATCH': '3'})
  assert result.returncode == 0, result.stderr[-3000:]
  assert re.search(r'SIGTERM: saved a checkpoint at step 3 .*re-run the same command',
                   result.stdout), result.stdout
  assert sorted(losses(workdir)) == [1, 2, 3]
  assert checkpoint(workdir)[0] == 3  # step 3 is no checkpoint_every step: saved on SIGTERM
  loop.train_and_evaluate(make_config(data_dir), workdir)
  assert losses(workdir) == losses(straight)
  assert_same_params(checkpoint(workdir)[1], checkpoint(straight)[1])


# 1. kill -9 during a save --------------------------------------------------------------------

def _fake_partial_save(checkpoints, complete_step, partial_step):
  """What a kill leaves mid-save: a temporary step folder with truncated files, no commit."""
  partial = os.path.join(checkpoints, f'{partial_step}.orbax-checkpoint-tmp')
  shutil.copytree(os.path.join(checkpoints, str(complete_step)), partial)
  for path in glob.glob(os.path.join(partial, '**', '*'), recursive=True):
    if os.path.isfile(path):
      with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)
  commit = os.path.join(partial, 'commit_success.txt')
  if os.path.exists(commit):
    os.remove(commit)


@pytest.mark.slow  # a subprocess run (~15 s); the SIGTERM test covers resume in the fast tier
def test_kill9_during_save_resumes_from_last_complete_checkpoint(straight, compile_cache,
                                                                 data_dir, tmp_path):
  workdir = str(tmp_path / 'killed')
  result = cli('tests/reliability_worker.py', workdir, data_dir,
               env={**compile_cache, 'ITIT_KILL_AFTER_SAVE': '4'})
  assert result.returncode == -9, result.stderr[-3000:]
  assert 'killing during the save of step 4' in result.stdout
  checkpoints = os.path.join(workdir, 'checkpoints')
  # Whether the background write of step 4 finished before the kill is up to the scheduler;
  # either way the resume must take the newest COMPLETE step. A second, certainly partial
  # step (what a kill at the worst moment leaves) must be ignored too.
  _fake_partial_save(checkpoints, complete_step=2, partial_step=6)
  manager = ocp.CheckpointManager(checkpoints)
  complete = manager.latest_step()
  manager.close()
  assert complete in (2, 4) and os.path.isdir(os.path.join(checkpoints, str(complete)))
  loop.train_and_evaluate(make_config(data_dir), workdir)
  assert losses(workdir) == losses(straight)
  assert_same_params(checkpoint(workdir)[1], checkpoint(straight)[1])


# 3. NaN / Inf in a batch ----------------------------------------------------------------------

def _poison_batches(monkeypatch, batch_numbers):
  """Batch k (1-based) of `batch_numbers` gets token ids outside the vocabularies: the
  embedding gathers return NaN, as from a corrupted record that passed every check."""
  next_batch = train_data.TrainData.next_batch
  calls = [0]

  def poisoned(self):
    batch = next_batch(self)
    calls[0] += 1
    if calls[0] in batch_numbers:
      paired = batch['paired']
      paired['image_tokens'] = np.full_like(paired['image_tokens'], 10 * conftest.CODES)
      paired['text_ids'] = np.full_like(paired['text_ids'], 1000)
    return batch

  monkeypatch.setattr(train_data.TrainData, 'next_batch', poisoned)


def test_nan_in_batch_halts_naming_the_step(straight, data_dir, tmp_path, monkeypatch):
  _poison_batches(monkeypatch, {3})
  workdir = str(tmp_path / 'halt')
  with pytest.raises(errors.TrainingDiverged,
                     match=r'at step 3 \(detected between steps 2 and 3\); no checkpoint was '
                           r'written after it.*nan_policy=skip'):
    loop.train_and_evaluate(make_config(data_dir), workdir)
  assert checkpoint(workdir)[0] == 2


@pytest.mark.slow  # a 6-step run (~30 s idle); the halt test covers the NaN guard fast
def test_nan_in_batch_is_skipped_and_counted(straight, data_dir, tmp_path, monkeypatch):
  _poison_batches(monkeypatch, {3, 5})
  workdir = str(tmp_path / 'skip')
  loop.train_and_evaluate(make_config(data_dir, nan_policy='skip', checkpoint_every=1), workdir)
  lines = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  lines = [l for l in lines if 'loss' in l]
  assert [l['skipped_steps'] for l in lines] == [0, 0, 1, 1, 2, 2]
  assert [np.isnan(l['loss']) for l in lines] == [False, False, True, False, True, False]
  # A skipped step leaves parameters and optimizer state exactly as they were.
  _, before = checkpoint(workdir, 2)
  _, after = checkpoint(workdir, 3)
  assert_same_params(before['params'], after['params'])
  assert_same_params(before['opt_state'], after['opt_state'])
  _, final = checkpoint(workdir)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(final['params']))
  assert int(final['skipped_steps']) == 2 and int(final['first_nonfinite_step']) == 2


# 4. Data faults -------------------------------------------------------------------------------

def _copy_data(data_dir, tmp_path):
  copy = str(tmp_path / 'data')
  shutil.copytree(data_dir, copy)
  return copy


def _corrupt_every_record(path):
  """Flips bytes inside the data chunks (ArrayRecord's chunk hashes must catch it)."""
  data = bytearray(open(path, 'rb').read())
  nonzero = np.flatnonzero(np.frombuffer(bytes(data), np.uint8))
  for offset in nonzero[len(nonzero) // 8: 5 * len(nonzero) // 8: 53]:  # before the index
    data[offset] ^= 0xFF
  open(path, 'wb').write(data)


def test_corrupt_record_names_the_shard(data_dir, tmp_path):
  data = _copy_data(data_dir, tmp_path)
  path = os.path.join(data, 'paired', 'shard-00000.array_record')
  _corrupt_every_record(path)
  source = shards.open_shards(os.path.join(data, 'paired'))
  np.testing.assert_array_equal(  # the intact shard still reads
      source.read_batch([40])['text_ids'],
      shards.open_shards(os.path.join(data_dir, 'paired')).read_batch([40])['text_ids'])
  with pytest.raises(errors.CorruptFileError, match=re.escape(path) + r' is damaged .*re-make'):
    source.read_batch(np.arange(32))


def test_truncated_and_missing_shards_fail_at_open(data_dir, tmp_path):
  data = _copy_data(data_dir, tmp_path)
  path = os.path.join(data, 'paired', 'shard-00001.array_record')
  with open(path, 'r+b') as f:
    f.truncate(1000)
  with pytest.raises(errors.CorruptFileError, match=re.escape(path)):
    shards.open_shards(os.path.join(data, 'paired'))
  os.remove(path)
  with pytest.raises(errors.MissingFileError, match=re.escape(path) + ' is missing'):
    shards.open_shards(os.path.join(data, 'paired'))


def test_record_of_another_layout_is_refused(data_dir, tmp_path):
  from array_record.python.array_record_module import ArrayRecordWriter
  data = _copy_data(data_dir, tmp_path)
  path = os.path.join(data, 'paired', 'shard-00001.array_record')
  os.remove(path)
  writer = ArrayRecordWriter(path, 'group_size:1')
  for _ in range(32):  # the right count, the wrong record size
    writer.write(b'\x00' * 10)
  writer.close()
  source = shards.open_shards(os.path.join(data, 'paired'))
  with pytest.raises(errors.CorruptFileError,
                     match=re.escape(path) + r" record 0 has 10 bytes, the manifest's layout 64"):
    source.read_batch([32])


def test_training_on_a_corrupt_shard_is_one_error_line(compile_cache, data_dir, tmp_path):
  data = _copy_data(data_dir, tmp_path)
  for path in glob.glob(os.path.join(data, 'paired', '*.array_record')):
    _corrupt_every_record(path)
  result = cli('itit.train', str(tmp_path / 'run'), data, env=compile_cache)
  line = one_error_line(result)
  assert re.match(r'error: token shard .*/paired/shard-0000[01]\.array_record is damaged', line)
  assert 're-make the shards' in line


def _with_identity(data, kind, sha256):
  path = os.path.join(data, 'paired', 'manifest.json')
  manifest = json.load(open(path))
  manifest['identities'][kind]['sha256'] = sha256
  json.dump(manifest, open(path, 'w'))


def test_resume_on_shards_of_another_tokenizer_is_refused(straight, compile_cache, data_dir,
                                                          tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(straight, workdir)
  data = _copy_data(data_dir, tmp_path)
  _with_identity(data, 'text_tokenizer', 'f' * 64)
  with pytest.raises(errors.UserError, match=r"cannot resume .*stream 'paired' .*text_tokenizer"):
    loop.train_and_evaluate(make_config(data), workdir)
  _with_identity(data, 'image_tokenizer', 'other-vqgan')
  line = one_error_line(cli('itit.train', workdir, data, env=compile_cache))
  assert re.match(r"error: cannot resume .*: stream 'paired' was trained on data whose "
                  r"image_tokenizer was .*pooled-v1.*Point data.dir at the original shards", line)


# 5. Config validation -------------------------------------------------------------------------

def test_unknown_config_field_is_one_error_line(data_dir, tmp_path):
  line = one_error_line(cli('itit.train', str(tmp_path / 'run'), data_dir,
                            **{'model.widht': 48}))
  assert line == ('error: --config.model.widht=48: the config has no field \'widht\'; Did you '
                  'mean "width" instead of "widht"? (the fields are those of the --config file)')
  assert not os.path.exists(tmp_path / 'run')


@pytest.mark.parametrize('changes, kind, message', [
    ({'batch.paired': 6}, errors.UserError,
     r'batch\.paired=6 is not divisible by the data-parallel size 4 .*--config\.batch\.paired=4'),
    ({'mesh.data': 3}, errors.UserError, r'mesh: .* needs 3 devices but 4 are present'),
    ({'mesh.fsdp': 3}, errors.UserError, r'4 devices do not divide by the fixed axes'),
    ({'nan_policy': 'ignore'}, errors.UserError, r"nan_policy='ignore'; use one of"),
    ({'prng_impl': 'philox'}, errors.UserError, r"prng_impl='philox'; use one of"),
    ({'checkpoint_every': 0}, errors.UserError, r'checkpoint_every=0: must be a positive number'),
    ({'cycle.start_step': 10**9}, errors.UserError,
     r'cycle\.start_step=1000000000: must be in \[0, total_steps=\d+\)'),
    ({'cycle.sample_temperature': 0.0}, errors.UserError,
     r'cycle\.sample_temperature=0\.0: must be > 0'),
    ({'cycle.gumbel_strength': -1.0}, errors.UserError,
     r'cycle\.gumbel_strength=-1\.0: must be >= 0 \(0 = off\)'),
    ({'cycle.synthesis_steps': 0}, errors.UserError, r'cycle\.synthesis_steps=0: must be >= 1'),
    ({'cycle.encoder_grad_scale': -0.5}, errors.UserError,
     r'cycle\.encoder_grad_scale=-0\.5: must be >= 0 \(1: the cycles train the joint encoder'),
    ({'cycle.reuse': 0}, errors.UserError,
     r'cycle\.reuse=0: must be a whole number of steps >= 1 \(1: a fresh pseudo pair every'),
    ({'data.dir': '/nonexistent/shards'}, errors.MissingFileError,
     r'data\.dir /nonexistent/shards does not exist'),
    ({'data.paired': 'pared'}, errors.MissingFileError,
     r"stream 'paired': .*/pared holds no token shards .*--config\.data\.paired"),
    ({'model.text_encoder.kind': 't5', 'model.text_encoder.path': '/nonexistent/t5'},
     errors.MissingFileError, r"model\.text_encoder\.path='/nonexistent/t5' is not a directory"),
    ({'loss.mask_ratio_min': 0.75, 'loss.mask_ratio_max_i2t': 0.5}, errors.UserError,
     r'loss\.mask_ratio_min=0\.75 <= loss\.mask_ratio_max_i2t=0\.5 <= 1 does not hold'),
    ({'loss.mask_ratio_mode': 1.5}, errors.UserError, r'mask_ratio_mode=1\.5: must be in'),
    ({'loss.t2i_mask_schedule': 'linear'}, errors.UserError,
     r"loss\.t2i_mask_schedule='linear': use one of truncated_gaussian, cosine"),
    ({'loss.mask_ratio_min': 0.1, 'model.num_dropped': 8}, errors.UserError,
     r'model\.num_dropped=8 tokens are dropped .* masks only 1\.6 of 16'),
])
def test_config_checks(data_dir, changes, kind, message):
  config = make_config(data_dir, **changes)
  with pytest.raises(kind, match=message):
    config_check.check_train_config(config, num_devices=4, process_count=1,
                                    streams=['paired'])


def test_quiet_library_logs_unless_verbosity_is_given(monkeypatch):
  from absl import flags
  from absl import logging
  previous = logging.get_verbosity()
  try:
    monkeypatch.setattr(flags.FLAGS['verbosity'], 'present', 0)
    logging.set_verbosity(logging.INFO)
    errors.quiet_library_logs()
    assert logging.get_verbosity() == logging.WARNING
    monkeypatch.setattr(flags.FLAGS['verbosity'], 'present', 1)  # --verbosity=0 on the line
    logging.set_verbosity(logging.INFO)
    errors.quiet_library_logs()
    assert logging.get_verbosity() == logging.INFO
  finally:
    logging.set_verbosity(previous)


def test_config_is_checked_before_any_data_or_compile(data_dir, tmp_path, monkeypatch):
  def reached(*args, **kwargs):
    raise AssertionError('validation must come before the data, the model and any compile')

  monkeypatch.setattr(train_data, 'TrainData', reached)
  monkeypatch.setattr(state_lib, 'state_layout', reached)
  with pytest.raises(errors.UserError, match='needs 2 devices'):
    loop.train_and_evaluate(make_config(data_dir, **{'mesh.data': 2}), str(tmp_path / 'run'))
  with pytest.raises(errors.UserError, match=r"unpaired_text_loss='t2x'; use one of"):
    loop.train_and_evaluate(make_config(data_dir, **{'loss.unpaired_text_loss': 't2x'}),
                             str(tmp_path / 'run'))


def test_missing_data_dir_is_one_error_line(tmp_path):
  line = one_error_line(cli('itit.train', str(tmp_path / 'run'), str(tmp_path / 'nowhere')))
  assert line.startswith(f'error: data.dir {tmp_path}/nowhere does not exist: point '
                         '--config.data.dir at prepared shards')


# 6. Untrusted files ---------------------------------------------------------------------------

_UNSAFE_LOADS = [
    (re.compile(r'\bpickle\.loads?\(|\bcloudpickle\b|\bdill\b|\bjoblib\.load\b'
                r'|\bmarshal\.loads?\('), 'unpickles'),
    (re.compile(r'allow_pickle\s*=\s*True'), 'np.load(allow_pickle=True)'),
    (re.compile(r'\byaml\.(unsafe_)?load\((?![^)]*SafeLoader)'), 'yaml.load without SafeLoader'),
]


def test_no_pickle_in_any_load_path():
  found = []
  for folder in ('itit', 'configs', 'experiments', 'tools', 'benchmarks'):
    for path in glob.glob(os.path.join(conftest.REPO, folder, '**', '*.py'), recursive=True):
      text = open(path).read()
      for pattern, what in _UNSAFE_LOADS:
        found += [f'{path}: {what}: {m.group(0)}' for m in pattern.finditer(text)]
      # torch.load runs pickle unless weights_only=True (tensors and containers only).
      for match in re.finditer(r'torch\.load\(', text):
        call = text[match.end():text.find(')', match.end()) + 1]
        if 'weights_only=True' not in call:
          found.append(f'{path}: torch.load without weights_only=True')
  assert not found, found


def test_checkpoint_of_another_width_names_the_parameters(straight, data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(straight, workdir)
  config = make_config(data_dir, **{'model.width': 48})
  with pytest.raises(errors.UserError) as raised:
    loop.train_and_evaluate(config, workdir)
  message = str(raised.value)
  assert '\n' not in message
  assert re.search(r'the checkpoint at step 6 in .* does not fit this model config: \d+ '
                   r'parameters differ: ', message)
  assert re.search(r'encoder/block_0/attention/\w+/(kernel|bias) saved \([\d, ]+\), this config '
                   r'\([\d, ]+\)', message)
  assert 'Resume with the config it was trained with' in message


def test_runs_saved_before_a_config_field_existed_load_with_its_default():
  """config.json of an older run lacks the fields added since: load_run's config gets them at
  the configs' defaults (the behaviour before they existed), and the run's own values stay."""
  from configs import base as base_config
  from itit.trainer import run as run_lib
  defaults = base_config.paper_config()
  for path, value in run_lib.LATER_FIELDS.items():
    section, field = path.split('.')
    assert defaults[section][field] == value, path
  saved = json.loads(make_config('/data').to_json_best_effort())
  saved['cycle'].update(synthesis_steps=3, gumbel_strength=0.5)
  del saved['cycle']['sample_temperature'], saved['cycle']['t2i2t_trains_captioner']
  config = ml_collections.ConfigDict(run_lib.with_later_fields(saved))
  assert config.cycle.sample_temperature == 1.0 and config.cycle.t2i2t_trains_captioner is True
  assert (config.cycle.synthesis_steps, config.cycle.gumbel_strength) == (3, 0.5)
  assert config.data.dir == '/data' and config.model.to_dict() == saved['model']
  kept = dict(saved, cycle=dict(saved['cycle'], sample_temperature=0.1))
  assert run_lib.with_later_fields(kept)['cycle']['sample_temperature'] == 0.1

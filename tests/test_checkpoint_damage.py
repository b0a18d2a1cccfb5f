"""Damaged checkpoints and a full disk (itit/trainer/checkpoint_faults.py, checkpointing.py).

A damaged newest step (a truncated file, a missing file, missing metadata) is moved to
checkpoints/damaged/<step>-<what> with one warning line, and training resumes from the previous
step, ending bitwise equal to the uninterrupted run; `sample` / `evaluate` (`run.load_run`) fall
back the same way. A disk that fills during a save is one error line naming the checkpoint
folder and the bytes, with the earlier checkpoints intact. The runs are test_reliability.py's
(the same tiny T2I model, 6 steps, a checkpoint every 2), sharing its helpers; docs/RELIABILITY.md
maps each guarantee to its test here.
"""
import errno
import glob
import os
import re
import shutil
import subprocess

from grain._src.python.checkpoint import handler as grain_handler
import orbax.checkpoint as ocp
import pytest

from itit import errors
from itit.trainer import checkpoint_faults
from itit.trainer import checkpointing
from itit.trainer import loop
from itit.trainer import metric_writer
from itit.trainer import run as run_lib
import test_reliability  # pylint: disable=g-bad-import-order
from test_reliability import assert_same_params
from test_reliability import checkpoint
from test_reliability import cli
from test_reliability import losses
from test_reliability import make_config
from test_reliability import one_error_line

# test_reliability's module fixture (the shards), for this module; conftest's compile_cache.
data_dir = test_reliability.data_dir


@pytest.fixture(scope='module')
def straight(compile_cache, data_dir, tmp_path_factory):
  """An uninterrupted run with checkpoints at steps 2, 4 and 6."""
  workdir = str(tmp_path_factory.mktemp('straight'))
  loop.train_and_evaluate(make_config(data_dir), workdir)
  assert checkpointing.all_steps(workdir) == [2, 4, 6]
  return workdir


def _largest(pattern):
  return max(glob.glob(pattern, recursive=True), key=os.path.getsize)


def _truncate(path):
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)


# How a step gets damaged -> (what to do to checkpoints/<step>/, the slug of its damaged/ folder,
# a fragment of the warning's reason).
DAMAGES = {
    'truncated_state_file': (lambda d: _truncate(_largest(f'{d}/state/**/d/*')),
                             'truncated-state', 'state/ truncated: '),
    'missing_state_manifest': (lambda d: os.remove(f'{d}/state/manifest.ocdbt'),
                               'missing-state', 'state/ missing: '),
    'missing_iterator_state': (lambda d: os.remove(f'{d}/data_paired/process_0-of-1.json'),
                               'missing-data_paired', 'data_paired/ missing: '),
    'missing_checkpoint_metadata': (lambda d: os.remove(f'{d}/_CHECKPOINT_METADATA'),
                                    'missing-metadata', '_CHECKPOINT_METADATA is missing'),
    'missing_meta': (lambda d: os.remove(f'{d}/meta/metadata'), 'missing-meta',
                     'meta/ missing: '),
}


def damaged_copy(straight, tmp_path, how, steps=(6,)):
  workdir = str(tmp_path / 'run')
  shutil.copytree(straight, workdir)
  for step in steps:
    DAMAGES[how][0](os.path.join(workdir, 'checkpoints', str(step)))
  return workdir


def warnings_in(text):
  return [line for line in text.splitlines() if line.startswith('warning: ')]


@pytest.mark.parametrize('how', sorted(DAMAGES))
def test_damaged_newest_step_resumes_from_previous_bitwise(straight, data_dir, tmp_path,
                                                          capsys, how):
  workdir = damaged_copy(straight, tmp_path, how)
  capsys.readouterr()
  loop.train_and_evaluate(make_config(data_dir), workdir)
  out, err = capsys.readouterr()
  _, slug, reason = DAMAGES[how]
  checkpoints = os.path.join(workdir, 'checkpoints')
  (warning,) = warnings_in(err)
  assert warning.startswith(f'warning: checkpoint step 6 in {checkpoints} is damaged ({reason}')
  assert warning.endswith(f'moved it to {checkpoints}/damaged/6-{slug}; falling back to the '
                          'newest intact step'), warning
  assert 'Traceback' not in err and 'Event loop is closed' not in err, err
  assert f'Resumed from {checkpoints} at step 4.' in out
  assert os.listdir(os.path.join(checkpoints, 'damaged')) == [f'6-{slug}']
  assert checkpointing.all_steps(workdir) == [2, 4, 6]  # 6 written again by the resumed run
  assert losses(workdir) == losses(straight)
  assert_same_params(checkpoint(workdir)[1], checkpoint(straight)[1])


@pytest.mark.slow  # a CLI run of its own; the in-process damage tests cover the handling
def test_damaged_resume_through_the_cli_is_one_warning_line(straight, compile_cache,
                                                             data_dir, tmp_path):
  """The truncated state is the noisy case: Orbax's failed sharded restore leaves dozens of
  'Event loop is closed' and 'Task exception was never retrieved' tracebacks behind."""
  workdir = damaged_copy(straight, tmp_path, 'truncated_state_file')
  result = cli('itit.train', workdir, data_dir, env=compile_cache)
  assert result.returncode == 0, result.stderr[-3000:]
  (warning,) = warnings_in(result.stderr)
  assert 'checkpoint step 6' in warning and 'damaged/6-truncated-state' in warning
  for noise in ('Traceback', 'Event loop is closed', 'Task exception', 'Exception ignored'):
    assert noise not in result.stderr, result.stderr[-3000:]
  assert 'at step 4.' in result.stdout
  assert_same_params(checkpoint(workdir)[1], checkpoint(straight)[1])


@pytest.mark.parametrize('how', ['truncated_state_file', 'missing_state_manifest',
                                 'missing_checkpoint_metadata'])
def test_load_run_falls_back_with_the_warning(straight, tmp_path, capsys, how):
  """`itit.sample` and `itit.evaluate` load a run through `run.load_run`."""
  workdir = damaged_copy(straight, tmp_path, how)
  capsys.readouterr()
  _, _, params, step = run_lib.load_run(workdir)
  (warning,) = warnings_in(capsys.readouterr().err)
  assert 'checkpoint step 6' in warning and f'damaged/6-{DAMAGES[how][1]}' in warning
  assert step == 4
  assert_same_params(params, checkpoint(straight, 4)[1]['params'])
  assert checkpointing.all_steps(workdir) == [2, 4]


def test_load_params_ignores_damage_it_does_not_read(straight, tmp_path, capsys):
  workdir = damaged_copy(straight, tmp_path, 'missing_iterator_state')
  params, step = checkpointing.load_params(workdir)
  assert step == 6 and not warnings_in(capsys.readouterr().err)
  assert_same_params(params, checkpoint(straight, 6)[1]['params'])


def test_damaged_explicit_step_is_one_error(straight, tmp_path, capsys):
  workdir = damaged_copy(straight, tmp_path, 'truncated_state_file')
  with pytest.raises(errors.CorruptFileError, match=r'checkpoint step 6 in .* is damaged .*pass '
                     r'another --step'):
    run_lib.load_run(workdir, 6)
  assert len(warnings_in(capsys.readouterr().err)) == 1


def test_all_damaged_never_starts_from_scratch(straight, data_dir, tmp_path, capsys):
  workdir = damaged_copy(straight, tmp_path, 'truncated_state_file', steps=(2, 4, 6))
  checkpoints = os.path.join(workdir, 'checkpoints')
  metrics_before = open(os.path.join(workdir, 'metrics.jsonl')).read()
  for attempt in range(2):  # the second run finds only checkpoints/damaged/: still refused
    with pytest.raises(errors.CorruptFileError) as raised:
      loop.train_and_evaluate(make_config(data_dir), workdir)
    message = str(raised.value)
    assert '\n' not in message
    assert message.startswith(f'no intact checkpoint in {checkpoints}: ')
    assert ('steps 2, 4, 6 are damaged; ' if attempt == 0 else '') in message
    assert (f'set aside in {checkpoints}/damaged: 2-truncated-state, 4-truncated-state, '
            '6-truncated-state; training does not start from scratch') in message
  assert len(warnings_in(capsys.readouterr().err)) == 3
  assert open(os.path.join(workdir, 'metrics.jsonl')).read() == metrics_before
  with pytest.raises(errors.CorruptFileError, match='no intact checkpoint.*set aside in'):
    run_lib.load_run(workdir)  # itit.sample / itit.evaluate


def test_config_mismatch_is_not_damage(straight, data_dir, tmp_path, capsys, monkeypatch):
  """A restore that fails on an intact step (here another optimizer: another opt_state tree)
  is checked for damage, found intact, and re-raises Orbax's error; nothing is moved."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(straight, workdir)
  checks = []
  read_damage = checkpoint_faults.read_damage
  monkeypatch.setattr(checkpoint_faults, 'read_damage',
                      lambda *args: checks.append(read_damage(*args)) or checks[-1])
  with pytest.raises(ValueError, match='tree structures do not match'):
    loop.train_and_evaluate(make_config(data_dir, **{'optimizer.name': 'adamw'}), workdir)
  assert checks == [None]  # step 6 was read back as saved: intact
  assert not warnings_in(capsys.readouterr().err)
  assert not os.path.exists(os.path.join(workdir, 'checkpoints', 'damaged'))
  assert checkpointing.all_steps(workdir) == [2, 4, 6]


# Disk full ------------------------------------------------------------------------------------

def _blocks(path, block=4096):
  """Bytes `path` takes on a tmpfs (whole pages per file)."""
  return sum(-(-os.path.getsize(os.path.join(root, name)) // block) * block
             for root, _, names in os.walk(path) for name in names)


@pytest.fixture
def small_tmpfs(straight, tmp_path):
  """A tmpfs that holds the run's logs and ONE checkpoint (step 2) but not a second one."""
  one = _blocks(os.path.join(straight, 'checkpoints', '2'))
  logs = _blocks(straight) - _blocks(os.path.join(straight, 'checkpoints'))
  mount_point = tmp_path / 'small_disk'
  mount_point.mkdir()
  size = logs + int(1.5 * one) + 64 * 1024
  result = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs',
                           str(mount_point)], capture_output=True, text=True)
  if result.returncode != 0:
    pytest.skip(f'cannot mount a tmpfs here ({result.stderr.strip() or result.returncode}); '
                'test_disk_full_simulated covers the handling')
  try:
    yield str(mount_point)
  finally:
    subprocess.run(['umount', '-l', str(mount_point)], check=False)


@pytest.mark.slow  # a CLI run of its own; test_disk_full_simulated covers the handling
def test_disk_full_on_a_small_tmpfs_is_one_error_line(straight, small_tmpfs, compile_cache,
                                                      data_dir):
  workdir = os.path.join(small_tmpfs, 'run')
  result = cli('itit.train', workdir, data_dir, env=compile_cache)
  line = one_error_line(result)
  checkpoints = os.path.join(workdir, 'checkpoints')
  assert re.fullmatch(
      rf'error: disk full: the checkpoint of step 4 does not fit in {checkpoints}: one needs '
      r'about [\d.]+ [kM]B \(as step 2 on disk\) and [\d.]+ [kM]?B are free\. Free space \(or '
      r'lower --config.keep_checkpoints\) and re-run the same command: the earlier checkpoint '
      r'\(step 2\) is intact and the run resumes from step 2', line), line
  for noise in ('Event loop is closed', 'RESOURCE_EXHAUSTED', 'Task exception'):
    assert noise not in result.stderr, result.stderr[-3000:]
  assert sorted(os.listdir(checkpoints)) == ['2']  # the partial step 4 is gone
  assert_same_params(checkpoint(workdir, 2)[1], checkpoint(straight, 2)[1])


def _enospc(path):
  return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


@pytest.mark.parametrize('where', ['meta_background_write', 'iterator_write'])
def test_disk_full_simulated(straight, data_dir, tmp_path, monkeypatch, where):
  """ENOSPC raised by the write of step 4's meta JSON (in Orbax's background commit thread) or
  iterator state (grain's handler): simulated by patching those writes, so that it runs where no
  tmpfs can be mounted; test_disk_full_on_a_small_tmpfs_is_one_error_line is the real thing."""
  if where == 'meta_background_write':
    handler = ocp.JsonCheckpointHandler
    original = handler._save_fn  # pylint: disable=protected-access

    async def save_fn(self, x, directory):
      if '4.orbax-checkpoint-tmp' in str(directory):
        raise _enospc(directory)
      return await original(self, x, directory)

    monkeypatch.setattr(handler, '_save_fn', save_fn)
  else:
    original = grain_handler.CheckpointHandler.save

    def save(self, directory, *args, **kwargs):
      if '4.orbax-checkpoint-tmp' in str(directory):
        raise _enospc(directory)
      return original(self, directory, *args, **kwargs)

    monkeypatch.setattr(grain_handler.CheckpointHandler, 'save', save)
  workdir = str(tmp_path / 'run')
  with pytest.raises(checkpointing.DiskFullError) as raised:
    loop.train_and_evaluate(make_config(data_dir), workdir)
  checkpoints = os.path.join(workdir, 'checkpoints')
  assert re.fullmatch(rf'disk full: the checkpoint of step 4 does not fit in {checkpoints}: .*'
                      r'the earlier checkpoint \(step 2\) is intact and the run resumes from '
                      r'step 2', str(raised.value))
  assert sorted(os.listdir(checkpoints)) == ['2']
  assert_same_params(checkpoint(workdir, 2)[1], checkpoint(straight, 2)[1])


def test_disk_full_is_recognised_in_tensorstore_text():
  wrapped = ValueError('RESOURCE_EXHAUSTED: Error writing local file "x/_sharding": Failed '
                       'writing: "x": Failed to write 1 bytes to file 11: No space left on '
                       "device [os_error_code='28']")
  assert checkpoint_faults.is_disk_full(Exception('Encountered error')) is False
  outer = Exception('Encountered error while writing')
  outer.__cause__ = wrapped
  assert checkpoint_faults.is_disk_full(outer)
  assert checkpoint_faults.is_disk_full(_enospc('/x'))
  assert not checkpoint_faults.is_disk_full(OSError(errno.EACCES, 'Permission denied'))


def test_disk_full_writing_the_metrics_is_one_line(data_dir, tmp_path, monkeypatch):
  """ENOSPC from metrics.jsonl (simulated) is a DiskFullError naming the file, not a traceback."""
  write_scalars = metric_writer.MetricWriter.write_scalars

  def full_at_step_3(self, step, scalars):
    if step == 3:
      raise _enospc(os.path.join(self.workdir, 'metrics.jsonl'))
    return write_scalars(self, step, scalars)

  monkeypatch.setattr(metric_writer.MetricWriter, 'write_scalars', full_at_step_3)
  workdir = str(tmp_path / 'run')
  with pytest.raises(checkpointing.DiskFullError,
                     match=rf'disk full writing {workdir}/metrics.jsonl: free space in {workdir} '
                           r'and re-run the same command \(it resumes from the last checkpoint\)'):
    loop.train_and_evaluate(make_config(data_dir), workdir)
  assert checkpointing.all_steps(workdir) == [2]

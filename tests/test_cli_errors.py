"""The command lines' error boundary (itit/errors.py): every expected failure is ONE line
`error: <cause> (<what to do>)` on stderr, a non-zero exit, no traceback, and no folder left
behind; plus the checks behind some of those lines (config_check.check_model, the shard reader's
damage diagnosis, the image folder's outside links).

Each CASE runs the real command line (`python -m ...`) on inputs that fail before anything
compiles; they run three at a time in one module fixture, about 5 s of imports each.
"""
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

import conftest
from configs import tiny
from itit import errors
from itit.data import records
from itit.data import shards
from itit.data import sources
from itit.data.sources import Record
from itit.data.text_tokenizer import TextTokenizer
from itit.models import vqgan
from itit.trainer import config_check

# id -> (argv after `python`, what the last stderr line must contain, paths (relative to the
# case's folder) that must not exist afterwards). In argv: {case} is the case's own empty
# folder, {run} a fake training workdir with a checkpoint of step 3 and shards of captions
# that are not shapes-world ones, {empty} a folder without config.json, {nockpt} a workdir
# with config.json but no checkpoint, {vqgan} a real VQGAN workdir, {data} shards of which one
# file is truncated, {badmodel} a file that is not a SentencePiece model.
CASES = {
    'train: config file that does not exist': (
        ['-m', 'itit.train', '--config=configs/nope.py', '--workdir={case}/w'],
        '--config=configs/nope.py: no such config file', ['w']),
    'train: unknown preset': (
        ['-m', 'itit.train', '--config=configs/tiny.py:bogus', '--workdir={case}/w'],
        "configs/tiny.py: unknown preset 'bogus' (valid: row1", ['w']),
    'train: dropout outside [0, 1)': (
        ['-m', 'itit.train', '--config=configs/tiny.py', '--config.model.dropout=1.5',
         '--workdir={case}/w'], 'model.dropout=1.5: must be in [0, 1)', ['w']),
    'train: width not divisible by heads': (
        ['-m', 'itit.train', '--config=configs/tiny.py', '--config.model.width=33',
         '--workdir={case}/w'],
        'model.width=33 is not divisible by model.num_heads=2', ['w']),
    'train: a truncated shard, after the workdir was made': (
        ['-m', 'itit.train', '--config=configs/tiny.py:row3', '--config.data.dir={data}',
         '--workdir={case}/w/nested'],
        'shard-00001.array_record is truncated or replaced', ['w']),
    'train: no --workdir': (
        ['-m', 'itit.train', '--config=configs/tiny.py'],
        '--config and --workdir are required', []),
    'train_tokenizer: config file that does not exist': (
        ['-m', 'itit.train_tokenizer', '--config=configs/nope.py', '--workdir={case}/w'],
        'no such config file', ['w']),
    'compile_check: width not divisible by heads': (
        ['-m', 'itit.compile_check', '--config=configs/tiny.py', '--config.model.width=33',
         '--nocompile'], 'model.width=33 is not divisible by model.num_heads=2', []),
    'prepare: VQGAN folder that does not exist': (
        ['-m', 'itit.prepare', '--config=configs/prepare_shapes.py', '--out_dir={case}/out',
         '--config.image_tokenizer={case}/novqgan'],
        'novqgan does not exist: pass the workdir of a trained VQGAN', ['out']),
    'prepare: text tokenizer that is not a SentencePiece model': (
        ['-m', 'itit.prepare', '--config=configs/prepare_shapes.py', '--out_dir={case}/out',
         '--config.image_tokenizer={vqgan}', '--config.text_tokenizer={badmodel}'],
        'bad.model is not a SentencePiece model', ['out']),
    'sample: --images folder that does not exist': (
        ['-m', 'itit.sample', '--workdir={run}', '--images={case}/nowhere'],
        'nowhere is not a folder', []),
    'sample: workdir without config.json': (
        ['-m', 'itit.sample', '--workdir={empty}', '--prompt=a red circle'],
        'config.json is missing', []),
    'sample: --step that does not exist': (
        ['-m', 'itit.sample', '--workdir={run}', '--step=7', '--prompt=a red circle',
         '--out={case}/out'], 'has no checkpoint of step 7; its steps are 3', ['out']),
    'evaluate: workdir without checkpoint': (
        ['-m', 'itit.evaluate', '--workdir={nockpt}', '--out={case}/out'],
        'checkpoints holds no checkpoint', ['out']),
    'evaluate: --step that does not exist': (
        ['-m', 'itit.evaluate', '--workdir={run}', '--step=9', '--out={case}/out'],
        'has no checkpoint of step 9; its steps are 3', ['out']),
    'evaluate: unknown evaluator': (
        ['-m', 'itit.evaluate', '--workdir={run}', '--eval=bogus', '--out={case}/out'],
        "unknown evaluator(s) ['bogus']: choose from shapes, cycle", ['out']),
    'evaluate: shapes evaluator on other captions': (
        ['-m', 'itit.evaluate', '--workdir={run}', '--eval=shapes', '--out={case}/out'],
        'holds captions that are not shapes-world captions', ['out']),
    'study: --vqgan that does not exist': (
        ['-m', 'experiments.shapes_study', '--out={case}/study', '--vqgan={case}/nowhere'],
        '--vqgan={case}/nowhere is not a folder', ['study']),
    'study: unknown cell': (
        ['-m', 'experiments.shapes_study', '--out={case}/study', '--cells=bogus', '--dry_run'],
        'bogus', ['study']),
    'tools.token_stats: VQGAN folder that does not exist': (
        ['-m', 'tools.token_stats', '--vqgan={case}/nowhere'], 'nowhere does not exist', []),
    'tools.trace_summary: no trace there': (
        ['-m', 'tools.trace_summary', '{case}'], 'no *.trace.json.gz under', []),
    'tools.trace_summary: missing argument': (
        ['-m', 'tools.trace_summary'], 'the following arguments are required: trace', []),
    'tools.attribute_confusion: --step that does not exist': (
        ['-m', 'tools.attribute_confusion', '--workdir={run}', '--step=5'],
        'has no checkpoint of step 5', []),
    'tools.loss_gradients: workdir without checkpoint': (
        ['-m', 'tools.loss_gradients', '--workdir={nockpt}'], 'holds no checkpoint', []),
    'tools.pseudo_pairs: --steps the run does not keep': (
        ['-m', 'tools.pseudo_pairs', '--workdir={run}', '--steps=5'],
        'has no checkpoint at step(s) [5]; it keeps [3]', []),
    'tools.pseudo_pairs: data without unpaired splits': (
        ['-m', 'tools.pseudo_pairs', '--workdir={run}', '--out={case}/p.json'],
        'unpaired_image does not exist: pass --data_dir', ['p.json']),
    'tools.convert_inception: input that does not exist': (
        ['-m', 'tools.convert_inception', '--input={case}/nope.pt', '--output={case}/o.npz'],
        'nope.pt', ['o.npz']),
}

NON_SHAPES_CAPTIONS = ['a dog sleeps on the sofa', 'two cups of coffee', 'an old red bicycle',
                       'snow on the mountains']


def _tree(root):
  """{relative path: (size, mtime)} of every file and folder below `root`."""
  found = {}
  for directory, folders, files in os.walk(root):
    for name in folders + files:
      path = os.path.join(directory, name)
      stat = os.lstat(path)
      found[os.path.relpath(path, root)] = (stat.st_size if name in files else 0, stat.st_mtime_ns)
  return found


@pytest.fixture(scope='module')
def inputs(tmp_path_factory, shapes_vqgan_dir, shapes_spiece):
  """The shared inputs the CASES name."""
  root = tmp_path_factory.mktemp('inputs')
  spiece = shapes_spiece(64)
  _, vq_config = vqgan.load_tokenizer(shapes_vqgan_dir)
  # Shards of captions that are not shapes-world ones, as itit.prepare writes them.
  identity = {'kind': 'vqgan', 'sha256': vq_config.sha256, 'codebook_size': 512, 'grid_size': 8}
  images = np.zeros((len(NON_SHAPES_CAPTIONS), 32, 32, 3), np.uint8)
  shards.write_shards(
      root / 'data' / 'test',
      [Record(str(i), image, text) for i, (image, text) in enumerate(zip(images,
                                                                          NON_SHAPES_CAPTIONS))],
      image_tokenizer=conftest.pooled_tokens, text_tokenizer=TextTokenizer.load(spiece),
      max_text_len=8, identities={'image_tokenizer': identity},
      config=dict(image_tokenizer_path=shapes_vqgan_dir, text_tokenizer_path=spiece))
  # A training workdir: config.json and a checkpoint of step 3 (its parameters are never used).
  config = tiny.get_config()
  config.data.dir = str(root / 'data')
  run = root / 'run'
  run.mkdir()
  (run / 'config.json').write_text(config.to_json_best_effort())
  manager = ocp.CheckpointManager(str(run / 'checkpoints'))
  manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(
      {'params': {'w': np.zeros(2, np.float32)}})))
  manager.wait_until_finished()
  manager.close()
  nockpt = root / 'nockpt'
  nockpt.mkdir()
  shutil.copy(run / 'config.json', nockpt / 'config.json')
  (root / 'empty').mkdir()
  # Paired shards (two files) of which the second is cut short.
  truncated = conftest.write_pooled_shards(root / 'truncated', spiece, ['paired'], num_test=4,
                                           sha256='p' * 64)
  with open(os.path.join(truncated, 'paired', 'shard-00001.array_record'), 'r+b') as f:
    f.truncate(1000)
  (root / 'bad.model').write_bytes(b'this is not a SentencePiece model\n')
  return dict(run=str(run), empty=str(root / 'empty'), nockpt=str(nockpt),
              vqgan=shapes_vqgan_dir, data=truncated, badmodel=str(root / 'bad.model'),
              root=str(root))


def _run(argv, env=None):
  return subprocess.run([sys.executable] + argv, cwd=conftest.REPO, capture_output=True,
                        text=True, env=conftest.repo_env(**(env or {})), timeout=300)


@pytest.fixture(scope='module')
def results(inputs, tmp_path_factory):
  """case id -> (the case's folder, CompletedProcess, its folder's tree before), run three at a
  time; the shared inputs and the repository's top level must come out unchanged."""
  before_inputs = _tree(inputs['root'])
  before_repo = set(os.listdir(conftest.REPO))
  jobs = {}
  for index, (name, (argv, _, _)) in enumerate(CASES.items()):
    folder = str(tmp_path_factory.mktemp(f'case{index}'))
    jobs[name] = (folder, [a.format(case=folder, **inputs) for a in argv])
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    futures = {name: pool.submit(_run, argv) for name, (_, argv) in jobs.items()}
    done = {name: (jobs[name][0], future.result()) for name, future in futures.items()}
  assert _tree(inputs['root']) == before_inputs
  assert set(os.listdir(conftest.REPO)) - before_repo == set()
  return done


@pytest.mark.parametrize('name', list(CASES))
def test_expected_failure_is_one_error_line(name, results):
  folder, result = results[name]
  _, expected, absent = CASES[name]
  assert result.returncode != 0, result.stdout
  assert 'Traceback' not in result.stderr, result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: '), result.stderr
  assert expected.format(case=folder) in last, last
  assert [line for line in result.stderr.splitlines() if line.startswith('error:')] == [last]
  for path in absent:
    assert not os.path.exists(os.path.join(folder, path)), (path, os.listdir(folder))
  assert os.listdir(folder) == [], os.listdir(folder)  # nothing else was written there either


def test_traceback_on_request(tmp_path):
  result = _run(['-m', 'itit.train', '--config=configs/tiny.py', '--config.model.width=33',
                 f'--workdir={tmp_path}/w'], env={errors.TRACEBACK_ENV: '1'})
  assert result.returncode != 0
  assert 'Traceback' in result.stderr and 'UserError: model.width=33' in result.stderr
  assert not os.path.exists(tmp_path / 'w')


# The error boundary in-process ----------------------------------------------------------------

def test_a_failed_command_removes_the_empty_folders_it_made(tmp_path, capsys):
  kept = tmp_path / 'existing'
  kept.mkdir()

  def main():
    (tmp_path / 'new' / 'a' / 'checkpoints').mkdir(parents=True)
    (tmp_path / 'partial' / 'b').mkdir(parents=True)
    (tmp_path / 'partial' / 'b' / 'file').write_text('kept')
    raise errors.MissingFileError('data.dir /x does not exist (point --config.data.dir at it)')

  outputs = [str(tmp_path / 'new' / 'a'), str(tmp_path / 'partial'), str(kept)]
  with pytest.raises(SystemExit) as exit_info:
    errors.run_command(main, outputs=lambda: outputs)
  assert exit_info.value.code == 1
  assert capsys.readouterr().err == (
      'error: data.dir /x does not exist (point --config.data.dir at it)\n')
  assert sorted(os.listdir(tmp_path)) == ['existing', 'partial']  # 'new' was made and is empty
  assert os.path.isfile(tmp_path / 'partial' / 'b' / 'file')


def test_bugs_keep_their_traceback_and_success_keeps_its_folders(tmp_path):
  def bug():
    (tmp_path / 'out').mkdir()
    raise KeyError('a bug')

  with pytest.raises(KeyError):
    errors.run_command(bug, outputs=lambda: [str(tmp_path / 'out')])
  assert not os.path.exists(tmp_path / 'out')  # removed, but the bug is not hidden
  assert errors.run_command(lambda: (tmp_path / 'ok').mkdir() or 7,
                            outputs=lambda: [str(tmp_path / 'ok')]) == 7
  assert os.path.isdir(tmp_path / 'ok')


def test_path_errors_are_one_line(capsys):
  def main():
    open('/nonexistent/prompts.txt')

  with pytest.raises(SystemExit):
    errors.run_command(main)
  assert capsys.readouterr().err == (
      'error: /nonexistent/prompts.txt: No such file or directory (check the path)\n')


# config_check.check_model ---------------------------------------------------------------------

@pytest.mark.parametrize('overrides, message', [
    ({'model.dropout': 1.0}, 'model.dropout=1.0: must be in [0, 1)'),
    ({'model.dropout': -0.1}, 'model.dropout=-0.1: must be in [0, 1)'),
    ({'model.width': 33}, 'model.width=33 is not divisible by model.num_heads=2 (each head takes '
     'width / heads dimensions): set --config.model.width to a multiple of 2, e.g. 32 or 34'),
    ({'model.num_heads': 3}, 'model.width=32 is not divisible by model.num_heads=3'),
    ({'model.text_decoder_num_heads': 5}, 'model.text_decoder_width=32 is not divisible by '
     'model.text_decoder_num_heads=5'),
    ({'model.text_encoder.learned.width': 31}, 'model.text_encoder.learned.width=31 is not '
     'divisible by model.text_encoder.learned.num_heads=2'),
    ({'model.num_heads': 0}, 'model.width=32, model.num_heads=0: both must be positive'),
])
def test_check_model_names_the_fields(overrides, message):
  config = conftest.apply_overrides(tiny.get_config(), overrides)
  with pytest.raises(errors.UserError) as error_info:
    config_check.check_model(config)
  assert str(error_info.value).startswith(message), str(error_info.value)


def test_check_model_accepts_the_configs_and_ignores_an_unused_learned_encoder():
  config_check.check_model(tiny.get_config())
  config = conftest.apply_overrides(tiny.get_config(), {
      'model.text_encoder.kind': 't5', 'model.text_encoder.learned.width': 31})
  config_check.check_model(config)


# The shard reader's damage diagnosis ----------------------------------------------------------

@pytest.fixture
def shard_dir(tmp_path):
  conftest.write_index_shards(str(tmp_path / 'shards'), 50, 8)  # two files of 25 records
  return str(tmp_path / 'shards')


def _damage(path, offset):
  with open(path, 'r+b') as f:
    f.seek(offset)
    byte = f.read(1)
    f.seek(offset)
    f.write(bytes([byte[0] ^ 0xFF]))


def test_a_damaged_index_is_told_from_a_truncated_file(shard_dir):
  path = os.path.join(shard_dir, 'shard-00001.array_record')
  size = os.path.getsize(path)
  assert json.load(open(os.path.join(shard_dir, 'manifest.json')))['shards'][1]['bytes'] == size
  # ArrayRecord writes the index (its footer) into the file's last 64 KiB block.
  _damage(path, size - 65536 + 40)
  with pytest.raises(errors.CorruptFileError) as error_info:
    shards.open_shards(shard_dir)
  assert str(error_info.value).startswith(
      f'token shard {path} has a damaged index: the file has its full size ({size} bytes)')
  with open(path, 'r+b') as f:
    f.truncate(size - 65536)  # a whole block shorter: only the recorded size tells
  with pytest.raises(errors.CorruptFileError, match=(
      f'token shard {path} is truncated or replaced \\({size - 65536} bytes, {size} were '
      'written\\)')):
    shards.open_shards(shard_dir)


def test_truncation_is_told_without_a_recorded_size(shard_dir):
  manifest_path = os.path.join(shard_dir, 'manifest.json')
  manifest = json.load(open(manifest_path))
  for shard in manifest['shards']:
    del shard['bytes']  # a manifest written before sizes were recorded
  shards.write_json_atomic(manifest_path, manifest)
  path = os.path.join(shard_dir, 'shard-00000.array_record')
  with open(path, 'r+b') as f:
    f.truncate(70000)
  with pytest.raises(errors.CorruptFileError, match=f'token shard {path} is truncated or '
                     "replaced \\(70000 bytes, not a whole number of ArrayRecord's 64 KiB"):
    shards.open_shards(shard_dir)


def test_a_replaced_file_of_another_count_is_named(shard_dir, tmp_path):
  conftest.write_index_shards(str(tmp_path / 'other'), 10, 8)
  path = os.path.join(shard_dir, 'shard-00001.array_record')
  shutil.copy(tmp_path / 'other' / 'shard-00000.array_record', path)
  with pytest.raises(errors.CorruptFileError, match=f'token shard {path} is truncated or '
                     'replaced: it holds 10 records but the manifest says 25'):
    shards.open_shards(shard_dir)


# The image folder reads nothing outside it ----------------------------------------------------

def test_a_file_link_leading_outside_the_image_folder_is_skipped(tmp_path):
  folder, outside = tmp_path / 'images', tmp_path / 'outside'
  (folder / 'sub').mkdir(parents=True)
  outside.mkdir()
  for path in (folder / 'a.png', folder / 'sub' / 'b.png', outside / 'secret.png'):
    Image.new('RGB', (16, 16), (200, 10, 10)).save(path)
  os.symlink(outside / 'secret.png', folder / 'leak.png')  # leaves the folder: skipped
  os.symlink(os.path.join('..', '..', 'outside', 'secret.png'), folder / 'sub' / 'leak2.png')
  os.symlink(folder / 'a.png', folder / 'sub' / 'alias.png')  # stays inside: read
  os.symlink(outside, folder / 'linked_dir')  # folder links are never followed
  skips = records.SkipCounter()
  keys = [r.key for r in sources.image_folder(str(folder), skips=skips, size=8, min_size=1)]
  assert keys == ['a.png', 'sub/alias.png', 'sub/b.png']
  assert dict(skips.counts) == {'unsafe_path': 2}
  assert sorted(skips.examples['unsafe_path']) == [str(folder / 'leak.png'),
                                                   str(folder / 'sub' / 'leak2.png')]

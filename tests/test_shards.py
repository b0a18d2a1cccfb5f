"""Tests for itit.data.shards: exact round trip, manifest checks, resumable writes."""
import json
import os
import pickle

import numpy as np
import pytest

from itit.data import shards
from itit.data.sources import Record
from itit.data.text_tokenizer import TextTokenizer

IMAGE_SIDE = 4  # 4x4 images -> 16 tokens
MAX_TEXT_LEN = 12
COLORS = ['red', 'green', 'blue', 'yellow', 'purple', 'orange']
SHAPES = ['circle', 'square', 'triangle', 'cross']
IMAGE_IDENTITY = {'kind': 'fake', 'sha256': 'a' * 64}



def make_examples(count, seed=0, with_image=True, with_text=True):
  rng = np.random.default_rng(seed)
  for i in range(count):
    image = rng.integers(0, 256, (IMAGE_SIDE, IMAGE_SIDE, 3), np.uint8)
    text = (f'a {["small", "large"][i % 2]} {COLORS[i % 6]} {SHAPES[i % 4]} '
            f'{"at the top left" if i % 3 else "below a green circle"}')
    yield Record(f'ex{i}', image if with_image else None, text if with_text else None)


def fake_image_tokenizer(images):
  """[batch, 4, 4, 3] uint8 -> [batch, 16] tokens in [0, 65535]: red * 256 + green."""
  assert images.dtype == np.uint8 and images.ndim == 4
  return (images[..., 0].astype(np.int64) * 256 + images[..., 1]).reshape(len(images), -1)


@pytest.fixture(scope='module')
def text_tokenizer(tmp_path_factory):
  corpus = [ex.text for ex in make_examples(200)]
  return TextTokenizer.train(corpus, tmp_path_factory.mktemp('tok') / 'm.model', vocab_size=100)


def write(out_dir, examples, text_tokenizer, *, config=None, identities=None, image=True,
          **kwargs):
  return shards.write_shards(
      out_dir, examples, image_tokenizer=fake_image_tokenizer if image else None,
      text_tokenizer=text_tokenizer, max_text_len=MAX_TEXT_LEN,
      identities=identities or ({'image_tokenizer': IMAGE_IDENTITY} if image else {}),
      config=config or {'split': 'paired', 'seed': 0},
      records_per_shard=kwargs.pop('records_per_shard', 40), batch_size=16, **kwargs)


def test_round_trip_exact_values(tmp_path, text_tokenizer):
  manifest = write(tmp_path, make_examples(100), text_tokenizer, total=100)
  examples = list(make_examples(100))
  expected_tokens = fake_image_tokenizer(np.stack([ex.image for ex in examples]))
  expected_ids = text_tokenizer.encode([ex.text for ex in examples], MAX_TEXT_LEN)

  assert manifest['complete'] and manifest['num_records'] == 100
  assert [s['num_records'] for s in manifest['shards']] == [40, 40, 20]
  assert [s['first_key'] for s in manifest['shards']] == ['ex0', 'ex40', 'ex80']
  assert manifest['fields'] == [
      {'name': 'image_tokens', 'dtype': 'uint16', 'shape': [16]},
      {'name': 'text_ids', 'dtype': 'int32', 'shape': [MAX_TEXT_LEN]}]
  assert manifest['identities'] == {'image_tokenizer': IMAGE_IDENTITY,
                                    'text_tokenizer': text_tokenizer.identity}
  assert manifest['config'] == {'split': 'paired', 'seed': 0}
  assert shards.read_manifest(tmp_path) == manifest
  assert sorted(os.listdir(tmp_path)) == [
      'manifest.json', 'shard-00000.array_record', 'shard-00001.array_record',
      'shard-00002.array_record']

  source = shards.open_shards(tmp_path, {'text_tokenizer': text_tokenizer.identity})
  assert len(source) == 100
  record = source[57]
  assert record['image_tokens'].dtype == np.uint16 and record['text_ids'].dtype == np.int32
  np.testing.assert_array_equal(record['image_tokens'], expected_tokens[57])
  np.testing.assert_array_equal(record['text_ids'], expected_ids[57])
  assert text_tokenizer.decode(record['text_ids']) == examples[57].text

  indices = np.array([99, 0, 41, 40, 39, 57, 57])
  batch = source.read_batch(indices)
  np.testing.assert_array_equal(batch['image_tokens'], expected_tokens[indices])
  np.testing.assert_array_equal(batch['text_ids'], expected_ids[indices])
  assert batch['image_tokens'].flags['C_CONTIGUOUS'] and batch['text_ids'].flags['C_CONTIGUOUS']
  with pytest.raises(IndexError):
    source.read_batch([100])

  # Pickled (as grain's worker processes do), the source reopens its files.
  np.testing.assert_array_equal(pickle.loads(pickle.dumps(source))[57]['text_ids'],
                                expected_ids[57])


def test_text_only_and_image_only(tmp_path, text_tokenizer):
  text_manifest = write(tmp_path / 'text', make_examples(30, with_image=False), text_tokenizer,
                        image=False)
  assert [f['name'] for f in text_manifest['fields']] == ['text_ids']
  assert list(text_manifest['identities']) == ['text_tokenizer']
  record = shards.open_shards(tmp_path / 'text')[3]
  assert list(record) == ['text_ids']
  assert text_tokenizer.decode(record['text_ids']) == list(make_examples(4))[3].text

  write(tmp_path / 'image', make_examples(30, with_text=False), None)
  record = shards.open_shards(tmp_path / 'image')[29]
  assert list(record) == ['image_tokens']
  np.testing.assert_array_equal(
      record['image_tokens'], fake_image_tokenizer(list(make_examples(30))[29].image[None])[0])


def test_identity_mismatch_is_refused(tmp_path, text_tokenizer):
  write(tmp_path, make_examples(20), text_tokenizer)
  manifest = shards.read_manifest(tmp_path)
  with pytest.raises(ValueError, match=r'text_tokenizer\.sha256 .*but this run uses 0000'):
    shards.check_manifest(manifest, {'text_tokenizer': {'sha256': '0' * 64}}, tmp_path)
  with pytest.raises(ValueError, match=rf'{tmp_path} were made with image_tokenizer\.sha256 aaaa'):
    shards.open_shards(tmp_path, {'image_tokenizer': {'kind': 'fake', 'sha256': 'b' * 64}})
  with pytest.raises(ValueError, match=r'text_tokenizer\.vocab_size'):
    shards.check_manifest(manifest, {'text_tokenizer': {'vocab_size': 32128}}, tmp_path)
  with pytest.raises(ValueError, match='record no identity image_tokenizer.step'):
    shards.check_manifest(manifest, {'image_tokenizer': {'step': 5}}, tmp_path)
  shards.check_manifest(manifest, {'image_tokenizer': IMAGE_IDENTITY}, tmp_path)


class Interrupted(Exception):
  pass


def interrupted(examples, after):
  for i, example in enumerate(examples):
    if i == after:
      raise Interrupted
    yield example


def test_resume_after_interruption_matches_uninterrupted(tmp_path, text_tokenizer):
  reference = write(tmp_path / 'ref', make_examples(130), text_tokenizer)

  out = tmp_path / 'resumed'
  with pytest.raises(Interrupted):
    write(out, interrupted(make_examples(130), after=100), text_tokenizer)  # 2.5 shards
  partial = shards.read_manifest(out)
  assert not partial['complete'] and partial['num_records'] == 80
  assert (out / 'shard-00002.array_record.tmp').exists()
  with pytest.raises(ValueError, match='incomplete'):
    shards.open_shards(out)

  resumed = write(out, make_examples(130), text_tokenizer)
  for key in ('shards', 'num_records', 'fields', 'identities', 'config', 'complete'):
    assert resumed[key] == reference[key]
  assert sorted(os.listdir(out)) == sorted(os.listdir(tmp_path / 'ref'))
  for shard in reference['shards']:
    assert (out / shard['file']).read_bytes() == (tmp_path / 'ref' / shard['file']).read_bytes()
  # A finished folder is left as it is.
  assert write(out, make_examples(130), text_tokenizer) == resumed


def test_refuses_other_run_in_same_folder(tmp_path, text_tokenizer):
  with pytest.raises(Interrupted):
    write(tmp_path, interrupted(make_examples(100), after=50), text_tokenizer)
  with pytest.raises(ValueError, match=r'config\.seed 0, this run has 1: write to another'):
    write(tmp_path, make_examples(100), text_tokenizer, config={'split': 'paired', 'seed': 1})
  with pytest.raises(ValueError, match=r'config\.seed 0, this run has null'):
    write(tmp_path, make_examples(100), text_tokenizer, config={'split': 'paired'})
  with pytest.raises(ValueError, match=r'image_tokenizer\.sha256'):
    write(tmp_path, make_examples(100), text_tokenizer,
          identities={'image_tokenizer': {'kind': 'fake', 'sha256': 'c' * 64}})
  with pytest.raises(ValueError, match='records_per_shard 40, this run has 30'):
    write(tmp_path, make_examples(100), text_tokenizer, records_per_shard=30)
  # A stream that changed order since the first run cannot be resumed into these shards.
  shuffled = list(make_examples(100))[::-1]
  with pytest.raises(ValueError, match="example 0 is 'ex99'.*'ex0'"):
    write(tmp_path, shuffled, text_tokenizer)


def test_bad_input(tmp_path, text_tokenizer):
  with pytest.raises(ValueError, match="'ex0' has no image"):
    write(tmp_path / 'a', make_examples(5, with_image=False), text_tokenizer)
  with pytest.raises(ValueError, match="'ex0' has no text"):
    write(tmp_path / 'b', make_examples(5, with_text=False), text_tokenizer)
  with pytest.raises(ValueError, match='outside uint16'):
    shards.write_shards(tmp_path / 'c', make_examples(5), image_tokenizer=lambda x: np.full(
        (len(x), 16), 70000), text_tokenizer=None, max_text_len=8,
                        identities={'image_tokenizer': IMAGE_IDENTITY}, config={})
  with pytest.raises(ValueError, match=r"needs identities\['image_tokenizer'\]"):
    write(tmp_path / 'd', make_examples(5), text_tokenizer, identities={'x': 1})
  with pytest.raises(ValueError, match='is empty'):
    write(tmp_path / 'e', make_examples(0), text_tokenizer)
  with pytest.raises(FileNotFoundError, match='not a token shard folder'):
    shards.open_shards(tmp_path / 'nothing')

  write(tmp_path / 'f', make_examples(50), text_tokenizer)
  os.remove(tmp_path / 'f' / 'shard-00001.array_record')
  with pytest.raises(FileNotFoundError, match='shard-00001.array_record is missing'):
    shards.open_shards(tmp_path / 'f')
  manifest = json.loads((tmp_path / 'f' / 'manifest.json').read_text())
  manifest['shards'] = manifest['shards'][:1]
  manifest['shards'][0]['num_records'] = 41
  with pytest.raises(ValueError, match='holds 40 records but the manifest says 41'):
    shards.ShardDataSource(tmp_path / 'f', manifest)

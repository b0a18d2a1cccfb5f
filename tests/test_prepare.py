"""itit.prepare end to end: raw sources -> VQGAN tokens + SentencePiece ids -> checked shards."""
import json
import os

import ml_collections
import numpy as np
from PIL import Image
import pytest

from configs import prepare_folder
from configs import prepare_shapes
from itit.data import shards
from itit.data import sources
from itit.models import vqgan
from itit import prepare


def test_shapes_world_all_splits(shapes_vqgan_dir, tmp_path):
  config = prepare_shapes.get_config('0.1')
  config.image_tokenizer = shapes_vqgan_dir
  config.shapes.num_train = 200
  config.shapes.num_test = 30
  config.records_per_shard = 64
  out = str(tmp_path / 'data')
  summary = prepare.prepare(config, out)
  assert {k: v['records'] for k, v in summary.items()} == {
      'paired': 20, 'unpaired_image': 90, 'unpaired_text': 90, 'test': 30, 'heldout_test': 30}
  _, vq_config = vqgan.load_tokenizer(shapes_vqgan_dir)
  paired = shards.open_shards(os.path.join(out, 'paired'))
  ids = paired.manifest['identities']
  assert ids['image_tokenizer']['sha256'] == vq_config.sha256
  assert ids['image_tokenizer']['codebook_size'] == vq_config.codebook_size
  assert ids['text_tokenizer']['vocab_size'] <= config.text_vocab_size
  record = paired[0]
  assert record['image_tokens'].shape == (64,) and record['text_ids'].shape == (32,)
  assert record['image_tokens'].max() < vq_config.codebook_size
  assert set(shards.open_shards(os.path.join(out, 'unpaired_text'))[0]) == {'text_ids'}
  assert set(shards.open_shards(os.path.join(out, 'unpaired_image'))[0]) == {'image_tokens'}
  # The tokens are the VQGAN's: re-encoding the first paired image gives the same ones.
  from itit.data import shapes, shapes_splits  # pylint: disable=g-import-not-at-top
  splits = shapes_splits.make_splits(0, paired_fraction=0.1, num_train=200, num_test=30)
  image, _ = shapes.example(splits['paired'][0], 0, 0)
  params, _ = vqgan.load_tokenizer(shapes_vqgan_dir)
  expected = vqgan.tokenizer_fn(params, vq_config, 8)(image[None])[0]
  np.testing.assert_array_equal(record['image_tokens'], expected)

  # A reader expecting another VQGAN refuses the shards, naming the field.
  other = dict(ids, image_tokenizer=dict(ids['image_tokenizer'], sha256='0' * 64))
  with pytest.raises(ValueError, match='image_tokenizer.sha256'):
    shards.open_shards(os.path.join(out, 'paired'), expected_identities=other)

  # Re-running is a no-op that returns the same counts (every stream is complete).
  assert prepare.prepare(config, out) == {k: {'records': v['records'], 'skipped': {}}
                                          for k, v in summary.items()}


def _folder_fixture(root):
  images = root / 'images'
  images.mkdir()
  for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
    Image.new('RGB', (48, 40), colour).save(images / f'{i}.png')
  (images / 'broken.png').write_bytes(b'not a png')
  with open(root / 'captions.jsonl', 'w') as f:
    for i in range(3):
      f.write(json.dumps({'file': f'{i}.png', 'text': f'a plain picture number {i}'}) + '\n')
    f.write(json.dumps({'file': 'broken.png', 'text': 'broken'}) + '\n')
  (root / 'texts.txt').write_text('first text\n\nsecond text\n')


def test_generic_sources_with_bad_inputs(shapes_vqgan_dir, tmp_path):
  _folder_fixture(tmp_path)
  config = ml_collections.ConfigDict(dict(
      image_tokenizer=shapes_vqgan_dir, text_tokenizer='', text_corpus=str(tmp_path / '*.txt'),
      text_vocab_size=40, max_text_len=16, image_size=32, min_image_size=16, records_per_shard=10, batch_size=4,
      shapes=dict(seed=0, paired_fraction=0.0, num_train=0, num_test=0),
      streams={
          'paired': dict(source='image_folder', kind='paired', images=str(tmp_path / 'images'),
                         captions=str(tmp_path / 'captions.jsonl')),
          'unpaired_image': dict(source='image_folder', kind='image',
                                 images=str(tmp_path / 'images'), captions=''),
          'unpaired_text': dict(source='text_files', kind='text',
                                texts=str(tmp_path / '*.txt')),
      }))
  summary = prepare.prepare(config, str(tmp_path / 'out'))
  assert summary['paired']['records'] == 3
  assert summary['paired']['skipped'] == {'not_image': 1}
  assert summary['unpaired_image'] == {'records': 3, 'skipped': {'not_image': 1}}
  assert summary['unpaired_text']['records'] == 2
  # Solid-colour images of one colour give one token everywhere, and distinct colours differ.
  paired = shards.open_shards(str(tmp_path / 'out' / 'paired'))
  tokens = paired.read_batch(np.arange(3))['image_tokens']
  assert len({tuple(t) for t in tokens}) == 3


def test_dedup_images_tokenizes_each_image_once():
  calls = []

  def tokenize(images):
    calls.append(len(images))
    return images.reshape(len(images), -1)[:, :2].astype(np.int32)

  images = np.stack([np.full((2, 2, 3), v, np.uint8) for v in (1, 1, 2, 1, 2)])
  tokens = prepare.dedup_images(tokenize)(images)
  assert calls == [2]
  np.testing.assert_array_equal(tokens[:, 0], [1, 1, 2, 1, 2])


def _small_captioned_folder(root, side):
  folder = root / 'pairs'
  folder.mkdir(parents=True)
  with open(folder / 'captions.jsonl', 'w') as f:
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
      Image.new('RGB', (side, side), colour).save(folder / f'{i}.png')
      f.write(json.dumps({'image': f'{i}.png', 'caption': f'a plain square number {i}'}) + '\n')
  return folder


def test_a_stream_left_empty_is_refused_with_its_skip_counts(shapes_vqgan_dir, tmp_path):
  folder = _small_captioned_folder(tmp_path, 16)
  config = ml_collections.ConfigDict(dict(
      image_tokenizer=shapes_vqgan_dir, text_tokenizer='',
      text_corpus=str(folder / 'captions.jsonl'), text_vocab_size=40, max_text_len=16,
      image_size=32, min_image_size=32, records_per_shard=10, batch_size=4,
      shapes=dict(seed=0, paired_fraction=0.0, num_train=0, num_test=0),
      streams={'paired': dict(source='image_folder', kind='paired', images=str(folder),
                              captions=str(folder / 'captions.jsonl'))}))
  with pytest.raises(sources.SourceError) as refused:
    prepare.prepare(config, str(tmp_path / 'out'))
  message = str(refused.value)
  assert message.startswith('stream paired (image_folder) has no usable record: skipped 3 '
                            'inputs: too_small 3 (e.g. ')
  assert 'lower --config.min_image_size' in message and '\n' not in message
  # Allowed down to 16 px, the 16 px squares are upscaled to the VQGAN's 32.
  config.min_image_size = 16
  assert prepare.prepare(config, str(tmp_path / 'out'))['paired'] == {'records': 3,
                                                                      'skipped': {}}


def test_the_folder_config_reads_the_layout_and_holds_out_by_fraction(tmp_path):
  with pytest.raises(ValueError, match=r'configs/prepare_folder.py: .* has no pairs/ folder'):
    prepare_folder.get_config(str(tmp_path))
  pairs = _small_captioned_folder(tmp_path, 32)
  (tmp_path / 'texts.txt').write_text('a text without an image\n')
  config = prepare_folder.get_config(str(tmp_path))
  assert sorted(config.streams) == ['paired', 'test', 'unpaired_text']
  assert config.streams.paired.to_dict() == dict(
      source='image_folder', kind='paired', images=str(pairs),
      captions=str(pairs / 'captions.jsonl'), heldout_fraction=0.1, part='train')
  assert config.streams.test.part == 'heldout'
  assert config.text_corpus == f'{pairs / "captions.jsonl"},{tmp_path / "texts.txt"}'
  config.heldout_fraction = 0.5  # as --config.heldout_fraction=0.5 does: both streams follow
  assert config.streams.paired.heldout_fraction == config.streams.test.heldout_fraction == 0.5
  # A test/ folder of its own replaces the held-out part; images/ adds the unpaired images.
  test = _small_captioned_folder(tmp_path / 'test_root', 32)
  os.rename(test, tmp_path / 'test')
  (tmp_path / 'images').mkdir()
  config = prepare_folder.get_config(str(tmp_path))
  assert sorted(config.streams) == ['paired', 'test', 'unpaired_image', 'unpaired_text']
  assert config.streams.test.images == str(tmp_path / 'test')
  assert 'part' not in config.streams.paired and config.min_image_size == config.image_size

"""`itit.prepare` end to end over ~300 generated bad inputs: every one skipped and counted by
reason, the good ones written, nothing written outside the output folder.

The VQGAN is replaced by a stand-in tokenizer (block means), so the test exercises prepare's
reading, counting and writing without compiling a model.
"""
import io
import json
import os
import struct
import tarfile
import zlib

import ml_collections
import numpy as np
from PIL import Image
import pytest

from itit.data import shapes
from itit.data import shards
from itit.data.text_tokenizer import TextTokenizer
from itit.models import vqgan
from itit import prepare

SIZE, GRID, CODES = 32, 4, 32
rng = np.random.default_rng(0)


def encode(image, fmt='PNG'):
  buffer = io.BytesIO()
  image.save(buffer, format=fmt)
  return buffer.getvalue()


def noise(side=64, mode='RGB'):
  pixels = rng.integers(0, 256, (side, side, 3), np.uint8)
  return Image.fromarray(pixels).convert(mode)


def huge_png(width, height):
  """A valid small PNG whose IHDR claims width x height (CRC fixed): a decompression bomb."""
  data = bytearray(encode(noise(16)))
  ihdr = bytearray(data[12:29])  # b'IHDR' + 13 bytes
  ihdr[4:12] = struct.pack('>II', width, height)
  data[12:29] = ihdr
  data[29:33] = struct.pack('>I', zlib.crc32(bytes(ihdr)))
  return bytes(data)


def truncated(data, fraction):
  return data[:max(60, int(len(data) * fraction))]


def make_image_folder(root):
  """(folder, captions file, expected skip counts) with good and bad images and captions."""
  folder = root / 'images'
  folder.mkdir()
  lines, expected = [], {}

  def add(name, data, caption='a picture of noise', reason=None):
    (folder / name).write_bytes(data)
    lines.append(json.dumps({'file': name, 'text': caption}).encode())
    if reason:
      expected[reason] = expected.get(reason, 0) + 1

  for i in range(6):
    add(f'good_{i}.png', encode(noise()))
  for i, mode in enumerate(('L', 'P', 'CMYK', 'LA', 'I;16')):  # odd but convertible modes
    image = noise(mode='L').convert('I;16') if mode == 'I;16' else noise(mode=mode)
    add(f'mode_{i}.{"jpg" if mode == "CMYK" else "png"}',
        encode(image, 'JPEG' if mode == 'CMYK' else 'PNG'))
  for i in range(20):
    add(f'empty_{i}.png', b'', reason='empty_file')
  for i in range(30):
    fmt = 'PNG' if i % 2 else 'JPEG'
    add(f'truncated_{i}.{fmt.lower()}', truncated(encode(noise(96), fmt), 0.2 + 0.02 * i),
        reason='corrupt_image')
  for i in range(10):
    add(f'huge_{i}.png', huge_png(100_000 + i, 90_000), reason='too_large')
  for i in range(10):
    add(f'tiny_{i}.png', encode(noise(8 + i % 4)), reason='too_small')
  for i in range(5):
    pixels = rng.random((64, 64)).astype(np.float32)
    add(f'float_{i}.tif', encode(Image.fromarray(pixels, mode='F'), 'TIFF'),
        reason='unsupported_mode')
  for i in range(15):
    add(f'random_{i}.jpg', b'\x00garbage' + rng.bytes(200 + i), reason='not_image')
  for i in range(5):
    add(f'text_{i}.png', b'this is not a picture\n' * 10, reason='not_image')
  for i in range(5):  # an image nobody captioned
    (folder / f'uncaptioned_{i}.png').write_bytes(encode(noise()))
    expected['missing_caption'] = expected.get('missing_caption', 0) + 1
  # Caption-level faults, each about a good image (which keeps its good caption).
  bad_lines = (
      [(b'{"file": "good_0.png", "text": "bad \xff\xfe utf8"}', 'bad_utf8')] * 20
      + [(json.dumps({'file': 'good_1.png', 'text': 'x' * 1_100_000}).encode(),
          'text_too_long')] * 5
      + [(json.dumps({'file': 'good_2.png', 'text': 'y' * 3000}).encode(), 'text_too_long')] * 10
      + [(json.dumps({'file': 'good_3.png', 'text': ' \t\x01 '}).encode(), 'empty_text')] * 10
      + [(json.dumps({'file': name, 'text': 'escape'}).encode(), 'unsafe_path')
         for name in ['../good_0.png', '/etc/passwd', 'a/../../b.png', str(root / 'x.png'),
                      'C:/windows/x.png'] * 3]
      + [(b'{"file": "good_4.png", "text": ', 'bad_json')] * 10
      + [(json.dumps({'file': f'absent_{i}.png', 'text': 'gone'}).encode(), 'missing_file')
         for i in range(10)])
  for line, reason in bad_lines:
    lines.append(line)
    expected[reason] = expected.get(reason, 0) + 1
  captions = root / 'captions.jsonl'
  captions.write_bytes(b'\n'.join(lines) + b'\n')
  return folder, captions, expected


def add_member(tar, name, data=b'', kind=tarfile.REGTYPE, link=''):
  info = tarfile.TarInfo(name)
  info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
  tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def make_tars(root):
  """(tar glob, expected skip counts): images-only webdataset shards with hostile members."""
  expected = {}
  with tarfile.open(root / 'shard-0.tar', 'w') as tar:
    for i in range(5):
      add_member(tar, f'{i:04d}.png', encode(noise()))
    for i, name in enumerate(['../evil.jpg', '/abs_evil.jpg', str(root / 'abs_target.jpg'),
                              'a/../../evil.png', '../../../../tmp/evil.png'] * 2):
      add_member(tar, name, encode(noise()))
    for i in range(4):
      add_member(tar, f'link_{i}.jpg', kind=tarfile.SYMTYPE, link=str(root / 'images'))
      add_member(tar, f'hard_{i}.jpg', kind=tarfile.LNKTYPE, link='0000.png')
    add_member(tar, 'fifo.jpg', kind=tarfile.FIFOTYPE)
    add_member(tar, 'device.jpg', kind=tarfile.CHRTYPE)
    expected['unsafe_tar_member'] = 10 + 8 + 2
    for i in range(10):
      add_member(tar, f'{100 + i:04d}.jpg', b'')
    expected['empty_file'] = 10
    for i in range(10):
      add_member(tar, f'{200 + i:04d}.jpg', truncated(encode(noise(96), 'JPEG'), 0.3))
    expected['corrupt_image'] = 10
  good = (root / 'shard-0.tar').read_bytes()
  (root / 'shard-1.tar').write_bytes(good[:len(good) // 2 + 100])  # cut mid-member
  (root / 'shard-2.tar').write_bytes(b'')
  (root / 'shard-3.tar').write_bytes(rng.bytes(5000))
  expected['broken_tar'] = 3
  # shard-1 yields its intact prefix; count what that prefix holds (it is deterministic).
  return str(root / 'shard-*.tar'), expected


def make_texts(root):
  expected = {}
  lines = [b'a red circle above a blue square'] * 5
  lines += [b'caf\xe9 in latin-1, not utf-8'] * 20
  expected['bad_utf8'] = 20
  lines += [b'', b'   ', b'\x01\x02\x03'] * 5
  expected['empty_text'] = 15
  lines += [b'z' * 1_500_000] * 3 + [b'w' * 2500] * 7
  expected['text_too_long'] = 10
  (root / 'texts.txt').write_bytes(b'\n'.join(lines) + b'\n')
  return str(root / 'texts.txt'), expected


@pytest.fixture
def stand_in_vqgan(monkeypatch):
  """prepare's VQGAN replaced by 8x8-pixel block means (no model, no compile)."""
  vq_config = ml_collections.ConfigDict(
      dict(image_size=SIZE, sha256='stand-in', codebook_size=CODES))

  def tokenize(images):
    blocks = np.asarray(images, np.float32).reshape(-1, GRID, 8, GRID, 8, 3).mean(axis=(2, 4))
    return (blocks.sum(-1).reshape(len(images), -1) // 24 % CODES).astype(np.int32)

  monkeypatch.setattr(vqgan, 'load_tokenizer', lambda directory: ({}, vq_config))
  monkeypatch.setattr(vqgan, 'tokenizer_fn', lambda params, config, batch_size: tokenize)
  monkeypatch.setattr(vqgan, 'grid_size', lambda config: GRID)


def snapshot(root, skip):
  return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob('*')
                if skip not in p.parents and p != skip)


def test_prepare_survives_hundreds_of_bad_inputs(tmp_path, stand_in_vqgan, monkeypatch):
  inputs = tmp_path / 'inputs'
  inputs.mkdir()
  folder, captions, paired_expected = make_image_folder(inputs)
  tars, tar_expected = make_tars(inputs)
  texts, text_expected = make_texts(inputs)
  spiece = tmp_path / 'spiece.model'
  TextTokenizer.train(shapes.caption_corpus(num_scenes=200), spiece, vocab_size=60)
  out = tmp_path / 'out'
  work = tmp_path / 'cwd' / 'deeper'
  work.mkdir(parents=True)
  monkeypatch.chdir(work)  # a relative '../' that escaped would land in tmp_path
  before = snapshot(tmp_path, out)

  config = ml_collections.ConfigDict(dict(
      image_tokenizer='stand-in', text_tokenizer=str(spiece), text_corpus='', text_vocab_size=60,
      max_text_len=16, image_size=SIZE, min_image_size=16, records_per_shard=8, batch_size=4,
      shapes=dict(seed=0, paired_fraction=0.0, num_train=0, num_test=0),
      streams={
          'paired': dict(source='image_folder', kind='paired', images=str(folder),
                         captions=str(captions)),
          'unpaired_image': dict(source='webdataset', kind='image', tars=tars),
          'unpaired_text': dict(source='text_files', kind='text', texts=texts),
      }))
  summary = prepare.prepare(config, str(out))

  # Good inputs: 6 + 5 odd-mode images with one caption each (their bad captions skipped).
  assert summary['paired'] == {'records': 11, 'skipped': paired_expected}
  assert summary['unpaired_text'] == {'records': 5, 'skipped': text_expected}
  # The cut tar (shard-1) still yields its intact prefix: good images and counted bad members.
  image_skips = summary['unpaired_image']['skipped']
  assert image_skips['broken_tar'] == tar_expected['broken_tar']
  for reason in ('unsafe_tar_member', 'empty_file', 'corrupt_image'):
    assert tar_expected[reason] <= image_skips[reason] <= 2 * tar_expected[reason], reason
  assert set(image_skips) == set(tar_expected)
  assert 5 <= summary['unpaired_image']['records'] <= 10
  total_bad = sum(paired_expected.values()) + sum(text_expected.values()) + sum(
      tar_expected.values())
  assert total_bad >= 200

  # The shards read back, and every record is a valid token sequence.
  paired = shards.open_shards(str(out / 'paired'))
  batch = paired.read_batch(np.arange(len(paired)))
  assert batch['image_tokens'].shape == (11, GRID * GRID) and batch['image_tokens'].max() < CODES
  assert (batch['text_ids'] >= 0).all()
  # Nothing was written outside the output folder (no extraction, no escaped path).
  assert snapshot(tmp_path, out) == before
  assert not os.path.exists('/abs_evil.jpg') and not os.path.exists(inputs / 'abs_target.jpg')
  assert sorted(os.listdir(out)) == ['paired', 'prepare_summary.json', 'unpaired_image',
                                     'unpaired_text']
  assert json.load(open(out / 'prepare_summary.json')) == summary

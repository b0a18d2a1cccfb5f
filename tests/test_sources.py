"""Raw data sources on fixtures salted with bad inputs: exact good records, exact skip counts."""
import io
import json
import os
import random
import struct
import tarfile
import zlib

import numpy as np
from PIL import Image
import pytest

from itit.data import records
from itit.data import sources
from itit.data.sources import BadInput
from itit.data import webdataset

SIZE = 16  # output side in these tests: small keeps them fast
MIN = 8  # smallest accepted short side in these tests
RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def encode(image, fmt='PNG', **kwargs):
  buffer = io.BytesIO()
  image.save(buffer, fmt, **kwargs)
  return buffer.getvalue()


def solid(color, size=(24, 24), mode='RGB', fmt='PNG'):
  return encode(Image.new(mode, size, color), fmt)


def striped_2_to_1():
  """40x20: blue | red (the centre square) | green."""
  pixels = np.zeros((20, 40, 3), np.uint8)
  pixels[:, :10] = BLUE
  pixels[:, 10:30] = RED
  pixels[:, 30:] = GREEN
  return encode(Image.fromarray(pixels))


def huge_png(width=100_000, height=100_000):
  """A valid 1x1 PNG whose header claims `width` x `height` (CRC fixed): a decompression bomb."""
  data = bytearray(solid(RED, (1, 1)))
  data[16:24] = struct.pack('>II', width, height)
  data[29:33] = struct.pack('>I', zlib.crc32(bytes(data[12:29])))
  return bytes(data)


def cmyk_red_jpeg():
  return encode(Image.new('CMYK', (24, 24), (0, 255, 255, 0)), 'JPEG', quality=95)


def truncated_jpeg():
  data = encode(Image.new('RGB', (64, 64), RED), 'JPEG')
  return data[:len(data) // 2]


def write(path, data):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data if isinstance(data, bytes) else data.encode('utf-8'))
  return path


def assert_color(image, color, atol=0):
  assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
  np.testing.assert_allclose(image.reshape(-1, 3), np.broadcast_to(color, (SIZE * SIZE, 3)),
                             atol=atol)


# --- load_image / center_crop_resize -------------------------------------------------------------


def load(data, **kwargs):
  return sources.load_image(data, size=SIZE, min_size=MIN, **kwargs)


def test_center_crop_keeps_the_central_square_exactly():
  assert_color(load(striped_2_to_1()), RED)
  tall = np.asarray(Image.open(io.BytesIO(striped_2_to_1()))).transpose(1, 0, 2)
  assert_color(sources.center_crop_resize(Image.fromarray(np.ascontiguousarray(tall)), SIZE), RED)


@pytest.mark.parametrize('data, expected', [
    (solid(100, mode='L'), (100, 100, 100)),
    (solid(1, mode='1'), WHITE),
    (encode(Image.new('RGB', (24, 24), (10, 200, 30)).quantize(4)), (10, 200, 30)),
    (solid((255, 0, 0, 0), mode='RGBA'), WHITE),  # transparent composites onto white
    (solid((255, 0, 0, 255), mode='RGBA'), RED),
    (solid((0, 128), mode='LA'), (128, 128, 128)),
    (solid(65535, mode='I;16'), WHITE),
    (encode(Image.new('RGB', (24, 24), GREEN), 'WEBP', lossless=True), GREEN),
], ids=['L', '1', 'P', 'RGBA_clear', 'RGBA_opaque', 'LA', 'I;16', 'webp'])
def test_modes_convert_to_rgb(data, expected):
  assert_color(load(data), expected, atol=1)


def test_half_transparent_red_on_white():
  assert_color(load(solid((255, 0, 0, 128), mode='RGBA')), (255, 127, 127), atol=1)


def test_cmyk_jpeg_and_path_input(tmp_path):
  assert_color(load(cmyk_red_jpeg()), RED, atol=3)
  assert_color(load(write(tmp_path / 'x.jpg', solid(BLUE, fmt='JPEG'))), BLUE, atol=3)
  assert not load(solid(RED)).flags.writeable


def test_exif_orientation_is_applied():
  pixels = np.zeros((20, 40, 3), np.uint8)
  pixels[:, :20], pixels[:, 20:] = RED, BLUE
  exif = Image.Exif()
  exif[0x0112] = 3  # rotated 180 degrees: the viewer sees blue | red
  image = load(encode(Image.fromarray(pixels), exif=exif))
  np.testing.assert_array_equal(image[:, 0], np.broadcast_to(BLUE, (SIZE, 3)))
  np.testing.assert_array_equal(image[:, -1], np.broadcast_to(RED, (SIZE, 3)))


@pytest.mark.parametrize('data, reason', [
    (b'', 'empty_file'),
    (b'hello, not an image', 'not_image'),
    (truncated_jpeg(), 'corrupt_image'),
    (solid(RED, (4, 40)), 'too_small'),
    (huge_png(), 'too_large'),
    (huge_png(9000, 9000), 'too_large'),  # below PIL's bomb limit, above our pixel cap
    (solid(1.5, mode='F', fmt='TIFF'), 'unsupported_mode'),
    (b'%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n', 'not_image'),  # EPS never opened
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_bytes_raise_bad_input(data, reason):
  with pytest.raises(BadInput) as e:
    load(data)
  assert e.value.reason == reason


def test_missing_and_too_large_files(tmp_path):
  for path, kwargs, reason in [(tmp_path / 'nope.png', {}, 'missing_file'),
                               (tmp_path, {}, 'missing_file'),
                               (write(tmp_path / 'big.png', solid(RED)), {'max_bytes': 10},
                                'too_large')]:
    with pytest.raises(BadInput) as e:
      load(path, **kwargs)
    assert e.value.reason == reason


def test_fuzzed_bytes_return_an_image_or_raise_bad_input():
  rng = random.Random(0)
  noisy = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
  valid = [encode(Image.fromarray(noisy), 'JPEG'), encode(Image.fromarray(noisy)),
           encode(Image.fromarray(noisy), 'WEBP'), encode(Image.fromarray(noisy), 'GIF'),
           encode(Image.fromarray(noisy), 'TIFF'), encode(Image.fromarray(noisy), 'BMP')]
  outcomes = {'ok': 0, 'bad': 0}
  for _ in range(300):
    data = bytearray(rng.choice(valid))
    kind = rng.randrange(5)
    if kind == 0:
      data = data[:rng.randrange(len(data))]
    elif kind in (1, 4):  # bytes flipped anywhere, or in the header (sizes, modes, offsets)
      span = len(data) if kind == 1 else 64
      for _ in range(rng.randrange(1, 20)):
        data[rng.randrange(span)] = rng.randrange(256)
    elif kind == 2:
      data = data[:rng.randrange(8, 64)] + bytes(rng.randrange(256) for _ in range(200))
    else:
      data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
    try:
      image = load(bytes(data))
    except BadInput as e:
      assert e.reason in ('empty_file', 'not_image', 'corrupt_image', 'too_small', 'too_large',
                          'unsupported_mode'), e.reason
      outcomes['bad'] += 1
    else:
      assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
      outcomes['ok'] += 1
  assert outcomes['bad'] > 100 and outcomes['ok'] > 0, outcomes


# --- text ----------------------------------------------------------------------------------------


def test_clean_text():
  assert sources.clean_text(' A  red\tcat\n\x00on a mat \r\n') == 'A red cat on a mat'
  assert sources.clean_text('\ufeffcafé'.encode('utf-8')) == 'café'
  for value, reason in [('  \n', 'empty_text'), (b'\xff\xfe', 'bad_utf8'),
                        ('\ud800', 'bad_utf8'), (7, 'bad_caption'), (None, 'missing_caption'),
                        ('x' * 2001, 'text_too_long')]:
    with pytest.raises(BadInput) as e:
      sources.clean_text(value)
    assert e.value.reason == reason


def test_skip_counter_summary():
  skips = sources.SkipCounter(max_examples=1)
  skips.skip('too_small', 'a.png')
  skips.skip('too_small', 'b.png')
  skips.skip('bad_utf8', 'c.txt:3')
  assert skips.counts == {'too_small': 2, 'bad_utf8': 1} and skips.total == 3
  assert skips.examples['too_small'] == ['a.png']
  assert skips.summary() == 'skipped 3 inputs: bad_utf8 1 (e.g. c.txt:3), too_small 2 (e.g. a.png)'
  assert str(sources.SkipCounter()) == 'skipped 0 inputs'


# --- COCO and Karpathy ---------------------------------------------------------------------------


def test_coco_captions(tmp_path):
  images = tmp_path / 'coco' / 'train2014'
  write(images / 'a.png', striped_2_to_1())
  write(images / 'b.png', solid(100, mode='L'))
  write(images / 'c.jpg', cmyk_red_jpeg())
  write(images / 'trunc.jpg', truncated_jpeg())
  write(images / 'zero.jpg', b'')
  write(images / 'text.jpg', b'not an image')
  write(images / 'tiny.png', solid(RED, (4, 4)))
  write(images / 'huge.png', huge_png())
  write(images / 'nocap.png', solid(RED))
  write(images / 'clear.png', solid((0, 0, 0, 0), mode='RGBA'))
  write(tmp_path / 'coco' / 'outside.png', solid(RED))
  entries = [(1, 'a.png'), (2, 'b.png'), (3, 'c.jpg'), (4, 'trunc.jpg'), (5, 'zero.jpg'),
             (6, 'text.jpg'), (7, 'tiny.png'), (8, 'missing.jpg'), (9, 'nocap.png'),
             (10, 'huge.png'), (11, '../outside.png'), (12, 'clear.png')]
  annotations = {
      'images': [{'id': i, 'file_name': f} for i, f in entries] + [
          {'file_name': 'noid.png'}, {'id': 2, 'file_name': 'again.png'}],
      'annotations': [
          {'image_id': 1, 'id': 10, 'caption': ' A red\tthing.\n'},
          {'image_id': 1, 'id': 11, 'caption': '   '},
          {'image_id': 1, 'id': 12, 'caption': '\ud800'},
          {'image_id': 1, 'id': 13, 'caption': 7},
          {'image_id': 2, 'id': 20, 'caption': 'grey'},
          {'image_id': 3, 'id': 30, 'caption': 'cmyk'},
          {'image_id': 12, 'id': 120, 'caption': 'x' * 3000},
          {'image_id': 12, 'id': 121, 'caption': 'clear'},
          {'image_id': 999, 'id': 9990, 'caption': 'no such image'},
          {'id': 5, 'caption': 'no image id'},
      ] + [{'image_id': i, 'caption': 'bad image'} for i in (4, 5, 6, 7, 8, 10, 11)],
  }
  write(tmp_path / 'captions.json', json.dumps(annotations))
  skips = sources.SkipCounter()
  records = list(sources.coco_captions(tmp_path / 'captions.json', tmp_path / 'coco',
                                       split='train2014', size=SIZE, min_size=MIN, skips=skips))
  assert [(r.key, r.text) for r in records] == [
      ('1/0', 'A red thing.'), ('2/0', 'grey'), ('3/0', 'cmyk'), ('12/1', 'clear')]
  assert_color(records[0].image, RED)
  assert_color(records[1].image, (100, 100, 100))
  assert_color(records[2].image, RED, atol=3)
  assert_color(records[3].image, WHITE)
  assert skips.counts == {
      'bad_annotation': 2, 'duplicate_key': 1, 'empty_text': 1, 'bad_utf8': 1, 'bad_caption': 1,
      'text_too_long': 1, 'missing_image': 1, 'corrupt_image': 1, 'empty_file': 1,
      'not_image': 1, 'too_small': 1, 'missing_file': 1, 'missing_caption': 1, 'too_large': 1,
      'unsafe_path': 1}
  with pytest.raises(sources.SourceError, match='does not exist'):
    list(sources.coco_captions(tmp_path / 'nope.json', tmp_path, skips=skips))
  write(tmp_path / 'broken.json', '{"images": [')
  with pytest.raises(sources.SourceError, match='not readable JSON'):
    list(sources.coco_captions(tmp_path / 'broken.json', tmp_path, skips=skips))


def karpathy_fixture(tmp_path):
  root = tmp_path / 'coco'
  write(root / 'train2014' / 'COCO_1.png', solid(GREEN))
  write(root / 'val2014' / 'COCO_2.png', striped_2_to_1())
  write(root / 'val2014' / 'COCO_3.jpg', truncated_jpeg())
  write(root / 'val2014' / 'COCO_5.png', solid(BLUE))

  def entry(cocoid, folder, split, *raws):
    return {'cocoid': cocoid, 'filepath': folder, 'filename': f'COCO_{cocoid}.png',
            'split': split, 'sentences': [{'raw': r, 'tokens': []} for r in raws]}

  images = [
      entry(5, 'val2014', 'restval', 'a blue square', '', 'blue'),
      entry(1, 'train2014', 'train', 'a green square'),
      entry(2, 'val2014', 'test', 'red in the middle', 'Red.'),
      dict(entry(3, 'val2014', 'test', 'truncated'), filename='COCO_3.jpg'),
      entry(4, 'val2014', 'test', 'file missing'),
      entry(6, 'val2014', 'test'),
      entry(7, '..', 'test', 'escapes the root'),
      {'cocoid': 8, 'split': 'test'},
      entry(2, 'val2014', 'test', 'duplicate'),
      entry(9, 'val2014', 'val', 'another split'),
  ]
  write(tmp_path / 'dataset_coco.json', json.dumps({'images': images, 'dataset': 'coco'}))
  return tmp_path / 'dataset_coco.json', root


def test_karpathy_coco(tmp_path):
  dataset_json, root = karpathy_fixture(tmp_path)
  skips = sources.SkipCounter()
  records = list(sources.karpathy_coco(dataset_json, root, split='test', size=SIZE, min_size=MIN,
                                       skips=skips))
  assert [(r.key, r.text) for r in records] == [('2/0', 'red in the middle'), ('2/1', 'Red.')]
  assert_color(records[0].image, RED)
  assert records[0].image is records[1].image  # decoded once per image
  assert skips.counts == {'corrupt_image': 1, 'missing_file': 1, 'missing_caption': 1,
                          'unsafe_path': 1, 'bad_annotation': 1, 'duplicate_key': 1}
  skips = sources.SkipCounter()
  records = list(sources.karpathy_coco(dataset_json, root, split='train+restval', size=SIZE,
                                       min_size=MIN, skips=skips))
  assert [(r.key, r.text) for r in records] == [
      ('1/0', 'a green square'), ('5/0', 'a blue square'), ('5/2', 'blue')]
  assert_color(records[1].image, BLUE)
  assert skips.counts == {'empty_text': 1}
  with pytest.raises(ValueError, match='Karpathy split'):
    list(sources.karpathy_coco(dataset_json, root, split='training', skips=skips))


def test_karpathy_references(tmp_path):
  dataset_json, _ = karpathy_fixture(tmp_path)
  skips = sources.SkipCounter()
  references = sources.karpathy_references(dataset_json, split='test', skips=skips)
  assert references == {2: ['red in the middle', 'Red.'], 3: ['truncated'], 4: ['file missing']}
  assert skips.counts == {'unsafe_path': 1, 'bad_annotation': 1, 'duplicate_key': 1}


# --- webdataset ----------------------------------------------------------------------------------


def add_member(tar, name, data=b'', kind=tarfile.REGTYPE, linkname=''):
  info = tarfile.TarInfo(name)
  info.type, info.linkname, info.size = kind, linkname, len(data) if kind == tarfile.REGTYPE else 0
  tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def make_tar(path, members):
  path.parent.mkdir(parents=True, exist_ok=True)
  with tarfile.open(path, 'w', format=tarfile.GNU_FORMAT) as tar:
    for member in members:
      add_member(tar, *member)
  return path


def test_webdataset(tmp_path):
  good = make_tar(tmp_path / 'shards' / '00000.tar', [
      ('0001.jpg', solid(RED, fmt='JPEG')), ('0001.txt', b' a red square \n'),
      ('0002.png', striped_2_to_1()), ('0002.json', b'{"caption": "from json", "url": "x"}'),
      ('0002.cls', b'3'),  # other fields are ignored
      ('0003.png', solid(RED)), ('0003.txt', b'   '),
      ('0004.png', solid(RED)), ('0004.txt', b'caf\xe9'),
      ('0005.jpg', truncated_jpeg()), ('0005.txt', b'truncated'),
      ('0006.png', solid(RED)),
      ('0007.txt', b'caption without image'),
      ('0008.png', solid(RED)), ('0008.json', b'{"caption": '),
      ('0009.png', solid(RED)), ('0009.json', b'{"caption": null}'),
      ('../evil.txt', b'x'), ('/abs/evil.txt', b'x'),
      ('link.jpg', b'', tarfile.SYMTYPE, '/etc/passwd'),
      ('hard.jpg', b'', tarfile.LNKTYPE, '0001.jpg'),
      ('dev.jpg', b'', tarfile.CHRTYPE),
      ('0010.png', solid(BLUE)), ('0010.txt', b'blue'), ('0010.jpg', solid(RED, fmt='JPEG')),
      ('0001.txt', b'the same key again, not contiguous'),
      ('sub/0011.webp', encode(Image.new('RGB', (24, 24), GREEN), 'WEBP', lossless=True)),
      ('sub/0011.txt', b'green'),
  ])
  # A valid sample, then a garbage header block: tarfile would stop silently there.
  garbage = make_tar(tmp_path / 'shards' / '00001.tar', [
      ('0001.png', solid(GREEN)), ('0001.txt', b'kept'),
      ('0002.png', solid(GREEN)), ('0002.txt', b'dropped: the damage may have hit it')])
  data = garbage.read_bytes()
  end = data.rindex(b'dropped') + tarfile.BLOCKSIZE - len(b'dropped') % tarfile.BLOCKSIZE
  garbage.write_bytes(data[:end // 512 * 512] + b'\x17' * 1024)
  truncated = make_tar(tmp_path / 'shards' / '00002.tar', [
      ('0001.png', solid(BLUE)), ('0001.txt', b'before the cut'),
      ('0002.png', striped_2_to_1()), ('0002.txt', b'cut')])
  truncated.write_bytes(truncated.read_bytes()[:1024 + 512 + 512 + 512 + 40])
  not_a_tar = write(tmp_path / 'shards' / '00003.tar', b'\x89PNG not a tar at all' * 40)
  skips = sources.SkipCounter()
  paths = [good, garbage, truncated, not_a_tar, tmp_path / 'shards' / 'missing.tar', good]
  records = list(webdataset.webdataset(paths, size=SIZE, min_size=MIN, skips=skips))
  assert [(r.key, r.text) for r in records] == [
      ('00000.tar/0001', 'a red square'), ('00000.tar/0002', 'from json'),
      ('00000.tar/0010', 'blue'), ('00000.tar/sub/0011', 'green'),
      ('00001.tar/0001', 'kept'), ('00002.tar/0001', 'before the cut')]
  assert_color(records[0].image, RED, atol=3)
  assert_color(records[1].image, RED)
  assert_color(records[2].image, RED, atol=3)  # .jpg comes before .png
  assert_color(records[3].image, GREEN)
  assert_color(records[5].image, BLUE)
  assert skips.counts == {
      'empty_text': 1, 'bad_utf8': 1, 'corrupt_image': 1, 'missing_caption': 2,
      'missing_image': 1, 'bad_json': 1, 'unsafe_tar_member': 5, 'duplicate_key': 2,
      'broken_tar': 3, 'missing_file': 1}
  images_only = list(webdataset.webdataset([good], size=SIZE, min_size=MIN, with_text=False,
                                        skips=sources.SkipCounter()))
  assert [r.key for r in images_only] == [f'00000.tar/{k}' for k in (
      '0001', '0002', '0003', '0004', '0006', '0008', '0009', '0010', 'sub/0011')]
  assert all(r.text is None for r in images_only)


def test_hostile_tar_writes_nothing(tmp_path, monkeypatch):
  work = tmp_path / 'inner' / 'work'
  work.mkdir(parents=True)
  monkeypatch.chdir(work)
  tar = make_tar(tmp_path / 'inner' / 'evil.tar', [
      ('../evil.jpg', solid(RED)), ('../evil.txt', b'x'), ('/abs/evil.jpg', solid(RED)),
      ('/abs/evil.txt', b'x'), ('../../escape.png', solid(RED)),
      ('evil_link.jpg', b'', tarfile.SYMTYPE, str(tmp_path / 'target.jpg')),
      ('ok.png', solid(RED)), ('ok.txt', b'fine')])

  def snapshot():
    return sorted((str(p), p.stat().st_mtime_ns) for p in tmp_path.rglob('*'))

  before = snapshot()
  skips = sources.SkipCounter()
  records = list(webdataset.webdataset([tar], size=SIZE, min_size=MIN, skips=skips))
  assert [r.key for r in records] == ['evil.tar/ok']
  assert skips.counts == {'unsafe_tar_member': 6}
  assert snapshot() == before
  assert not os.path.exists('/abs/evil.jpg') and not os.path.exists('/abs/evil.txt')


# --- image folders and text files ----------------------------------------------------------------


def image_folder_fixture(tmp_path):
  folder = tmp_path / 'images'
  write(folder / 'a.png', striped_2_to_1())
  write(folder / 'sub' / 'b.jpg', solid(GREEN, fmt='JPEG'))
  write(folder / 'C.PNG', solid((0, 0, 255, 0), mode='RGBA'))
  write(folder / 'd.jpg', truncated_jpeg())
  write(folder / 'notes.txt', 'not an image, not listed')
  write(folder / 'f.png', solid(RED, (40, 4)))
  write(folder / 'g.png', b'')
  write(folder / 'nocap.png', solid(RED))
  write(tmp_path / 'x.png', solid(RED))
  return folder


CAPTIONED = [('C.PNG/0', 'clear'), ('a.png/0', 'red'), ('a.png/1', 'Red, again.'),
             ('sub/b.jpg/0', 'green')]
CAPTION_SKIPS = {'corrupt_image': 1, 'too_small': 1, 'empty_file': 1, 'missing_caption': 1,
                 'missing_file': 1, 'unsafe_path': 2, 'bad_line': 2, 'bad_utf8': 1,
                 'empty_text': 1}


def check_captioned(records, skips):
  assert [(r.key, r.text) for r in records] == CAPTIONED
  assert_color(records[0].image, WHITE)
  assert_color(records[1].image, RED)
  assert_color(records[3].image, GREEN, atol=3)
  assert skips.counts == CAPTION_SKIPS


def test_image_folder_with_jsonl_captions(tmp_path):
  folder = image_folder_fixture(tmp_path)
  lines = [json.dumps(entry) for entry in [
      {'file': 'a.png', 'text': 'red'}, {'file': 'sub/b.jpg', 'caption': 'green'},
      {'file': './a.png', 'text': ' Red,  again. '}, {'file': 'C.PNG', 'text': 'clear'},
      {'file': 'd.jpg', 'text': 'truncated'}, {'file': 'f.png', 'text': 'tiny'},
      {'file': 'g.png', 'text': 'empty file'}, {'file': 'missing.png', 'text': 'gone'},
      {'file': '../x.png', 'text': 'outside'}, {'file': '/etc/passwd', 'text': 'absolute'},
      {'text': 'no file'}, {'file': 'sub/b.jpg', 'text': ''}]] + ['[1, 2]', '']
  write(tmp_path / 'captions.jsonl', '\n'.join(lines).encode() + b'\n{"file": "\xff"}\n')
  skips = sources.SkipCounter()
  records = list(sources.image_folder(folder, captions=tmp_path / 'captions.jsonl', size=SIZE,
                                      min_size=MIN, skips=skips))
  check_captioned(records, skips)


def test_image_folder_with_tsv_captions(tmp_path):
  folder = image_folder_fixture(tmp_path)
  text = ('a.png\tred\nsub/b.jpg\tgreen\n./a.png\t Red,  again. \r\nC.PNG\tclear\n'
          'd.jpg\ttruncated\nf.png\ttiny\ng.png\tempty file\nmissing.png\tgone\n'
          '../x.png\toutside\n/etc/passwd\tabsolute\nno tab here\nsub/b.jpg\t\n'
          'also no tab\n\n')
  write(tmp_path / 'captions.tsv', text.encode() + b'a.png\t\xff\n')
  skips = sources.SkipCounter()
  records = list(sources.image_folder(folder, captions=tmp_path / 'captions.tsv', size=SIZE,
                                      min_size=MIN, skips=skips))
  check_captioned(records, skips)


def test_image_folder_without_captions(tmp_path):
  folder = image_folder_fixture(tmp_path)
  skips = sources.SkipCounter()
  records = list(sources.image_folder(folder, size=SIZE, min_size=MIN, skips=skips))
  assert [(r.key, r.text) for r in records] == [
      ('C.PNG', None), ('a.png', None), ('nocap.png', None), ('sub/b.jpg', None)]
  assert skips.counts == {'corrupt_image': 1, 'too_small': 1, 'empty_file': 1}
  with pytest.raises(sources.SourceError, match='not a directory'):
    list(sources.image_folder(tmp_path / 'nope', skips=skips))


def test_image_folder_captions_take_the_image_key_that_itit_sample_writes(tmp_path):
  folder = tmp_path / 'images'
  for name, color in (('a.png', RED), ('b.png', GREEN), ('sub/c.png', BLUE)):
    write(folder / name, solid(color))
  lines = [{'image': 'a.png', 'caption': 'red'}, {'file': 'b.png', 'text': 'green'},
           {'image': 'sub/c.png', 'text': 'blue'}, {'path': 'a.png', 'caption': 'wrong key'}]
  write(folder / 'captions.jsonl', ''.join(json.dumps(line) + '\n' for line in lines))
  skips = sources.SkipCounter()
  records = list(sources.image_folder(folder, captions=folder / 'captions.jsonl', size=SIZE,
                                      min_size=MIN, skips=skips))
  assert [(r.key, r.text) for r in records] == [
      ('a.png/0', 'red'), ('b.png/0', 'green'), ('sub/c.png/0', 'blue')]
  assert skips.counts == {'bad_line': 1}
  # A file of wrong keys says, in its skip summary alone, which keys a line needs.
  assert 'captions.jsonl:4 (needs {"file" or "image": relative path' in skips.summary()


def test_image_folder_heldout_parts_are_disjoint_and_chosen_by_file_name(tmp_path):
  folder = tmp_path / 'images'
  names = [f'{i:02d}.png' for i in range(40)]
  for name in names:
    write(folder / name, solid(RED))

  def part(name, fraction=0.25):
    return [r.key for r in sources.image_folder(folder, size=SIZE, min_size=MIN, part=name,
                                                heldout_fraction=fraction,
                                                skips=sources.SkipCounter())]

  train, heldout = part('train'), part('heldout')
  assert sorted(train + heldout) == names and not set(train) & set(heldout)
  assert heldout == [n for n in names if records.is_heldout(n, 0.25)] and 4 <= len(heldout) <= 16
  write(folder / 'new.png', solid(RED))  # a new file moves no other file between the parts
  assert [n for n in part('heldout') if n != 'new.png'] == heldout
  with pytest.raises(ValueError, match='heldout_fraction'):
    part('heldout', fraction=0.0)


def test_text_files_read_the_caption_column_of_a_tsv(tmp_path):
  tsv = write(tmp_path / 'captions.tsv', 'a.png\ta red square\nno tab\n\nsub/b.png\tgreen\n')
  skips = sources.SkipCounter()
  assert [r.text for r in sources.text_files([tsv], skips=skips)] == ['a red square', 'green']
  assert skips.counts == {'bad_line': 1, 'empty_text': 1}


def test_text_files(tmp_path):
  plain = write(tmp_path / 'a' / 'corpus.txt',
                b'hello  world\n\n   \ncaf\xe9\n' + b'x' * 3000 + b'\nok\r\nlast line')
  jsonl = write(tmp_path / 'b' / 'corpus.jsonl', b'\n'.join([
      b'{"text": "first"}', b'{"caption": "second"}', b'{"other": 1}', b'not json', b'[1]',
      b'{"text": 5}', b'{"text": "\\ud800"}', b'{"text": "\xff"}',
      b'{"text": "' + b'y' * (3 * 2**20) + b'"}', b'', b'{"text": "after the huge line"}']))
  skips = sources.SkipCounter()
  records = list(sources.text_files([plain, tmp_path / 'missing.txt', jsonl], skips=skips))
  assert [(r.key, r.text, r.image) for r in records] == [
      ('corpus.txt:1', 'hello world', None), ('corpus.txt:6', 'ok', None),
      ('corpus.txt:7', 'last line', None), ('corpus.jsonl:1', 'first', None),
      ('corpus.jsonl:2', 'second', None), ('corpus.jsonl:11', 'after the huge line', None)]
  assert skips.counts == {'empty_text': 3, 'bad_utf8': 3, 'text_too_long': 2,
                          'missing_file': 1, 'missing_caption': 1, 'bad_json': 2,
                          'bad_caption': 1}
  # Same file names in two folders: keys name the paths below the common folder.
  other = write(tmp_path / 'b' / 'corpus.txt', 'from b\n')
  records = list(sources.text_files([plain, other], min_chars=3, skips=sources.SkipCounter()))
  assert [(r.key, r.text) for r in records] == [
      ('a/corpus.txt:1', 'hello world'), ('a/corpus.txt:7', 'last line'),
      ('b/corpus.txt:1', 'from b')]

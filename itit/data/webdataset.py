"""Webdataset tar shards in img2dataset's layout (CC3M, CC12M, LAION), read in memory.

Never extracts to disk: members are read into memory, and unsafe members (absolute names, '..',
links, devices) are skipped and counted, so a hostile tar cannot write anywhere. A damaged tar
yields what precedes the damage and counts 'broken_tar'; reading goes on with the next tar.
"""
import json
import os
import posixpath
import tarfile

from itit.data import images as images_lib
from itit.data.images import BadInput
from itit.data.records import DEFAULT_MAX_CHARS
from itit.data.records import Loader
from itit.data.records import Record
from itit.data.records import safe_relpath
from itit.data.records import unique_sources

# Members above this are not read into memory at all (an image larger than this is 'too_large').
MAX_MEMBER_BYTES = images_lib.DEFAULT_MAX_BYTES
_WDS_IMAGE_EXTENSIONS = ('jpg', 'jpeg', 'png', 'webp')
_WDS_TEXT_EXTENSIONS = ('txt', 'json')


def _split_member_name(name):
  """webdataset convention: 'dir/000123.seg.png' -> key 'dir/000123', extension 'seg.png'."""
  folder, base = posixpath.split(name)
  stem, _, extension = base.partition('.')
  return posixpath.join(folder, stem), extension.lower()


def _tar_ended_cleanly(tar):
  """True when iteration stopped at the end-of-archive block (or at the end of the file).

  tarfile stops SILENTLY at an invalid or truncated header after the first member, so a damaged
  tail would otherwise look like a short, healthy shard.
  """
  tar.fileobj.seek(tar.offset)
  block = tar.fileobj.read(tarfile.BLOCKSIZE)
  return not block.strip(b'\x00')


def _wds_record(name, key, members, load, with_text):
  """The Record of one webdataset sample (members: extension -> bytes); raises BadInput."""
  if with_text:
    if 'txt' in members:
      text = load.text(members['txt'])
    elif 'json' in members:
      try:
        meta = json.loads(members['json'].decode('utf-8'))
      except UnicodeDecodeError:
        raise BadInput('bad_utf8', 'json member') from None
      except ValueError:
        raise BadInput('bad_json') from None
      text = load.text(meta.get('caption') if isinstance(meta, dict) else None)
    else:
      raise BadInput('missing_caption')
  else:
    text = None
  extension = next((e for e in _WDS_IMAGE_EXTENSIONS if e in members), None)
  if extension is None:
    raise BadInput('missing_image')
  return Record(f'{name}/{key}', load.image(members[extension]), text)


def _tar_records(path, name, load, with_text, skips):
  """Records of one tar; a damaged tar yields what precedes the damage and counts 'broken_tar'."""
  if not os.path.isfile(path):
    skips.skip('missing_file', path)
    return
  try:
    tar = tarfile.open(path, 'r:*')
  except Exception as e:  # pylint: disable=broad-except
    skips.skip('broken_tar', f'{path} ({type(e).__name__})')
    return
  with tar:
    key, members, done = None, {}, set()
    try:
      for member in tar:
        where = f'{path}:{member.name}'
        if member.isdir():
          continue
        relname = safe_relpath(member.name)
        if not member.isreg() or relname is None:
          skips.skip('unsafe_tar_member', where)
          continue
        try:
          relname.encode('utf-8')
        except UnicodeEncodeError:
          skips.skip('bad_utf8', where)
          continue
        member_key, extension = _split_member_name(relname)
        if extension not in _WDS_IMAGE_EXTENSIONS + _WDS_TEXT_EXTENSIONS:
          continue  # other fields a shard may carry (.cls, .npy, ...) are not ours to judge
        if member_key != key:
          if key is not None and key not in done:
            yield from _finish_sample(path, name, key, members, load, with_text, skips)
            done.add(key)
          key, members = member_key, {}
          if key in done:
            skips.skip('duplicate_key', where)
        if key in done:
          continue
        if member.size > MAX_MEMBER_BYTES:
          members[extension] = None
        elif extension in members:
          skips.skip('duplicate_key', where)
        else:
          members[extension] = tar.extractfile(member).read()
      if not _tar_ended_cleanly(tar):
        raise tarfile.ReadError(f'invalid header at byte {tar.offset}')
    except Exception as e:  # pylint: disable=broad-except
      # The sample being read when the damage hit is dropped: its caption may be what was lost.
      skips.skip('broken_tar', f'{path} ({type(e).__name__}: {e})')
      return
    if key is not None and key not in done:
      yield from _finish_sample(path, name, key, members, load, with_text, skips)


def _finish_sample(path, name, key, members, load, with_text, skips):
  where = f'{path}:{key}'
  if None in members.values():
    skips.skip('too_large', where)
    return
  try:
    yield _wds_record(name, key, members, load, with_text)
  except BadInput as e:
    skips.skip(e.reason, where)


def webdataset(tar_paths, *, skips, size=256, with_text=True,
               min_size=images_lib.DEFAULT_MIN_SIZE, max_chars=DEFAULT_MAX_CHARS):
  """Webdataset tar shards in img2dataset's layout (CC3M, CC12M, LAION), read in memory.

  A sample is the run of consecutive members sharing a key: 'key.jpg|jpeg|png|webp' plus
  'key.txt' (caption) and/or 'key.json' ({'caption': ...}; used when there is no .txt).

  Args:
    tar_paths: the shards, read in the given order (plain, .gz, .bz2 or .xz tars).
    skips: SkipCounter.
    size, min_size, max_chars: as in `coco_captions`.
    with_text: False reads images only (text None), e.g. for the unpaired image stream.

  Yields:
    Records keyed '<shard name>/<member key>', in tar order.
  """
  load = Loader(size, min_size, max_chars)
  for path, name in unique_sources(tar_paths, skips):
    yield from _tar_records(path, name, load, with_text, skips)

"""Raw data sources: iterators of `Record`s that `prepare` turns into token shards.

Every source yields `Record(key, image, text)` in a deterministic order, reads only (no file is
ever written, tar members are read in memory) and SKIPS bad inputs, counting them by reason in a
`SkipCounter`; a run never stops on one bad image or caption. Only a source that cannot be read at
all (a missing or unparseable annotations file, a missing image folder) raises `SourceError` with
one line that names the file and the fix.

Skip reasons (short, stable strings):
  image:   empty_file, missing_file, unreadable_file, not_image, corrupt_image, too_small,
           too_large, unsupported_mode (see itit/data/images.py for the mode rules)
  text:    empty_text, bad_utf8, text_too_long, text_too_short, bad_caption (not a string),
           missing_caption (an image without a caption in a captioned source)
  indexes: bad_annotation, bad_json, bad_line, missing_image (a caption whose image is absent
           from the index), unsafe_path, duplicate_key (also a shard or text file given twice)
  tars:    (itit/data/webdataset.py) unsafe_tar_member (absolute, '..', symlink, hardlink,
           device, fifo), broken_tar (the rest of that tar is skipped, the next tar is read)

Text rules: control characters become spaces, runs of whitespace collapse to one space, the ends
are stripped. Texts longer than `max_chars` are SKIPPED, not truncated: a caption that long is
scraped page text, and the tokenizer truncates sensible ones to the model's length anyway.
An image that fails is counted once, however many captions it had.

`Record`, `SkipCounter`, `SourceError` and `clean_text` live in itit/data/records.py (shared with
itit/data/webdataset.py) and are re-exported here. `itit.data.source_registry` maps the `source`
names of a prepare config to these readers.
"""
import collections
import json
import os
import posixpath

from itit.data import images as images_lib
from itit.data.images import BadInput
from itit.data.images import center_crop_resize
from itit.data.images import load_image
from itit.data.records import clean_text
from itit.data.records import DEFAULT_MAX_CHARS
from itit.data.records import is_heldout
from itit.data.records import Loader
from itit.data.records import Record
from itit.data.records import safe_relpath
from itit.data.records import SkipCounter
from itit.data.records import SourceError
from itit.data.records import unique_sources

__all__ = [
    'BadInput', 'DEFAULT_MAX_CHARS', 'Record', 'SkipCounter', 'SourceError', 'center_crop_resize',
    'clean_text', 'coco_captions', 'image_folder', 'karpathy_coco', 'karpathy_references',
    'load_image', 'text_files',
]

KARPATHY_SPLITS = ('train', 'val', 'test', 'restval')


def _load_json_index(path, what, fix):
  try:
    with open(path, 'rb') as f:
      data = json.load(f)
  except FileNotFoundError:
    raise SourceError(f'{what} {path} does not exist: {fix}') from None
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise SourceError(f'{what} {path} is not readable JSON ({e}): {fix}') from None
  if not isinstance(data, dict) or not isinstance(data.get('images'), list):
    raise SourceError(f'{what} {path} has no "images" list: {fix}')
  return data


def _require_dir(folder, what):
  if not os.path.isdir(folder):
    raise SourceError(f'{what} {folder} is not a directory: pass the folder holding the images')


def _captioned_records(key_prefix, path, captions, load, skips):
  """Records for one image and its `(index, raw caption)` pairs; the image is decoded once."""
  texts = []
  for index, raw in captions:
    try:
      texts.append((index, load.text(raw)))
    except BadInput as e:
      skips.skip(e.reason, f'{path} caption {index}')
  if not texts:
    return
  try:
    image = load.image(path)
  except BadInput as e:
    skips.skip(e.reason, path)
    return
  for index, text in texts:
    yield Record(f'{key_prefix}/{index}', image, text)


def coco_captions(annotations_json, image_dir, *, skips, size=256, split=None,
                  min_size=images_lib.DEFAULT_MIN_SIZE, max_chars=DEFAULT_MAX_CHARS):
  """COCO `captions_*.json` plus its image folder: one Record per (image, caption).

  Args:
    annotations_json: path of e.g. `captions_train2014.json` ('images': [{'id', 'file_name'}],
      'annotations': [{'image_id', 'caption'}]).
    image_dir: the folder holding the images, or the COCO root when `split` is given.
    skips: SkipCounter that counts what is skipped.
    size: output image side.
    split: optional subfolder of `image_dir` holding the images (e.g. 'train2014').
    min_size: smallest accepted short image side.
    max_chars: longest accepted caption.

  Yields:
    Records keyed '<image id>/<caption index>' (caption index in annotation-file order), by
    increasing image id.
  """
  fix = 'pass the captions_*.json from the COCO annotations archive'
  data = _load_json_index(annotations_json, 'COCO annotations', fix)
  if not isinstance(data.get('annotations'), list):
    raise SourceError(f'COCO annotations {annotations_json} has no "annotations" list: {fix}')
  folder = os.path.join(image_dir, split) if split else os.fspath(image_dir)
  _require_dir(folder, 'COCO image folder')
  files, rejected = {}, set()  # captions of a rejected image entry are not counted again
  for i, entry in enumerate(data['images']):
    image_id = entry.get('id') if isinstance(entry, dict) else None
    file_name = safe_relpath(entry.get('file_name')) if isinstance(entry, dict) else None
    if not isinstance(image_id, int) or isinstance(image_id, bool):
      skips.skip('bad_annotation', f'{annotations_json} images[{i}]')
    elif file_name is None:
      skips.skip('unsafe_path' if isinstance(entry.get('file_name'), str) else 'bad_annotation',
                 f'{annotations_json} images[{i}]')
      rejected.add(image_id)
    elif image_id in files:
      skips.skip('duplicate_key', f'{annotations_json} images[{i}] id {image_id}')
    else:
      files[image_id] = file_name
  captions = collections.defaultdict(list)
  for i, annotation in enumerate(data['annotations']):
    image_id = annotation.get('image_id') if isinstance(annotation, dict) else None
    if not isinstance(image_id, int) or isinstance(image_id, bool):
      skips.skip('bad_annotation', f'{annotations_json} annotations[{i}]')
    elif image_id in rejected:
      continue
    elif image_id not in files:
      skips.skip('missing_image', f'{annotations_json} annotations[{i}] image_id {image_id}')
    else:
      captions[image_id].append(annotation.get('caption'))
  load = Loader(size, min_size, max_chars)
  for image_id in sorted(files):
    path = os.path.join(folder, files[image_id])
    if image_id not in captions:
      skips.skip('missing_caption', path)
      continue
    yield from _captioned_records(
        str(image_id), path, enumerate(captions[image_id]), load, skips)


def _karpathy_entries(dataset_coco_json, split, skips):
  """(cocoid, relative image path, sentences) of one split, by increasing cocoid."""
  wanted = split.split('+')
  if not split or any(name not in KARPATHY_SPLITS for name in wanted):
    raise ValueError(f'Karpathy split {split!r} is not one of {KARPATHY_SPLITS} (join several '
                     "with '+', e.g. 'train+restval')")
  fix = "pass Karpathy's dataset_coco.json (from caption_datasets.zip)"
  data = _load_json_index(dataset_coco_json, 'Karpathy split file', fix)
  entries = {}
  for i, entry in enumerate(data['images']):
    where = f'{dataset_coco_json} images[{i}]'
    if not isinstance(entry, dict):
      skips.skip('bad_annotation', where)
      continue
    if entry.get('split') not in wanted:
      continue
    cocoid = entry.get('cocoid', entry.get('imgid'))
    relpath = safe_relpath(posixpath.join(entry.get('filepath') or '', entry.get('filename'))
                            if isinstance(entry.get('filename'), str) else None)
    sentences = entry.get('sentences')
    if not isinstance(cocoid, int) or not isinstance(sentences, list):
      skips.skip('bad_annotation', where)
    elif relpath is None:
      skips.skip('unsafe_path' if isinstance(entry.get('filename'), str) else 'bad_annotation',
                 where)
    elif cocoid in entries:
      skips.skip('duplicate_key', f'{where} cocoid {cocoid}')
    else:
      raws = [s.get('raw') if isinstance(s, dict) else None for s in sentences]
      entries[cocoid] = (relpath, raws)
  return [(cocoid, *entries[cocoid]) for cocoid in sorted(entries)]


def karpathy_coco(dataset_coco_json, image_root, *, split, skips, size=256,
                  min_size=images_lib.DEFAULT_MIN_SIZE, max_chars=DEFAULT_MAX_CHARS):
  """Karpathy's `dataset_coco.json` split of COCO: one Record per (image, sentence).

  Args:
    dataset_coco_json: path of dataset_coco.json.
    image_root: the COCO root holding the 'filepath' folders (train2014/, val2014/).
    split: 'train', 'val', 'test' or 'restval', or several joined by '+' ('train+restval' is the
      usual Karpathy training set).
    skips: SkipCounter.
    size, min_size, max_chars: as in `coco_captions`.

  Yields:
    Records keyed '<cocoid>/<sentence index>', by increasing cocoid.
  """
  _require_dir(image_root, 'COCO image root')
  load = Loader(size, min_size, max_chars)
  for cocoid, relpath, raws in _karpathy_entries(dataset_coco_json, split, skips):
    path = os.path.join(image_root, relpath)
    if not raws:
      skips.skip('missing_caption', path)
      continue
    yield from _captioned_records(str(cocoid), path, enumerate(raws), load, skips)


def karpathy_references(dataset_coco_json, *, split, skips=None, max_chars=DEFAULT_MAX_CHARS):
  """Reference captions for evaluation (CIDEr): {cocoid: [cleaned sentence, ...]}, cocoid order."""
  skips = skips if skips is not None else SkipCounter()
  references = {}
  for cocoid, _, raws in _karpathy_entries(dataset_coco_json, split, skips):
    texts = []
    for index, raw in enumerate(raws):
      try:
        texts.append(clean_text(raw, max_chars=max_chars))
      except BadInput as e:
        skips.skip(e.reason, f'{dataset_coco_json} cocoid {cocoid} sentence {index}')
    if texts:
      references[cocoid] = texts
  return references


def _list_images(folder, skips):
  """Relative POSIX paths of the images below `folder`, sorted. Folder links are not followed;
  a file link leading outside `folder` is skipped as 'unsafe_path' (nothing outside is read)."""
  root, found = os.path.realpath(folder), []
  for directory, subdirectories, files in os.walk(folder):
    subdirectories.sort()
    for file_name in files:
      path = os.path.join(directory, file_name)
      if not file_name.lower().endswith(images_lib.IMAGE_EXTENSIONS):
        continue
      if os.path.islink(path) and os.path.commonpath([root, os.path.realpath(path)]) != root:
        skips.skip('unsafe_path', path)
      else:
        found.append(os.path.relpath(path, folder).replace(os.sep, '/'))
  return sorted(found)


def _parse_caption_line(line, jsonl):
  """(relative path, raw caption) of one captions-file line; raises BadInput."""
  if jsonl:
    try:
      entry = json.loads(line)
    except ValueError:
      raise BadInput('bad_json') from None
    file_name = entry.get('file', entry.get('image')) if isinstance(entry, dict) else None
    if not isinstance(file_name, str):
      raise BadInput('bad_line', 'needs {"file" or "image": relative path, '
                                 '"text" or "caption": caption}')
    caption = entry.get('text', entry.get('caption'))
  else:
    if '\t' not in line:
      raise BadInput('bad_line', 'needs relative path<TAB>caption')
    file_name, caption = line.split('\t', 1)
  relpath = safe_relpath(file_name.strip())
  if relpath is None:
    raise BadInput('unsafe_path', file_name)
  return relpath, caption


def _read_captions(captions, skips):
  """relative path -> [raw caption, ...] in file order, from a JSONL or TSV captions file."""
  jsonl = os.fspath(captions).lower().endswith(('.jsonl', '.json', '.ndjson'))
  by_file = collections.defaultdict(list)
  try:
    with open(captions, 'rb') as f:
      for line_number, raw in enumerate(_lines(f), start=1):
        where = f'{captions}:{line_number}'
        if raw is None:
          skips.skip('text_too_long', where)
          continue
        try:
          line = raw.decode('utf-8').rstrip('\r\n')
          if not line.strip():
            continue  # blank lines caption nothing
          relpath, caption = _parse_caption_line(line, jsonl)
        except UnicodeDecodeError:
          skips.skip('bad_utf8', where)
          continue
        except BadInput as e:
          skips.skip(e.reason, f'{where} ({e.detail})' if e.detail else where)  # what it needs
          continue
        by_file[relpath].append(caption)
  except OSError as e:
    raise SourceError(f'captions file {captions} is not readable ({e}): pass a JSONL '
                      '({"file" or "image": ..., "text" or "caption": ...}) or TSV '
                      '(path<TAB>caption) file') from None
  return by_file


def image_folder(folder, *, skips, captions=None, size=256,
                 min_size=images_lib.DEFAULT_MIN_SIZE, max_chars=DEFAULT_MAX_CHARS,
                 heldout_fraction=0.0, part='all'):
  """Images found recursively below `folder`, optionally captioned.

  Args:
    folder: the image folder (.jpg .jpeg .png .webp .gif .bmp .tif .tiff, any case).
    skips: SkipCounter.
    captions: optional JSONL ({"file" or "image": relative path, "text" or "caption": ...}; by
      extension .jsonl/.json/.ndjson) or TSV (relative path<TAB>caption) file; several lines
      may caption the same image.
    size, min_size, max_chars: as in `coco_captions`.
    heldout_fraction, part: which images to read: part 'all' every one; 'train' those outside,
      'heldout' those inside the held-out split of `heldout_fraction` (`records.is_heldout`:
      decided by each file's relative path, so the two parts never share an image).

  Yields:
    Without captions: Records keyed by relative path, text None. With captions: one Record per
    (image, caption) keyed '<relative path>/<caption index>'; images without a caption count as
    'missing_caption', captions of absent images as 'missing_file'. Sorted by relative path.
  """
  _require_dir(folder, 'image folder')
  if part not in ('all', 'train', 'heldout') or (part != 'all' and not 0 < heldout_fraction < 1):
    raise SourceError(f"image_folder {folder}: part {part!r} needs heldout_fraction in (0, 1), "
                      f"got {heldout_fraction} (part 'all' reads every image)")
  load = Loader(size, min_size, max_chars)
  wanted = lambda relpath: part == 'all' or is_heldout(relpath, heldout_fraction) == (
      part == 'heldout')
  relpaths = [relpath for relpath in _list_images(folder, skips) if wanted(relpath)]
  if captions is None:
    for relpath in relpaths:
      try:
        yield Record(relpath, load.image(os.path.join(folder, relpath)), None)
      except BadInput as e:
        skips.skip(e.reason, os.path.join(folder, relpath))
    return
  by_file = _read_captions(captions, skips)
  by_file = {relpath: texts for relpath, texts in by_file.items() if wanted(relpath)}
  for relpath in relpaths:
    path = os.path.join(folder, relpath)
    if relpath not in by_file:
      skips.skip('missing_caption', path)
      continue
    yield from _captioned_records(relpath, path, enumerate(by_file.pop(relpath)), load, skips)
  for relpath in sorted(by_file):
    skips.skip('missing_file', os.path.join(folder, relpath))


def _lines(f, max_bytes=2**20):
  """The lines of a binary file, each at most `max_bytes` long; a longer line yields None."""
  while True:
    line = f.readline(max_bytes + 1)
    if not line:
      return
    if len(line) > max_bytes:
      while line and not line.endswith(b'\n'):
        line = f.readline(max_bytes)
      yield None
    else:
      yield line


def text_files(paths, *, skips, min_chars=1, max_chars=DEFAULT_MAX_CHARS):
  """Texts from plain-text files (one per line), JSONL files ({"text"} or {"caption"} per line)
  or TSV captions files (path<TAB>caption per line: the caption).

  Args:
    paths: the files, read in the given order; .jsonl/.json/.ndjson are JSONL, .tsv TSV, others
      plain text. A captions file of an image folder is thus also a text corpus.
    skips: SkipCounter; blank lines count as 'empty_text'.
    min_chars: shortest accepted text.
    max_chars: longest accepted text.

  Yields:
    Records keyed '<file name>:<line number>' (1-based), image None.
  """
  for path, name in unique_sources(paths, skips):
    if not os.path.isfile(path):
      skips.skip('missing_file', path)
      continue
    jsonl = path.lower().endswith(('.jsonl', '.json', '.ndjson'))
    tsv = path.lower().endswith('.tsv')
    try:
      with open(path, 'rb') as f:
        for line_number, raw in enumerate(_lines(f, max(2**20, 8 * max_chars)), start=1):
          where = f'{path}:{line_number}'
          try:
            if raw is None:
              raise BadInput('text_too_long')
            value = _json_text(raw) if jsonl and raw.strip() else raw
            if tsv and raw.strip():
              if b'\t' not in raw:
                raise BadInput('bad_line', 'needs relative path<TAB>caption')
              value = raw.split(b'\t', 1)[1]
            text = clean_text(value, min_chars=min_chars, max_chars=max_chars)
          except BadInput as e:
            skips.skip(e.reason, where)
            continue
          yield Record(f'{name}:{line_number}', None, text)
    except OSError as e:
      skips.skip('unreadable_file', f'{path} ({e})')


def _json_text(raw):
  try:
    entry = json.loads(raw.decode('utf-8'))
  except UnicodeDecodeError:
    raise BadInput('bad_utf8') from None
  except ValueError:
    raise BadInput('bad_json') from None
  if not isinstance(entry, dict):
    raise BadInput('bad_json', 'a line is not an object')
  text = entry.get('text', entry.get('caption'))
  if text is None:
    raise BadInput('missing_caption', 'no "text" or "caption" field')
  return text

"""Token shards: fixed-layout ArrayRecord records plus a manifest that readers validate.

A shard folder holds `shard-00000.array_record`, `shard-00001.array_record`, ... and
`manifest.json`. Every record has the same layout: the manifest's fields (`image_tokens`
uint16 [h*w], `text_ids` int32 [max_text_len], or both) as raw little-endian bytes concatenated
in the manifest's order, so a batch of records decodes with one `np.frombuffer` (no pickle).

The manifest records the field layout, record counts (per shard and total), each shard's size
in bytes (itit/data/shard_files.py tells a truncated file from a damaged one), the identities of
the tokenizers that made the tokens (their sha256), the config that made them and whether the
write completed. Tokens from a different VQGAN or SentencePiece model are meaningless to a
model trained on others, so readers check identities before training starts.

Writing is resumable: each shard is written under a temporary name and renamed when complete,
and the manifest lists completed shards. A re-run with the same arguments skips the examples of
the completed shards (the example stream must be deterministic; the first and last key of each
shard are checked) and continues; a re-run with other identities or config is refused.
"""
from __future__ import annotations

import datetime
import json
import os
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from array_record.python.array_record_module import ArrayRecordWriter
import flax.traverse_util
import numpy as np
import tqdm

from itit.data import shard_files
from itit.data.text_tokenizer import TextTokenizer
from itit import errors

if TYPE_CHECKING:
  from itit.data.sources import Record

FORMAT_VERSION = 1
MANIFEST_NAME = 'manifest.json'
# group_size:1 makes every record its own chunk, which random access needs (grain warns
# otherwise). Uncompressed: snappy / zstd saved ~15% (text padding; tokens barely compress) and
# slowed random reads.
_WRITER_OPTIONS = 'group_size:1,uncompressed'
_IMAGE_TOKEN_DTYPE = np.dtype('<u2')


def shard_file_name(index: int) -> str:
  return f'shard-{index:05d}.array_record'


def record_dtype(fields: Sequence[dict]) -> np.dtype:
  """The packed numpy structured dtype of one record, from the manifest's `fields`."""
  return np.dtype([(f['name'], np.dtype(f['dtype']).newbyteorder('<'), tuple(f['shape']))
                   for f in fields])


def read_manifest(shard_dir: str | os.PathLike) -> dict:
  path = os.path.join(shard_dir, MANIFEST_NAME)
  if not os.path.exists(path):
    raise errors.MissingFileError(
        f'{path} not found: {shard_dir} is not a token shard folder (make one with '
        'itit.data.shards.write_shards / python -m itit.prepare)')
  try:
    with open(path, 'rb') as f:
      manifest = json.loads(f.read().decode('utf-8'))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise errors.CorruptFileError(f'{path} is not valid JSON ({e}): the manifest was damaged; '
                                  're-make the shards (python -m itit.prepare)') from None
  if not isinstance(manifest, dict) or manifest.get('format_version') != FORMAT_VERSION:
    manifest = manifest if isinstance(manifest, dict) else {}
    raise errors.UserError(
        f'{path} has format_version {manifest.get("format_version")}, this reader reads '
        f'{FORMAT_VERSION}: re-make the shards with this version of itit')
  return manifest


def _flatten(tree: dict) -> dict[str, Any]:
  """Nested dict -> {'a.b.c': leaf}."""
  return flax.traverse_util.flatten_dict(tree, sep='.')


def _short(value: Any) -> str:
  text = json.dumps(value) if not isinstance(value, str) else value
  return text if len(text) <= 16 else text[:12] + '..'


def check_manifest(manifest: dict, expected_identities: dict, shard_dir: str | os.PathLike) -> None:
  """Raises a one-line ValueError if an expected identity differs from the shards' own.

  Only the keys in `expected_identities` are compared (e.g. {'text_tokenizer': {'sha256': ..}}).
  """
  recorded = _flatten(manifest.get('identities', {}))
  for name, expected in _flatten(expected_identities).items():
    if name not in recorded:
      raise errors.UserError(
          f'token shards {shard_dir} record no identity {name} (this run expects '
          f'{_short(expected)}): re-make the shards with the current tokenizers')
    if recorded[name] != expected:
      raise errors.UserError(
          f'token shards {shard_dir} were made with {name} {_short(recorded[name])} but this '
          f'run uses {_short(expected)}: re-make the shards with the current tokenizers, or '
          'point the config at the tokenizer the shards were made with')


class ShardDataSource:
  """A grain RandomAccessDataSource over a shard folder.

  `source[i]` is a dict of numpy arrays (`image_tokens` uint16 [h*w], `text_ids` int32 [L]);
  `source.read_batch(indices)` reads many records at once and returns the same dict with a
  leading batch dimension: the fast path the pipeline uses.

  It reads the files with ArrayRecord's own readers rather than through
  `grain.sources.ArrayRecordDataSource`, whose batched read starts a thread pool per call
  (most of the time on one core); `ArrayRecordReader.read(positions)` reads a shard's share of
  a batch in one call.
  """

  def __init__(self, shard_dir: str | os.PathLike, manifest: dict):
    self.shard_dir = os.fspath(shard_dir)
    self.manifest = manifest
    self.dtype = record_dtype(manifest['fields'])
    counts = [shard['num_records'] for shard in manifest['shards']]
    # Record i lives in shard k where starts[k] <= i < starts[k + 1].
    self._starts = np.cumsum([0] + counts)
    self._open_readers()

  def _open_readers(self):
    self._readers = [shard_files.open_reader(os.path.join(self.shard_dir, shard['file']), shard)
                     for shard in self.manifest['shards']]

  def __getstate__(self):
    # Readers are native handles: pickled sources (grain worker processes) reopen them.
    return {k: v for k, v in self.__dict__.items() if k != '_readers'}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._open_readers()

  def __len__(self) -> int:
    return int(self._starts[-1])

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    batch = self.read_batch([index])
    return {name: column[0] for name, column in batch.items()}

  def read_batch(self, indices: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
    """Records at `indices` as {field: [len(indices), ...]} contiguous arrays."""
    indices = np.asarray(indices, np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
      raise IndexError(f'record index outside [0, {len(self)}) in {self.shard_dir}')
    shard_of = np.searchsorted(self._starts, indices, side='right') - 1
    positions = indices - self._starts[shard_of]
    records = [b''] * len(indices)
    for shard in np.unique(shard_of):
      rows = np.flatnonzero(shard_of == shard)
      path = os.path.join(self.shard_dir, self.manifest['shards'][shard]['file'])
      try:
        read = self._readers[shard].read(positions[rows].tolist())
      except RuntimeError as e:  # ArrayRecord reports a failed chunk checksum this way
        raise errors.CorruptFileError(
            f'token shard {path} is damaged ({" ".join(str(e).split())[:200]}): re-make the '
            'shards (python -m itit.prepare) or copy the file again') from None
      for row, position, record in zip(rows, positions[rows], read):
        if len(record) != self.dtype.itemsize:
          raise errors.CorruptFileError(
              f'token shard {path} record {position} has {len(record)} bytes, the manifest\'s '
              f'layout {self.dtype.itemsize}: the file does not match its manifest; re-make '
              'the shards (python -m itit.prepare)')
        records[row] = record
    batch = np.frombuffer(b''.join(records), self.dtype)
    # The fields of a packed structured array are strided views; consumers (device_put) want
    # contiguous arrays.
    return {name: np.ascontiguousarray(batch[name]) for name in self.dtype.names}

  def __repr__(self) -> str:
    return f'ShardDataSource({self.shard_dir!r}, {len(self)} records)'


def open_shards(shard_dir: str | os.PathLike,
                expected_identities: dict | None = None) -> ShardDataSource:
  """Opens a completed shard folder, after checking the tokenizer identities if given."""
  manifest = read_manifest(shard_dir)
  if not manifest['complete']:
    raise errors.UserError(
        f'token shards {shard_dir} are incomplete ({manifest["num_records"]} records in '
        f'{len(manifest["shards"])} shards so far): re-run the same write to finish them')
  if expected_identities:
    check_manifest(manifest, expected_identities, shard_dir)
  return ShardDataSource(shard_dir, manifest)


def write_json_atomic(path: str, content: dict) -> None:
  """Writes `content` as JSON through a temporary file and a rename: never half a file."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  tmp_path = path + '.tmp'
  with open(tmp_path, 'w') as f:
    json.dump(content, f, indent=2)
  os.replace(tmp_path, path)


def _refuse_other_run(manifest: dict, run: dict, out_dir: str) -> None:
  """Raises if `out_dir` holds shards written with other settings than this run's."""
  recorded = _flatten({k: manifest.get(k) for k in run})
  wanted = _flatten(run)
  for name in list(wanted) + [name for name in recorded if name not in wanted]:
    if recorded.get(name) != wanted.get(name):
      raise ValueError(
          f'{out_dir} already holds shards written with {name} {_short(recorded.get(name))}, '
          f'this run has {_short(wanted.get(name))}: write to another folder, or delete '
          f'{out_dir} to start over')


class _ShardWriter:
  """Rolls records over ArrayRecord files; each file is renamed into place when full."""

  def __init__(self, out_dir: str, manifest: dict, records_per_shard: int):
    self._out_dir = out_dir
    self._manifest = manifest
    self._records_per_shard = records_per_shard
    self._writer = None
    self._count = 0
    self._keys = None

  def _path(self) -> str:
    return os.path.join(self._out_dir, shard_file_name(len(self._manifest['shards'])))

  def write(self, record: bytes, key: str) -> None:
    if self._writer is None:
      self._writer = ArrayRecordWriter(self._path() + '.tmp', _WRITER_OPTIONS)
      self._count = 0
      self._keys = [key, key]
    self._writer.write(record)
    self._count += 1
    self._keys[1] = key
    if self._count == self._records_per_shard:
      self.finish_shard()

  def finish_shard(self) -> None:
    """Closes and renames the open shard and records it in the manifest."""
    if self._writer is None:
      return
    self._writer.close()
    self._writer = None
    path = self._path()
    os.replace(path + '.tmp', path)
    self._manifest['shards'].append({
        'file': os.path.basename(path), 'num_records': self._count, 'bytes': os.path.getsize(path),
        'first_key': self._keys[0], 'last_key': self._keys[1]})
    self._manifest['num_records'] += self._count
    write_json_atomic(os.path.join(self._out_dir, MANIFEST_NAME), self._manifest)


def _tokenize_batch(examples: list, image_tokenizer, text_tokenizer, max_text_len: int,
                    fields: list[dict]) -> np.ndarray:
  """Tokenizes a batch of examples into a structured array of records, filling `fields`."""
  columns = {}
  if image_tokenizer is not None:
    images = [ex.image for ex in examples]
    for ex, image in zip(examples, images):
      if image is None:
        raise ValueError(f'example {ex.key!r} has no image but these shards hold image_tokens: '
                         'give an image stream, or pass image_tokenizer=None for text shards')
    shapes = {np.shape(image) for image in images}
    if len(shapes) > 1:
      raise ValueError(f'images in one batch differ in shape {sorted(shapes)}: resize them to '
                       'one size (the sources centre-crop and resize) before tokenizing')
    tokens = np.asarray(image_tokenizer(np.stack(images)))
    if tokens.ndim != 2 or tokens.shape[0] != len(examples):
      raise ValueError(f'image_tokenizer returned shape {tokens.shape} for {len(examples)} images; '
                       'it must return integer tokens [batch, h*w]')
    if tokens.min() < 0 or tokens.max() > np.iinfo(_IMAGE_TOKEN_DTYPE).max:
      raise ValueError(f'image tokens span [{tokens.min()}, {tokens.max()}], outside uint16: '
                       'image_tokenizer must return codebook indices of a codebook <= 65536')
    columns['image_tokens'] = tokens
  if text_tokenizer is not None:
    for ex in examples:
      if ex.text is None:
        raise ValueError(f'example {ex.key!r} has no text but these shards hold text_ids: give a '
                         'text stream, or pass text_tokenizer=None for image shards')
    columns['text_ids'] = text_tokenizer.encode([ex.text for ex in examples], max_text_len)

  new_fields = []
  if image_tokenizer is not None:
    new_fields.append({'name': 'image_tokens', 'dtype': 'uint16',
                       'shape': [columns['image_tokens'].shape[1]]})
  if text_tokenizer is not None:
    new_fields.append({'name': 'text_ids', 'dtype': 'int32', 'shape': [max_text_len]})
  if not fields:
    fields.extend(new_fields)
  elif fields != new_fields:
    raise ValueError(f'image_tokenizer now returns {new_fields[0]["shape"]} tokens per image, '
                     f'earlier shards hold {fields[0]["shape"]}: one shard folder, one grid size')
  records = np.empty(len(examples), record_dtype(fields))
  for name, column in columns.items():
    records[name] = column
  return records


def write_shards(out_dir: str | os.PathLike, examples: Iterable[Record], *,
                 image_tokenizer: Callable[[np.ndarray], np.ndarray] | None,
                 text_tokenizer: TextTokenizer | None, max_text_len: int, identities: dict,
                 config: dict, records_per_shard: int = 10000, batch_size: int = 256,
                 total: int | None = None) -> dict:
  """Tokenizes `examples` into ArrayRecord shards in `out_dir`; returns the manifest.

  Args:
    out_dir: the shard folder (created; resumed if it holds a partial write of the same run).
    examples: a deterministic iterable of `itit.data.sources.Record`s (or anything with
      `.key` str, `.image` uint8 [H, W, 3] or None, `.text` str or None).
    image_tokenizer: maps uint8 images [batch, H, W, 3] to integer tokens [batch, h*w]; None
      for text-only shards. Its identity must be given as `identities['image_tokenizer']`.
    text_tokenizer: encodes texts to `text_ids` [max_text_len]; None for image-only shards. Its
      identity is recorded as `identities['text_tokenizer']`.
    max_text_len: text length including EOS.
    identities: JSON-able identities of what made the tokens, e.g.
      {'image_tokenizer': {'kind': 'vqgan', 'sha256': ...}}.
    config: JSON-able description of the run that made the shards (recorded, and compared
      on resume).
    records_per_shard: records per ArrayRecord file.
    batch_size: examples tokenized together (one image_tokenizer call).
    total: the number of examples, if known, for the progress bar's ETA.
  """
  if image_tokenizer is None and text_tokenizer is None:
    raise ValueError('write_shards needs an image_tokenizer, a text_tokenizer or both')
  identities = json.loads(json.dumps(identities))
  if image_tokenizer is not None and 'image_tokenizer' not in identities:
    raise ValueError("write_shards with an image_tokenizer needs identities['image_tokenizer'] "
                     "(e.g. {'kind': 'vqgan', 'sha256': <checkpoint sha256>}) so readers can "
                     'check it')
  if text_tokenizer is not None:
    given = identities.setdefault('text_tokenizer', text_tokenizer.identity)
    if given != text_tokenizer.identity:
      raise ValueError(f"identities['text_tokenizer'] {given} differs from the text_tokenizer "
                       f'passed ({text_tokenizer.identity}): drop it, it is filled in for you')
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  field_names = ([] if image_tokenizer is None else ['image_tokens']) + (
      [] if text_tokenizer is None else ['text_ids'])
  run = {'identities': identities, 'config': json.loads(json.dumps(config)),
         'records_per_shard': records_per_shard, 'field_names': field_names,
         'max_text_len': max_text_len if text_tokenizer is not None else None}

  manifest_path = os.path.join(out_dir, MANIFEST_NAME)
  if os.path.exists(manifest_path):
    manifest = read_manifest(out_dir)
    _refuse_other_run(manifest, run, out_dir)
    if manifest['complete']:
      return manifest
  else:
    manifest = {'format_version': FORMAT_VERSION, 'fields': [], 'num_records': 0, 'shards': [],
                'complete': False, **run,
                'created': datetime.datetime.now(datetime.timezone.utc).isoformat()}
  # Leftovers of an interrupted shard: its examples are written again.
  for name in os.listdir(out_dir):
    if name.endswith('.array_record.tmp'):
      os.remove(os.path.join(out_dir, name))

  # Keys expected at the boundaries of the completed shards: a changed stream is refused.
  boundary_keys, start = {}, 0
  for shard in manifest['shards']:
    boundary_keys[start] = shard['first_key']
    boundary_keys[start + shard['num_records'] - 1] = shard['last_key']
    start += shard['num_records']
  skip = manifest['num_records']

  writer = _ShardWriter(out_dir, manifest, records_per_shard)
  progress = tqdm.tqdm(total=total, initial=skip, unit='rec', unit_scale=True, smoothing=0.1,
                       desc=f'tokenizing into {out_dir}', dynamic_ncols=True)
  pending, seen = [], 0

  def flush():
    records = _tokenize_batch(pending, image_tokenizer, text_tokenizer, max_text_len,
                              manifest['fields'])
    for example, record in zip(pending, records):
      writer.write(record.tobytes(), str(example.key))
    progress.update(len(pending))
    pending.clear()

  with progress:
    for index, example in enumerate(examples):
      seen = index + 1
      if index < skip:
        if index in boundary_keys and str(example.key) != boundary_keys[index]:
          raise ValueError(
              f'cannot resume {out_dir}: example {index} is {example.key!r} but the written '
              f'shards hold {boundary_keys[index]!r} there; the example stream is not '
              f'deterministic: delete {out_dir} and write again')
        continue
      pending.append(example)
      if len(pending) == batch_size:
        flush()
    if pending:
      flush()
    writer.finish_shard()
  if seen == 0:
    raise ValueError(f'the example stream for {out_dir} is empty: check the source and split')
  if seen < skip:
    raise ValueError(f'cannot resume {out_dir}: the example stream ended after {seen} examples, '
                     f'before the {skip} already written; delete {out_dir} and write again')
  manifest['complete'] = True
  write_json_atomic(manifest_path, manifest)
  return manifest

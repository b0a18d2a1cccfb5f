"""Opening one token shard file (ArrayRecord), and telling how a damaged one was damaged.

ArrayRecord keeps a file's record index in its footer, at the END of the file, and pads every
file to whole 64 KiB blocks. A reader that cannot read the index therefore has two stories: the
file is shorter than it was written (truncated, or replaced by another file), or it has its
full size and the index bytes themselves are damaged. The manifest records each shard's size
(`bytes`) to tell the two apart; for a manifest written before sizes were recorded, a size off
the 64 KiB grid tells a truncation. A record chunk damaged elsewhere fails its checksum when
read (`ShardDataSource.read_batch`).
"""
from __future__ import annotations

import os

from array_record.python.array_record_module import ArrayRecordReader

from itit import errors

# Random reads: no read-ahead; max_parallelism:1 keeps a read call from being split over
# ArrayRecord's thread pool, which measured faster on one core.
READER_OPTIONS = 'readahead_buffer_size:0,max_parallelism:1'
BLOCK_BYTES = 1 << 16
_FIX = 'copy it again or re-make the shards (python -m itit.prepare)'


def open_reader(path: str, shard: dict) -> ArrayRecordReader:
  """A reader of the shard file `path`, whose manifest entry is `shard` ({'num_records', and
  'bytes' when recorded}); a missing, truncated, replaced or damaged file is one error line that
  names it."""
  if not os.path.exists(path):
    raise errors.MissingFileError(f'token shard {path} is missing (listed in the manifest): '
                                  'copy the whole shard folder, or re-make the shards')
  try:
    reader = ArrayRecordReader(path, READER_OPTIONS)
    opened, num_records = reader.ok(), reader.num_records()
  except (RuntimeError, OSError, ValueError):
    opened, num_records = False, 0
  if not opened:
    raise errors.CorruptFileError(f'token shard {path} {_index_failure(path, shard)}; {_FIX}')
  if num_records != shard['num_records']:
    raise errors.CorruptFileError(
        f'token shard {path} is truncated or replaced: it holds {num_records} records but the '
        f'manifest says {shard["num_records"]}; {_FIX}')
  return reader


def _index_failure(path: str, shard: dict) -> str:
  """Why the index of an existing shard file cannot be read (the module docstring)."""
  size, written = os.path.getsize(path), shard.get('bytes')
  if written is not None and size != written:
    return f'is truncated or replaced ({size} bytes, {written} were written)'
  if written is None and size % BLOCK_BYTES:
    return (f'is truncated or replaced ({size} bytes, not a whole number of ArrayRecord\'s '
            '64 KiB blocks)')
  return (f'has a damaged index: the file has its full size ({size} bytes) but ArrayRecord '
          'cannot read its footer (the record index)')

"""What every raw source shares: the `Record` it yields, skip counting and input checks.

`itit.data.sources` (COCO, Karpathy, image folders, text files) and `itit.data.webdataset` (tar
shards) both build on these; `itit.data.sources` re-exports the record-level names (`Record`,
`SkipCounter`, `SourceError`, `clean_text`, `DEFAULT_MAX_CHARS`), which is where callers import
them from.
"""
import collections
import dataclasses
import hashlib
import os
import posixpath
import re

from absl import logging
import numpy as np

from itit.data.images import BadInput
from itit.data.images import load_image

DEFAULT_MAX_CHARS = 2000
_CONTROL_CHARACTERS = re.compile('[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff]')


@dataclasses.dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous; records compare by id
class Record:
  """One raw example.

  Attributes:
    key: stable id, unique within its source.
    image: uint8 `[size, size, 3]` RGB (read-only), or None for text-only sources.
    text: cleaned caption or text, or None for image-only sources.
  """
  key: str
  image: np.ndarray | None
  text: str | None


class SourceError(ValueError):
  """A whole source is unusable (missing or unparseable index, missing folder)."""


class SkipCounter:
  """Counts skipped inputs by reason and keeps a few examples of each.

  Attributes:
    counts: reason -> number of skipped inputs.
    examples: reason -> up to `max_examples` places (path, path:line, tar:member) skipped for it.
    log: whether the first skip of each reason is logged (a warning).
  """

  def __init__(self, max_examples=3, log=True):
    self.counts = collections.Counter()
    self.examples = collections.defaultdict(list)
    self.max_examples = max_examples
    self.log = log

  def skip(self, reason, where):
    if self.log and not self.counts[reason]:
      logging.warning('skipping %s (%s); further ones are counted', where, reason)
    self.counts[reason] += 1
    if len(self.examples[reason]) < self.max_examples:
      self.examples[reason].append(str(where))

  @property
  def total(self):
    return sum(self.counts.values())

  def summary(self):
    """One line: 'skipped 3 inputs: corrupt_image 2 (e.g. a.jpg, b.jpg), empty_text 1 (...)'."""
    if not self.total:
      return 'skipped 0 inputs'
    parts = [f'{reason} {count} (e.g. {", ".join(self.examples[reason])})'
             for reason, count in sorted(self.counts.items())]
    return f'skipped {self.total} inputs: ' + ', '.join(parts)

  def __str__(self):
    return self.summary()


def clean_text(value, *, min_chars=1, max_chars=DEFAULT_MAX_CHARS):
  """Returns the cleaned text of a caption (str or UTF-8 bytes) or raises BadInput."""
  if value is None:
    raise BadInput('missing_caption')
  if isinstance(value, (bytes, bytearray)):
    try:
      value = bytes(value).decode('utf-8')
    except UnicodeDecodeError:
      raise BadInput('bad_utf8') from None
  if not isinstance(value, str):
    raise BadInput('bad_caption', f'a {type(value).__name__}, not a string')
  try:
    value.encode('utf-8')  # JSON can carry lone surrogates that no tokenizer can encode
  except UnicodeEncodeError:
    raise BadInput('bad_utf8', 'lone surrogate') from None
  text = ' '.join(_CONTROL_CHARACTERS.sub(' ', value).split())
  if not text:
    raise BadInput('empty_text')
  if len(text) > max_chars:
    raise BadInput('text_too_long', f'{len(text)} characters')
  if len(text) < min_chars:
    raise BadInput('text_too_short', f'{len(text)} characters')
  return text


def safe_relpath(name):
  """Normalises a relative path taken from an index file or a tar member name.

  Args:
    name: the path as written in the input; backslashes count as slashes.

  Returns:
    The normalised relative POSIX path, or None when `name` is not a non-empty string, holds a
    NUL, is absolute (also 'C:...') or climbs out with '..'.
  """
  if not isinstance(name, str) or not name or '\x00' in name:
    return None
  name = name.replace('\\', '/')
  if name.startswith('/') or re.match(r'^[A-Za-z]:', name):
    return None
  if '..' in name.split('/'):
    return None
  normalised = posixpath.normpath(name)
  return None if normalised in ('.', '') else normalised


def is_heldout(relpath, fraction):
  """Whether the file `relpath` (relative POSIX path) falls in a held-out split of `fraction`.

  Decided by the file's own name (the first 8 bytes of its sha256 as a number in [0, 1)), not
  by its position in a listing: adding, removing or moving other files never moves a file
  between the splits, and `itit.train_tokenizer` and `itit.prepare` given the same folder and
  fraction hold out exactly the same files.
  """
  if fraction <= 0:
    return False
  digest = hashlib.sha256(relpath.encode('utf-8', 'surrogatepass')).digest()
  return int.from_bytes(digest[:8], 'big') / 2.0**64 < fraction


@dataclasses.dataclass(frozen=True)
class Loader:
  """Decodes one input's image and cleans its caption with a source's fixed limits.

  Attributes:
    size: output image side; images come back uint8 `[size, size, 3]`.
    min_size: smallest accepted short image side.
    max_chars: longest accepted text.
  """
  size: int
  min_size: int
  max_chars: int

  def image(self, data):
    """Image file path or bytes -> uint8 `[size, size, 3]`; raises BadInput."""
    return load_image(data, size=self.size, min_size=self.min_size)

  def text(self, value):
    """Raw caption (str or UTF-8 bytes) -> cleaned text; raises BadInput."""
    return clean_text(value, max_chars=self.max_chars)


def _source_names(paths):
  """Short unique names for key prefixes: file names, or paths below their common folder."""
  names = [os.path.basename(os.fspath(p)) for p in paths]
  if len(set(names)) == len(names):
    return names
  absolute = [os.path.abspath(p) for p in paths]
  common = os.path.commonpath(absolute)
  return [os.path.relpath(a, common).replace(os.sep, '/') for a in absolute]


def unique_sources(paths, skips):
  """Pairs each input file with the short name its record keys start with.

  Args:
    paths: the input files (str or os.PathLike), in reading order.
    skips: SkipCounter; a file whose name repeats an earlier one counts as 'duplicate_key'.

  Yields:
    (path as str, short unique name) pairs in the given order; a path given twice is read once.
  """
  seen = set()
  for path, name in zip(paths, _source_names(paths)):
    if name in seen:
      skips.skip('duplicate_key', path)
      continue
    seen.add(name)
    yield os.fspath(path), name

"""Which reader turns a prepare stream's raw data into `Record`s, by the stream's `source` name.

Every reader has one signature:

  reader(stream_config, *, image_size, min_image_size, skips, shapes_splits) -> Iterable[Record]

where `stream_config` is the stream's section of the prepare config (`kind` plus the source's own
fields: `annotations`, `images`, `tars`, `texts`, `split`, ...), `skips` the stream's
`SkipCounter` and `shapes_splits` the shapes world's {split: scenes} (None unless a stream reads
'shapes'). A reader yields whole records; `itit.prepare` drops the half its stream's kind does not
keep. Adding a source is one function here and one entry in `READERS`.
"""
from __future__ import annotations

import glob
from typing import Callable, Iterable

from itit.data import shapes
from itit.data import sources
from itit.data import webdataset

Reader = Callable[..., Iterable[sources.Record]]


def glob_paths(pattern: str) -> list[str]:
  """The files matching `pattern`, sorted; raises SourceError when there is none.

  Several patterns may be joined by ',' ('texts/*.txt,pairs/captions.jsonl'): the files of
  each, in that order, each pattern's sorted, a file matched twice kept once.
  """
  found = {}  # an ordered set
  for part in (p.strip() for p in pattern.split(',')):
    matches = sorted(glob.glob(part)) if part else []
    if not matches:
      raise sources.SourceError(f'no file matches {part!r}: check the path in the prepare '
                                'config')
    found.update(dict.fromkeys(matches))
  return list(found)


def _read_shapes(stream_config, *, image_size, min_image_size, skips, shapes_splits):
  """The rendered scenes of `stream_config.split`, keyed '<split>/<index>'; nothing is skipped."""
  del min_image_size, skips  # rendered images are exact and captions well formed
  scenes = shapes_splits[stream_config.split]
  seed = stream_config.get('seed', 0)
  for index, (image, text) in enumerate(shapes.examples(scenes, seed, image_size)):
    yield sources.Record(f'{stream_config.split}/{index}', image, text)


def _read_coco(stream_config, *, image_size, min_image_size, skips, shapes_splits):
  del shapes_splits
  return sources.coco_captions(stream_config.annotations, stream_config.images,
                               size=image_size, min_size=min_image_size, skips=skips)


def _read_karpathy(stream_config, *, image_size, min_image_size, skips, shapes_splits):
  del shapes_splits
  return sources.karpathy_coco(stream_config.annotations, stream_config.images,
                               split=stream_config.split, size=image_size,
                               min_size=min_image_size, skips=skips)


def _read_webdataset(stream_config, *, image_size, min_image_size, skips, shapes_splits):
  del shapes_splits
  # An image stream never decodes captions, so a shard without them still feeds it.
  return webdataset.webdataset(glob_paths(stream_config.tars), size=image_size,
                               min_size=min_image_size, skips=skips,
                               with_text=stream_config.kind != 'image')


def _read_image_folder(stream_config, *, image_size, min_image_size, skips, shapes_splits):
  del shapes_splits
  # heldout_fraction + part ('train' / 'heldout'): one folder split into training and test
  # streams by file name (sources.image_folder).
  return sources.image_folder(stream_config.images,
                              captions=stream_config.get('captions') or None,
                              size=image_size, min_size=min_image_size, skips=skips,
                              heldout_fraction=stream_config.get('heldout_fraction', 0.0),
                              part=stream_config.get('part', 'all'))


def _read_text_files(stream_config, *, image_size, min_image_size, skips, shapes_splits):
  del image_size, min_image_size, shapes_splits
  if stream_config.kind != 'text':
    raise ValueError(f"source 'text_files' can only feed a text stream, not {stream_config.kind!r}")
  return sources.text_files(glob_paths(stream_config.texts), skips=skips)


# Source name (a stream's `source` in the prepare config) -> its reader; the order is the one
# the unknown-source error lists them in.
READERS: dict[str, Reader] = {
    'shapes': _read_shapes,
    'coco': _read_coco,
    'karpathy': _read_karpathy,
    'webdataset': _read_webdataset,
    'image_folder': _read_image_folder,
    'text_files': _read_text_files,
}


def reader(source: str) -> Reader:
  """The reader registered as `source`; raises ValueError listing the valid names otherwise."""
  if source not in READERS:
    names = list(READERS)
    raise ValueError(f'unknown source {source!r}: use {", ".join(names[:-1])} or {names[-1]}')
  return READERS[source]

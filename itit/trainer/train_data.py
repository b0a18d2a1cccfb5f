"""The training loop's view of the data: one grain iterator per input stream, plus the test split.

Streams are folders of prepared token shards under `config.data.dir` (python -m itit.prepare):
  paired          {image_tokens, text_ids}   T2I, I2T and I2I losses
  unpaired_image  {image_tokens}             the I2T2I cycle (or I2I)
  unpaired_text   {text_ids}                 the T2I2T cycle (or T2T)
Each process reads only its own shard of every stream; batches are per process.
`data.max_records.<stream>` > 0 keeps only the first n records of a stream (the study's data
fractions; itit.prepare writes a stream's records in a fixed order).
"""
from __future__ import annotations

import os
from typing import Iterator, Mapping

import jax
import numpy as np

from itit.data import pipeline
from itit.data import shards
from itit import errors

_STREAM_SEED_OFFSET = {'paired': 0, 'unpaired_image': 1, 'unpaired_text': 2}
STREAMS = tuple(_STREAM_SEED_OFFSET)


def _as_model_inputs(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Shard records store uint16 image tokens; the model takes int32."""
  return {k: np.asarray(v, np.int32) for k, v in batch.items()}


class FirstRecords:
  """The first `count` records of a shard source, for `data.max_records`.

  A view, not a copy: `read_batch` and the manifest are the wrapped source's, so the grain
  pipeline (and its checkpointed state, which holds record indices) works unchanged.
  """

  def __init__(self, source, count: int):
    if not 0 < count <= len(source):
      raise ValueError(f'FirstRecords: count {count} is outside [1, {len(source)}]')
    self.source = source
    self.count = int(count)
    self.manifest = source.manifest

  def __len__(self) -> int:
    return self.count

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return self.source[self._check(np.asarray([index]))[0]]

  def read_batch(self, indices) -> dict[str, np.ndarray]:
    return self.source.read_batch(self._check(np.asarray(indices, np.int64)))

  def _check(self, indices: np.ndarray) -> np.ndarray:
    if indices.size and (indices.min() < 0 or indices.max() >= self.count):
      raise IndexError(f'record index outside [0, {self.count}) of {self.source}')
    return indices

  def __repr__(self) -> str:
    return f'FirstRecords({self.source!r}, {self.count})'


def limit_records(source, stream: str, max_records: int, folder: str):
  """`source`, or its first `max_records` records (`data.max_records.<stream>`; 0 = all)."""
  if not max_records:
    return source
  if max_records < 0 or max_records > len(source):
    raise errors.UserError(
        f'data.max_records.{stream}={max_records} but {folder} holds {len(source)} records: '
        f'use a value in [1, {len(source)}], or 0 for all of them')
  return FirstRecords(source, max_records)


class TrainData:
  """Opens the configured streams; `iterators` are what checkpoints save and restore."""

  def __init__(self, config, streams):
    self.config = config
    process_index, process_count = jax.process_index(), jax.process_count()
    self.sources = {}
    self.iterators = {}
    max_records = config.data.get('max_records') or {}
    for stream in streams:
      folder = os.path.join(config.data.dir, config.data[stream])
      self.sources[stream] = limit_records(shards.open_shards(folder), stream,
                                           max_records.get(stream, 0), folder)
      self.iterators[stream] = pipeline.make_iterator(
          self.sources[stream], batch_size=config.batch[stream] // process_count,
          seed=config.seed * 1000 + _STREAM_SEED_OFFSET[stream], shuffle=True,
          shard_index=process_index, shard_count=process_count)
    test_folder = os.path.join(config.data.dir, config.data.test)
    self.test_source = shards.open_shards(test_folder) if os.path.isdir(test_folder) else None
    self._check_consistent()

  def _check_consistent(self):
    """Every stream must come from the same image and text tokenizers."""
    identities = self.identities()
    for kind in ('image_tokenizer', 'text_tokenizer'):
      seen = {s: ids.get(kind) for s, ids in identities.items() if ids.get(kind)}
      if len({str(v) for v in seen.values()}) > 1:
        raise errors.UserError(
            f'the streams under {self.config.data.dir} were made with different '
            f'{kind}s: {seen}; re-run itit.prepare for all of them')

  def check_model(self, model_config) -> None:
    """The model's vocabularies and grid must fit the tokens in the shards."""
    for stream, ids in self.identities().items():
      image = ids.get('image_tokenizer') or {}
      if image.get('codebook_size') not in (None, model_config.image_vocab_size):
        raise errors.UserError(
            f'stream {stream!r}: the VQGAN has {image["codebook_size"]} codes but '
            f'model.image_vocab_size is {model_config.image_vocab_size}; set '
            f'--config.model.image_vocab_size={image["codebook_size"]}')
      if image.get('grid_size') not in (None, model_config.image_grid):
        raise errors.UserError(
            f'stream {stream!r}: the VQGAN makes a {image["grid_size"]}x'
            f'{image["grid_size"]} token grid but model.image_grid is '
            f'{model_config.image_grid}; set --config.model.image_grid='
            f'{image["grid_size"]}')
      text = ids.get('text_tokenizer') or {}
      if text.get('vocab_size', 0) > model_config.text_vocab_size:
        raise errors.UserError(
            f'stream {stream!r}: the SentencePiece model has {text["vocab_size"]} '
            f'pieces but model.text_vocab_size is {model_config.text_vocab_size}; '
            f'set --config.model.text_vocab_size={text["vocab_size"]} or more')
    for stream, source in self.sources.items():
      for field in source.manifest['fields']:
        if field['name'] == 'text_ids' and field['shape'][0] != model_config.max_text_len:
          raise errors.UserError(
              f'stream {stream!r} holds texts of length {field["shape"][0]} but '
              f'model.max_text_len is {model_config.max_text_len}; set '
              f'--config.model.max_text_len={field["shape"][0]}')

  def identities(self) -> dict:
    result = {s: dict(src.manifest.get('identities', {})) for s, src in self.sources.items()}
    if self.test_source is not None:
      result['test'] = dict(self.test_source.manifest.get('identities', {}))
    return result

  def next_batch(self) -> dict[str, dict[str, np.ndarray]]:
    return {stream: _as_model_inputs(next(it)) for stream, it in self.iterators.items()}

  def test_batches(self, max_batches: int | None = None) -> Iterator[dict]:
    """One pass over the test split in order, as a 'paired' batch, dropping the remainder."""
    if self.test_source is None:
      return
    batch_size = self.config.batch.paired // jax.process_count()
    iterator = pipeline.make_iterator(
        self.test_source, batch_size=batch_size, seed=0, shuffle=False, num_epochs=1,
        shard_index=jax.process_index(), shard_count=jax.process_count())
    limit = self.config.get('eval_batches', 0) if max_batches is None else max_batches
    for index, batch in enumerate(iterator):
      if limit and index >= limit:
        return
      yield {'paired': _as_model_inputs(batch)}


def check_resume_identities(saved: Mapping, current: Mapping, workdir: str) -> None:
  """Refuses to resume on data made with a different VQGAN or SentencePiece model."""
  for stream, saved_ids in saved.items():
    now = current.get(stream)
    if now is None:
      continue
    for kind, value in saved_ids.items():
      if now.get(kind) != value:
        raise errors.UserError(
            f'cannot resume {workdir}: stream {stream!r} was trained on data whose '
            f'{kind} was {value}, but the data now has {now.get(kind)}. Point data.dir at the '
            f'original shards, or start a new workdir.')

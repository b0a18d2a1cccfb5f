"""grain input pipelines: shuffled, sharded, checkpointable numpy batches from a data source.

The pipeline is grain's own MapDataset chain over record INDICES (range -> this process's
slice -> shuffle -> repeat -> batch), then one map that reads a whole batch of records at once
(`ShardDataSource.read_batch`: one ArrayRecord read and one `np.frombuffer`). Batching indices
rather than records keeps grain's per-element work to index arithmetic, which is what lets one
core read > 20k records/s (docs/BENCHMARKS.md). The order depends only on the seed, the shard
and the step, so an iterator restored from `get_state()` yields exactly the batches it would
have.

Checkpointing with Orbax (grain registers its handler with Orbax's args):

  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(iterator)))
  manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      data=grain.checkpoint.CheckpointRestore(iterator)))  # restores `iterator` in place

Each process writes its own `process_<i>-of-<n>.json` inside the `data` item.
"""
from __future__ import annotations

from typing import Any

from absl import logging
import grain
import numpy as np


def _stack(records: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  return {name: np.stack([r[name] for r in records]) for name in records[0]}


def _grain_seed(seed: int) -> int:
  # grain shuffles epoch e with seed + e, so neighbouring user seeds would replay each other's
  # epochs one epoch apart; hashing the seed keeps the runs of seeds 0, 1, 2 unrelated.
  return int(np.random.SeedSequence(seed).generate_state(1)[0])


def shard_bounds(num_records: int, shard_index: int, shard_count: int) -> tuple[int, int]:
  """[start, stop) of a process's contiguous block of records.

  Every process gets exactly num_records // shard_count records (up to shard_count - 1 records
  are never read), so that processes step through epochs in lockstep.
  """
  if not 0 <= shard_index < shard_count:
    raise ValueError(f'shard_index {shard_index} is outside [0, shard_count={shard_count})')
  per_shard = num_records // shard_count
  if per_shard == 0:
    raise ValueError(f'{num_records} records cannot be split over {shard_count} processes')
  return shard_index * per_shard, (shard_index + 1) * per_shard


def make_dataset(source: Any, *, batch_size: int, seed: int, shuffle: bool = True,
                 num_epochs: int | None = None, shard_index: int = 0, shard_count: int = 1,
                 drop_remainder: bool = True) -> grain.MapDataset:
  """The MapDataset of batches {field: [batch_size, ...]}; see `make_iterator`."""
  start, stop = shard_bounds(len(source), shard_index, shard_count)
  records = stop - start
  if drop_remainder and num_epochs is not None and records * num_epochs < batch_size:
    raise ValueError(f'{source} gives this process {records} records x {num_epochs} epochs, '
                     f'fewer than batch_size {batch_size}: lower the batch size or add data')
  if records < batch_size:
    # An endless stream still works: a batch then spans several reshuffled epochs, so it holds
    # some records more than once (figure 5's smallest unpaired sets at the laptop level).
    logging.warning('%s gives this process %d records, fewer than batch_size %d: every batch '
                    'repeats records', source, records, batch_size)
  # Any grain RandomAccessDataSource works; sources with a batched read use it.
  read_batch = getattr(source, 'read_batch', None) or (
      lambda indices: _stack([source[int(i)] for i in indices]))
  dataset = grain.MapDataset.range(start, stop)
  if shuffle:
    dataset = dataset.shuffle(seed=_grain_seed(seed))
  # repeat() before batch(): batches run across epoch boundaries, and each epoch is reshuffled.
  dataset = dataset.repeat(num_epochs)
  dataset = dataset.batch(batch_size, drop_remainder=drop_remainder, batch_fn=np.asarray)
  return dataset.map(read_batch)


def make_iterator(source: Any, *, batch_size: int, seed: int, shuffle: bool = True,
                  num_epochs: int | None = None, shard_index: int = 0, shard_count: int = 1,
                  drop_remainder: bool = True, prefetch: int = 4) -> grain.DatasetIterator:
  """A checkpointable iterator of numpy batches {field: [batch_size, ...]}.

  Args:
    source: a `ShardDataSource` (or any grain RandomAccessDataSource of dicts of arrays).
    batch_size: per-process batch size. An endless stream (num_epochs None) of fewer records
      fills each batch from several reshuffled epochs, repeating records (logged).
    seed: the shuffle seed; the same seed gives the same batches.
    shuffle: reshuffle every epoch (a different permutation per epoch, from the seed).
    num_epochs: None repeats forever.
    shard_index, shard_count: this process's share of the records, disjoint across processes
      (`jax.process_index()`, `jax.process_count()` in training).
    drop_remainder: drop the final partial batch (only reached when num_epochs is finite).
    prefetch: batches read ahead by a background thread.

  Returns:
    A grain DatasetIterator; `get_state()` / `set_state()` (or grain.checkpoint with Orbax,
    see the module docstring) resume it exactly.
  """
  dataset = make_dataset(source, batch_size=batch_size, seed=seed, shuffle=shuffle,
                         num_epochs=num_epochs, shard_index=shard_index,
                         shard_count=shard_count, drop_remainder=drop_remainder)
  read_options = grain.ReadOptions(num_threads=1, prefetch_buffer_size=prefetch)
  return iter(dataset.to_iter_dataset(read_options))

"""Tests for itit.data.pipeline: determinism, epochs, process sharding, exact resumption."""
import json

import grain
import numpy as np
import pytest

from itit.data import pipeline
from itit.data import shards
import conftest  # pylint: disable=g-bad-import-order

NUM_RECORDS = 120
MAX_TEXT_LEN = 6


@pytest.fixture(scope='module')
def source(tmp_path_factory):
  out_dir = tmp_path_factory.mktemp('shards')
  conftest.write_index_shards(out_dir, NUM_RECORDS, MAX_TEXT_LEN, token_scale=3)
  return shards.open_shards(out_dir)


def record_ids(batches):
  return np.concatenate([b['text_ids'][:, 0] for b in batches])


def take(iterator, count):
  return [next(iterator) for _ in range(count)]


def test_batch_values_dtypes_and_shapes(source):
  batch = next(pipeline.make_iterator(source, batch_size=8, seed=0))
  assert set(batch) == {'image_tokens', 'text_ids'}
  assert batch['image_tokens'].dtype == np.uint16 and batch['image_tokens'].shape == (8, 4)
  assert batch['text_ids'].dtype == np.int32 and batch['text_ids'].shape == (8, MAX_TEXT_LEN)
  ids = batch['text_ids'][:, 0]
  # Fields of one record stay together: the image tokens were made from the same index.
  np.testing.assert_array_equal(batch['image_tokens'], np.repeat(ids[:, None] * 3, 4, axis=1))
  np.testing.assert_array_equal(batch['text_ids'][:, 1], 1)


def test_same_seed_same_batches_other_seed_differs(source):
  first = record_ids(take(pipeline.make_iterator(source, batch_size=16, seed=3), 20))
  again = record_ids(take(pipeline.make_iterator(source, batch_size=16, seed=3), 20))
  other = record_ids(take(pipeline.make_iterator(source, batch_size=16, seed=4), 20))
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)
  # Neighbouring seeds do not replay each other's epochs (grain seeds epoch e with seed + e).
  assert not np.array_equal(first[NUM_RECORDS:2 * NUM_RECORDS], other[:NUM_RECORDS])


def test_every_record_once_per_epoch_and_reshuffled(source):
  # batch 16 does not divide 120: batches run across epoch boundaries.
  stream = record_ids(take(pipeline.make_iterator(source, batch_size=16, seed=0), 30))
  epochs = stream[:3 * NUM_RECORDS].reshape(3, NUM_RECORDS)
  for epoch in epochs:
    np.testing.assert_array_equal(np.sort(epoch), np.arange(NUM_RECORDS))
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(epochs[0], np.arange(NUM_RECORDS))

  one_epoch = list(pipeline.make_iterator(source, batch_size=16, seed=0, num_epochs=1,
                                          drop_remainder=False))
  assert [len(b['text_ids']) for b in one_epoch] == [16] * 7 + [8]
  np.testing.assert_array_equal(record_ids(one_epoch), epochs[0])
  dropped = list(pipeline.make_iterator(source, batch_size=16, seed=0, num_epochs=2))
  assert len(dropped) == 15  # 240 // 16


def test_no_shuffle_reads_in_order(source):
  batches = list(pipeline.make_iterator(source, batch_size=40, seed=0, shuffle=False,
                                        num_epochs=1))
  np.testing.assert_array_equal(record_ids(batches), np.arange(NUM_RECORDS))


def test_process_shards_are_disjoint_and_cover(source):
  per_process = [
      record_ids(pipeline.make_iterator(source, batch_size=5, seed=0, num_epochs=1,
                                        shard_index=i, shard_count=2))
      for i in range(2)]
  assert not set(per_process[0]) & set(per_process[1])
  np.testing.assert_array_equal(np.sort(np.concatenate(per_process)), np.arange(NUM_RECORDS))
  # 120 over 7 processes: each reads 17 records, 1 record is never read.
  seven = [record_ids(pipeline.make_iterator(source, batch_size=17, seed=0, num_epochs=1,
                                             shard_index=i, shard_count=7)) for i in range(7)]
  assert [len(ids) for ids in seven] == [17] * 7
  assert len(set(np.concatenate(seven))) == 119
  with pytest.raises(ValueError, match='shard_index 2 is outside'):
    pipeline.make_iterator(source, batch_size=5, seed=0, shard_index=2, shard_count=2)


def test_state_restore_resumes_bitwise(source):
  iterator = pipeline.make_iterator(source, batch_size=16, seed=7)
  take(iterator, 9)
  state = iterator.get_state()
  json.dumps(state)  # the state is what grain's Orbax handler writes as JSON
  expected = take(iterator, 6)

  restored = pipeline.make_iterator(source, batch_size=16, seed=7)
  take(restored, 2)  # a fresh or advanced iterator jumps to the saved position
  restored.set_state(state)
  for want, got in zip(expected, take(restored, 6)):
    for name in want:
      np.testing.assert_array_equal(got[name], want[name])


def test_orbax_checkpoint_round_trip(source, tmp_path):
  ocp = pytest.importorskip('orbax.checkpoint')
  iterator = pipeline.make_iterator(source, batch_size=16, seed=1)
  take(iterator, 4)
  with ocp.CheckpointManager(tmp_path / 'ckpt') as manager:
    manager.save(4, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
    manager.wait_until_finished()
  expected = take(iterator, 3)

  restored = pipeline.make_iterator(source, batch_size=16, seed=1)
  with ocp.CheckpointManager(tmp_path / 'ckpt') as manager:
    manager.restore(4, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
  np.testing.assert_array_equal(record_ids(take(restored, 3)), record_ids(expected))


def test_any_random_access_source(source):
  # A plain sequence of dicts (no read_batch) goes through the per-record path.
  in_memory = [source[i] for i in range(NUM_RECORDS)]
  from_list = take(pipeline.make_iterator(in_memory, batch_size=16, seed=2), 3)
  from_shards = take(pipeline.make_iterator(source, batch_size=16, seed=2), 3)
  np.testing.assert_array_equal(record_ids(from_list), record_ids(from_shards))


def test_finite_epochs_that_cannot_fill_a_batch_are_refused(source):
  with pytest.raises(ValueError, match='60 records x 1 epochs, fewer than batch_size 100'):
    pipeline.make_iterator(source, batch_size=100, seed=0, shard_count=2, num_epochs=1)
  # Two epochs of the 60 records fill one batch of 100.
  batches = list(pipeline.make_iterator(source, batch_size=100, seed=0, shard_count=2,
                                        num_epochs=2))
  assert len(batches) == 1 and batches[0]['text_ids'].shape == (100, MAX_TEXT_LEN)


def test_endless_stream_of_a_shard_smaller_than_the_batch(source):
  # 120 records over 10 processes: 12 each, batches of 64 span 5 1/3 reshuffled epochs.
  stream = record_ids(take(pipeline.make_iterator(source, batch_size=64, seed=0,
                                                   shard_index=3, shard_count=10), 3))
  assert stream.shape == (192,)
  for epoch in stream.reshape(16, 12):
    np.testing.assert_array_equal(np.sort(epoch), np.arange(36, 48))

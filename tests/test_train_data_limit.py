"""`data.max_records`: a stream trains on the first n records of its shards, resumably."""
import numpy as np
import pytest

from configs import base
from itit.data import shards
from itit import errors
from itit.trainer import train_data
import conftest  # pylint: disable=g-bad-import-order

NUM_RECORDS = 60


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp('data')
  for stream in ('paired', 'unpaired_text'):
    conftest.write_index_shards(root / stream, NUM_RECORDS, max_text_len=4)
  return str(root)


def make_config(data_dir, **max_records):
  config = base.get_config()
  config.data.dir = data_dir
  config.data.max_records.update(max_records)
  config.batch.update(dict(paired=10, unpaired_text=10))
  return config


def record_ids(data, stream, num_batches):
  return np.concatenate([data.next_batch()[stream]['text_ids'][:, 0]
                         for _ in range(num_batches)])


def test_limited_stream_reads_only_its_first_records(data_dir):
  data = train_data.TrainData(make_config(data_dir, paired=30), ['paired', 'unpaired_text'])
  assert len(data.sources['paired']) == 30 and len(data.sources['unpaired_text']) == NUM_RECORDS
  assert data.sources['paired'].manifest['num_records'] == NUM_RECORDS  # the shards' own
  # 3 batches of 10 = one epoch of the 30 kept records: each exactly once, then reshuffled.
  first_epoch, second_epoch = record_ids(data, 'paired', 3), record_ids(data, 'paired', 3)
  assert sorted(first_epoch) == list(range(30)) == sorted(second_epoch)
  assert not np.array_equal(first_epoch, second_epoch)
  # The unlimited stream still reaches past record 30.
  assert record_ids(data, 'unpaired_text', 6).max() >= 30


def test_zero_means_every_record(data_dir):
  data = train_data.TrainData(make_config(data_dir), ['paired'])
  assert len(data.sources['paired']) == NUM_RECORDS
  assert sorted(record_ids(data, 'paired', 6)) == list(range(NUM_RECORDS))


def test_limited_iterator_resumes_exactly(data_dir):
  config = make_config(data_dir, paired=20)
  data = train_data.TrainData(config, ['paired'])
  record_ids(data, 'paired', 5)
  state = data.iterators['paired'].get_state()
  expected = record_ids(data, 'paired', 4)

  restored = train_data.TrainData(config, ['paired'])
  restored.iterators['paired'].set_state(state)
  np.testing.assert_array_equal(record_ids(restored, 'paired', 4), expected)
  assert expected.max() < 20


def test_limit_above_the_stream_is_refused(data_dir):
  with pytest.raises(errors.UserError, match=r'data.max_records.paired=61 .* holds 60 records'):
    train_data.TrainData(make_config(data_dir, paired=61), ['paired'])


def test_first_records_refuses_indices_past_the_limit(data_dir):
  view = train_data.FirstRecords(shards.open_shards(f'{data_dir}/paired'), 5)
  assert int(view[4]['text_ids'][0]) == 4
  np.testing.assert_array_equal(view.read_batch([0, 3])['text_ids'][:, 0], [0, 3])
  with pytest.raises(IndexError, match=r'outside \[0, 5\)'):
    view.read_batch([5])

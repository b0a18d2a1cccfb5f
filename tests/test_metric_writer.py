"""MetricWriter's JSONL / PNG outputs and the progress line's rate and ETA."""
import errno
import io
import json
import os
import struct
import threading

import numpy as np
from PIL import Image
import pytest
from tensorboardX import record_writer
from tensorboardX.proto import event_pb2

from itit.trainer import metric_writer


def read_events(folder):
  """Every Event proto of the TFRecord events files in `folder`, in file order."""
  events = []
  for name in sorted(os.listdir(folder)):
    with open(os.path.join(folder, name), 'rb') as f:
      data = f.read()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack('<Q', data[offset:offset + 8])
      offset += 12  # the length and its CRC
      events.append(event_pb2.Event.FromString(data[offset:offset + length]))
      offset += length + 4  # the record and its CRC
  return events


def test_progress_rate_and_eta(monkeypatch):
  clock = iter([100.0, 110.0, 130.0])
  monkeypatch.setattr(metric_writer.time, 'perf_counter', lambda: next(clock))
  stream = io.StringIO()
  progress = metric_writer.Progress(total_steps=1000, stream=stream)
  first = progress.report(100, {'loss': 2.5})
  # The first report only starts the clock: no rate, no ETA, and never 'nan'.
  assert first == '[100/1000  10.0%] ? steps/s, ETA ?  loss=2.5'
  # 50 steps in 10 s = 5 steps/s; 850 steps left = 170 s.
  assert progress.report(150) == '[150/1000  15.0%] 5.00 steps/s, ETA 2m50s  '
  # 200 steps in 30 s since the first report; 700 left at 6.67 steps/s = 105 s.
  assert progress.report(300).startswith('[300/1000  30.0%] 6.67 steps/s, ETA 1m45s')
  assert stream.getvalue().count('\n') == 3


def test_format_duration():
  assert metric_writer.format_duration(59.9) == '0m59s'
  assert metric_writer.format_duration(3 * 3600 + 7 * 60 + 5) == '3h07m'
  assert metric_writer.format_duration(-4) == '0m00s'


def test_writer_jsonl_and_images(tmp_path):
  writer = metric_writer.MetricWriter(str(tmp_path), enabled=True)
  writer.write_scalars(3, {'loss': np.float32(1.5), 'lr': 1e-3})
  writer.write_scalars(4, {'loss': 1.25})
  image = np.zeros((4, 6, 3), np.uint8)
  image[1, 2] = (10, 20, 30)
  writer.write_images(4, {'grid': image})
  writer.close()
  with open(tmp_path / 'metrics.jsonl') as f:
    rows = [json.loads(line) for line in f]
  assert rows == [{'step': 3, 'loss': 1.5, 'lr': 1e-3}, {'step': 4, 'loss': 1.25}]
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / 'images' / 'grid_4.png')), image)
  # TensorBoard reads the same scalars, the image and the text, at their steps.
  writer = metric_writer.MetricWriter(str(tmp_path), enabled=True)  # a resumed run's writer
  writer.write_text(5, 'samples', 'a red circle')
  writer.close()
  writer.close()  # a preempted run closes twice
  events = read_events(tmp_path / 'tensorboard')
  assert events[0].file_version == 'brain.Event:2'
  values = [(e.step, v.tag, v) for e in events for v in e.summary.value]
  assert [(step, tag, v.simple_value) for step, tag, v in values if tag in ('loss', 'lr')] == [
      (3, 'loss', 1.5), (3, 'lr', pytest.approx(1e-3)), (4, 'loss', 1.25)]
  (grid,) = [v for step, tag, v in values if tag == 'grid' and step == 4]
  assert (grid.image.height, grid.image.width, grid.image.colorspace) == (4, 6, 3)
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(grid.image.encoded_image_string))),
                                image)
  (text,) = [v for step, tag, v in values if tag.startswith('samples') and step == 5]
  assert text.tensor.string_val == [b'a red circle']
  assert len(os.listdir(tmp_path / 'tensorboard')) == 2  # one events file per writer


def test_a_full_disk_raises_in_the_writing_thread(tmp_path, monkeypatch):
  """ENOSPC while flushing the events reaches the caller (the training loop makes it one
  `disk full` line); no worker thread flushes on its own clock, where it printed a traceback."""
  threads = set(threading.enumerate())
  writer = metric_writer.MetricWriter(str(tmp_path), enabled=True)
  writer.write_scalars(1, {'loss': 2.0})
  assert not set(threading.enumerate()) - threads  # no writer thread started

  def full(self):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)

  monkeypatch.setattr(record_writer.RecordWriter, 'flush', full)
  with pytest.raises(OSError) as raised:
    writer.write_scalars(2, {'loss': 1.0})
  assert raised.value.errno == errno.ENOSPC
  monkeypatch.undo()
  writer.close()
  steps = [e.step for e in read_events(tmp_path / 'tensorboard') if e.summary.value]
  assert steps == [1, 2]  # the failed flush's event is written once space is back


def test_disabled_writer_writes_nothing(tmp_path):
  writer = metric_writer.MetricWriter(str(tmp_path / 'w'), enabled=False)
  writer.write_scalars(1, {'loss': 1.0})
  writer.close()
  assert not os.path.exists(tmp_path / 'w')

"""MetricWriter's JSONL / PNG outputs and the progress line's rate and ETA."""
import io
import json
import os

import numpy as np
from PIL import Image

from itit.trainer import metric_writer


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
  assert os.listdir(tmp_path / 'tensorboard')


def test_disabled_writer_writes_nothing(tmp_path):
  writer = metric_writer.MetricWriter(str(tmp_path / 'w'), enabled=False)
  writer.write_scalars(1, {'loss': 1.0})
  writer.close()
  assert not os.path.exists(tmp_path / 'w')

"""tools.trace_summary: busy time, categories and top ops of a Chrome trace."""
import gzip
import json

import pytest

from tools import trace_summary


def _device_trace():
  meta = [
      {'ph': 'M', 'pid': 1, 'name': 'process_name', 'args': {'name': '/host:CPU'}},
      {'ph': 'M', 'pid': 2, 'name': 'process_name', 'args': {'name': '/device:GPU:0'}},
      {'ph': 'M', 'pid': 2, 'tid': 7, 'name': 'thread_name', 'args': {'name': 'Stream #1'}},
  ]
  ops = [  # (name, ts, dur) on the GPU stream; two overlap so busy < sum of durations
      ('sm90_xmma_gemm_bf16', 0.0, 40.0),
      ('sm90_xmma_gemm_bf16', 50.0, 20.0),
      ('cudnn_flash_fprop', 70.0, 10.0),
      ('loop_fusion_threefry2x32', 75.0, 15.0),
      ('input_reduce_fusion', 100.0, 10.0),
  ]
  events = meta + [{'ph': 'X', 'pid': 2, 'tid': 7, 'name': n, 'ts': t, 'dur': d}
                   for n, t, d in ops]
  events.append({'ph': 'X', 'pid': 1, 'tid': 3, 'name': 'PjitFunction', 'ts': 0.0, 'dur': 500.0})
  return events


def test_busy_time_merges_overlaps():
  assert trace_summary.busy_time([(0, 10), (5, 15), (20, 30)]) == 25
  assert trace_summary.busy_time([]) == 0


def test_categories():
  assert trace_summary.categorise('sm90_xmma_gemm_bf16bf16_bf16f32') == 'matmul'
  assert trace_summary.categorise('nvjet_sm90_tst_128x160_64x5_2x1_v_bz_NNT') == 'matmul'
  assert trace_summary.categorise('cudnn_flash_fprop') == 'attention'
  assert trace_summary.categorise('loop_fusion_threefry2x32') == 'random'
  assert trace_summary.categorise('input_reduce_fusion') == 'reduce'
  assert trace_summary.categorise('loop_add_fusion') == 'fusion'
  assert trace_summary.categorise('something_else') == 'other'


def test_device_lines_only_and_values():
  summary = trace_summary.summarise(_device_trace(), top=2)
  assert summary['device_lines']
  (line,) = summary['lines']  # the host event is left out when a device exists
  assert line['process'] == '/device:GPU:0' and line['thread'] == 'Stream #1'
  assert line['events'] == 5
  assert line['span_us'] == 110.0
  assert line['busy_us'] == 40 + 40 + 10  # [50, 90) merges three touching or overlapping ops
  assert line['by_category']['matmul']['us'] == 60.0
  assert line['by_category']['matmul']['fraction'] == pytest.approx(60 / 95)
  assert [op['name'] for op in line['top']] == ['sm90_xmma_gemm_bf16', 'loop_fusion_threefry2x32']
  assert line['top'][0]['count'] == 2


def test_cli_reads_the_newest_trace(tmp_path, capsys):
  run = tmp_path / 'plugins' / 'profile' / 'run1'
  run.mkdir(parents=True)
  with gzip.open(run / 'host.trace.json.gz', 'wt') as f:
    json.dump({'traceEvents': _device_trace()}, f)
  out = tmp_path / 'summary.json'
  assert trace_summary.main([str(tmp_path), '--out', str(out)]) == 0
  summary = json.loads(out.read_text())
  assert summary['lines'][0]['busy_us'] == 90.0
  assert 'Stream #1' in capsys.readouterr().out
  with pytest.raises(FileNotFoundError):
    trace_summary.main([str(tmp_path / 'missing')])

"""itit.compile_check: exact per-device bytes on abstract meshes, and the compiled report."""
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import pytest

from configs import vit_b
from itit import compile_check
from itit.trainer import partitioning
import conftest  # pylint: disable=g-bad-import-order


def test_parse_mesh():
  assert compile_check.parse_mesh('1,64,1') == dict(data=1, fsdp=64, tensor=1)
  with pytest.raises(ValueError, match='data,fsdp,tensor'):
    compile_check.parse_mesh('64')
  with pytest.raises(ValueError, match='integers'):
    compile_check.parse_mesh('1,x,1')


def test_analytic_report_for_vit_b_with_t5():
  config = vit_b.get_config()  # row 14 with the frozen T5-XXL: the paper's ITIT-B
  mesh = partitioning.abstract_mesh(dict(data=1, fsdp=64, tensor=1), 64)
  report = compile_check.check(config, mesh, compile_step=False, frozen_dtype=jnp.bfloat16)
  assert report['losses'] == ['i2t', 'i2t2i', 't2i', 't2i2t']
  trained = report['params_trained']
  assert 200e6 < trained < 260e6  # ITIT-B: the paper's 221M plus the T5-feature projection
  assert report['params_total'] - trained > 4.7e9  # the frozen T5-XXL encoder
  # Every parameter is sharded over the 64 devices (only rounding up of uneven shards adds).
  assert report['unsharded_params'] == []
  assert trained * 4 / 64 <= report['param_bytes'] <= trained * 4 / 64 * 1.05
  frozen = report['params_total'] - trained
  assert frozen * 2 / 64 <= report['frozen_bytes'] <= frozen * 2 / 64 * 1.05
  # 1024 paired examples (16 rows per device of tokens + text ids), 512 unpaired images (8
  # rows of tokens) and 512 unpaired texts (8 rows of ids), int32, over 64 devices.
  assert report['batch_bytes'] == (16 * (256 + 64) + 8 * 256 + 8 * 64) * 4
  text = compile_check.format_report(report)
  assert 'optimizer state' in text and 'H100 80 GB yes' in text


def test_batch_must_divide_by_the_data_parallel_size():
  config = vit_b.get_config()
  config.batch.paired = 100
  mesh = partitioning.abstract_mesh(dict(data=1, fsdp=64, tensor=1), 64)
  with pytest.raises(ValueError, match='batch.paired=100'):
    compile_check.check(config, mesh, compile_step=False)


@pytest.mark.slow
def test_compiles_row14_for_eight_devices(tmp_path):
  """The command line, compiling the tiny config's full step for a (2,2,2) mesh (minutes)."""
  report_path = os.path.join(tmp_path, 'report.json')
  env = conftest.repo_env(XLA_FLAGS='--xla_backend_optimization_level=0', JAX_PLATFORMS='cpu')
  batch = [f'--config.batch.{s}=8' for s in ('paired', 'unpaired_image', 'unpaired_text')]
  result = subprocess.run(
      [sys.executable, '-m', 'itit.compile_check', '--config=configs/tiny.py', '--devices=8',
       '--mesh=2,2,2', f'--json={report_path}', *batch],
      env=env, capture_output=True, text=True, timeout=1200,
      cwd=conftest.REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(report_path) as f:
    report = json.load(f)
  assert report['devices'] == 8 and report['losses'] == ['i2t', 'i2t2i', 't2i', 't2i2t']
  assert report['temp_bytes'] > 0
  # The donated state is an argument aliased to the output; it holds params and optimizer state
  # (XLA may keep a few hundred bytes of small leaves, e.g. step counters, out of the aliasing).
  state_bytes = report['param_bytes'] + report['opt_state_bytes']
  assert state_bytes * 0.99 <= report['alias_bytes']
  assert report['peak_bytes'] >= report['argument_bytes'] + report['temp_bytes']
  assert 'XLA temporaries' in result.stdout

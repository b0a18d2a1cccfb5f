"""Scalars to TensorBoard (tensorboardX) and a JSONL file, images as PNG, a progress line with ETA.

Only process 0 writes; other processes get a writer that does nothing, so call sites need no
`if jax.process_index() == 0`.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Mapping

import jax
import numpy as np


class MetricWriter:
  """Writes `{name: scalar}` per step to `workdir/metrics.jsonl` and TensorBoard event files."""

  def __init__(self, workdir: str, *, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.workdir = workdir
    self._tb = None
    self._jsonl = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      from tensorboardX import SummaryWriter  # imported lazily: it is slow to import
      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))
      self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    values = {k: float(v) for k, v in scalars.items()}
    for name, value in values.items():
      self._tb.add_scalar(name, value, step)
    self._jsonl.write(json.dumps({'step': int(step), **values}) + '\n')
    self._jsonl.flush()

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """images: name -> uint8 [H, W, 3]; also saved as `workdir/images/{name}_{step}.png`."""
    if not self.enabled:
      return
    from PIL import Image
    folder = os.path.join(self.workdir, 'images')
    os.makedirs(folder, exist_ok=True)
    for name, image in images.items():
      self._tb.add_image(name, np.asarray(image), step, dataformats='HWC')
      Image.fromarray(np.asarray(image)).save(os.path.join(folder, f'{name}_{step}.png'))

  def write_text(self, step: int, name: str, text: str) -> None:
    """Markdown text under `name` in TensorBoard's text tab."""
    if self.enabled:
      self._tb.add_text(name, text, step)

  def flush(self) -> None:
    if self.enabled:
      self._tb.flush()
      self._jsonl.flush()

  def close(self) -> None:
    if self.enabled:
      self._tb.close()
      self._jsonl.close()


def format_duration(seconds: float) -> str:
  seconds = max(0, int(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f'{hours}h{minutes:02d}m' if hours else f'{minutes}m{seconds:02d}s'


class Progress:
  """One status line per report: step/total, rate, ETA and chosen metrics.

  The rate is measured from the first report after `start` so that compilation does not
  distort the ETA.
  """

  def __init__(self, total_steps: int, first_step: int = 0, stream=sys.stdout):
    self.total_steps = total_steps
    self.stream = stream
    self._t0 = None
    self._step0 = first_step

  def report(self, step: int, metrics: Mapping[str, float] | None = None) -> str:
    now = time.perf_counter()
    if self._t0 is None:
      self._t0, self._step0 = now, step
      rate_text, eta = '? steps/s', '?'  # the rate needs a second report
    else:
      rate = (step - self._step0) / max(now - self._t0, 1e-9)
      rate_text = f'{rate:.2f} steps/s'
      eta = format_duration((self.total_steps - step) / rate) if rate > 0 else '?'
    fields = ' '.join(f'{k}={v:.4g}' for k, v in (metrics or {}).items())
    line = (f'[{step}/{self.total_steps} {100.0 * step / max(self.total_steps, 1):5.1f}%] '
            f'{rate_text}, ETA {eta}  {fields}')
    if jax.process_index() == 0:
      print(line, file=self.stream, flush=True)
    return line

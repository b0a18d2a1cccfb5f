"""Scalars to TensorBoard (tensorboardX) and a JSONL file, images as PNG, a progress line with ETA.

Only process 0 writes; other processes get a writer that does nothing, so call sites need no
`if jax.process_index() == 0`.

TensorBoard events are written and flushed in the calling thread (tensorboardX's synchronous
`EventsWriter`), not by `SummaryWriter`'s worker thread, which flushes on its own clock: a full
disk there printed a thread traceback and lost the events, while here it raises the `OSError`
where the training loop turns it into one `disk full` line.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time
import types
from typing import Mapping
import uuid

import jax
import numpy as np


@functools.cache
def _tensorboardx() -> types.SimpleNamespace:
  """tensorboardX's pieces, imported on first use: the package is slow to import."""
  from tensorboardX import event_file_writer, summary  # pylint: disable=g-import-not-at-top
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  return types.SimpleNamespace(EventsWriter=event_file_writer.EventsWriter, summary=summary,
                               Event=event_pb2.Event)


class MetricWriter:
  """Writes `{name: scalar}` per step to `workdir/metrics.jsonl` and TensorBoard event files."""

  def __init__(self, workdir: str, *, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.workdir = workdir
    self._tb = None
    self._jsonl = None
    if self.enabled:
      os.makedirs(os.path.join(workdir, 'tensorboard'), exist_ok=True)
      # A new events file per writer (a resumed run adds one), named as SummaryWriter names
      # them (the time in seconds and the host) plus a random suffix: a writer opened in the
      # same second would otherwise truncate the other's file.
      self._tb = _tensorboardx().EventsWriter(os.path.join(workdir, 'tensorboard', 'events'),
                                              filename_suffix=f'.{uuid.uuid4().hex[:8]}')
      self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')

  def _write_summaries(self, step: int, summaries) -> None:
    """Writes tensorboardX `Summary` protos at `step` and flushes the events file."""
    for summary in summaries:
      self._tb.write_event(_tensorboardx().Event(summary=summary, step=int(step),
                                                 wall_time=time.time()))
    self._tb.flush()

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    values = {k: float(v) for k, v in scalars.items()}
    self._write_summaries(step, [_tensorboardx().summary.scalar(name, value)
                                 for name, value in values.items()])
    self._jsonl.write(json.dumps({'step': int(step), **values}) + '\n')
    self._jsonl.flush()

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """images: name -> uint8 [H, W, 3]; also saved as `workdir/images/{name}_{step}.png`."""
    if not self.enabled:
      return
    from PIL import Image
    folder = os.path.join(self.workdir, 'images')
    os.makedirs(folder, exist_ok=True)
    self._write_summaries(step, [
        _tensorboardx().summary.image(name, np.asarray(image), dataformats='HWC')
        for name, image in images.items()])
    for name, image in images.items():
      Image.fromarray(np.asarray(image)).save(os.path.join(folder, f'{name}_{step}.png'))

  def write_text(self, step: int, name: str, text: str) -> None:
    """Markdown text under `name` in TensorBoard's text tab."""
    if self.enabled:
      self._write_summaries(step, [_tensorboardx().summary.text(name, text)])

  def flush(self) -> None:
    if self.enabled:
      self._tb.flush()
      self._jsonl.flush()

  def close(self) -> None:
    """Flushes and closes the files; closing again does nothing (a preempted loop closes the
    writer before its `finally` does)."""
    if self.enabled and self._tb is not None:
      self._tb.close()
      self._jsonl.close()
      self._tb = self._jsonl = None


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

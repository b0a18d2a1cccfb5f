"""MaskGIT mask schedules: how many image tokens are still masked after each decoding step.

A schedule is a decreasing function r(p) of the decoding progress p in [0, 1] with r(0) = 1 and
r(1) = 0: after step t of T (counted from 0) about N * r((t + 1) / T) of the N tokens that were
unknown at the start are still masked. `masked_counts` turns it into the exact integer sequence
that `itit.decoding.parallel.parallel_decode` follows, using MaskGIT's rounding and clamping rule.

Everything here runs on the host in float64 numpy: the counts are static data of a decode loop
(a table built once per `(num_tokens, num_steps, schedule)`), never traced values.
"""
from __future__ import annotations

import numpy as np

SCHEDULES = ('cosine', 'linear', 'square')

# N * r(p) is floored; for rational points such as N * (1 - 1/3) float64 can land just below the
# exact integer, and this guard keeps the floor exact there without moving any other value.
_FLOOR_GUARD = 1e-9


def cosine_ratio(progress):
  """MaskGIT's default and the paper's choice: r(p) = cos(pi/2 * p).

  Few tokens are committed early, when the model knows least, and many late.
  """
  return np.cos(0.5 * np.pi * np.asarray(progress, np.float64))


def linear_ratio(progress):
  """r(p) = 1 - p: the same number of tokens committed at every step."""
  return 1.0 - np.asarray(progress, np.float64)


def square_ratio(progress):
  """r(p) = 1 - p^2: near cosine (1 - 1.23 p^2 at small p), committing slightly fewer early."""
  return 1.0 - np.square(np.asarray(progress, np.float64))


_RATIOS = {'cosine': cosine_ratio, 'linear': linear_ratio, 'square': square_ratio}


def mask_ratio(progress, schedule: str = 'cosine'):
  """Fraction of the initially unknown tokens still masked at `progress` in [0, 1] (float64)."""
  if schedule not in _RATIOS:
    raise ValueError(f'mask schedule must be one of {SCHEDULES}, got {schedule!r}.')
  return np.clip(_RATIOS[schedule](progress), 0.0, 1.0)


def masked_counts(num_unknown, num_steps: int, schedule: str = 'cosine') -> np.ndarray:
  """Exact number of tokens still masked after each of `num_steps` decoding steps.

  For step t (0-based) with c_{-1} = num_unknown:
    c_t = 0                                                  if t = num_steps - 1,
    c_t = min(c_{t-1}, max(1, min(c_{t-1} - 1, floor(num_unknown * r((t + 1) / num_steps)))))
                                                             otherwise.
  That is MaskGIT's rule: every step but the last reveals at least one token and keeps at least
  one masked (so the schedule never finishes early), and the last step reveals the rest, so
  exactly 0 remain. A row with nothing unknown stays at 0.

  Args:
    num_unknown: int or int array [...]: tokens unknown before the first step.
    num_steps: number of decoding steps T >= 1.
    schedule: one of SCHEDULES.

  Returns:
    int32 array [..., num_steps].
  """
  if num_steps < 1:
    raise ValueError(f'num_steps must be >= 1, got {num_steps}.')
  num_unknown = np.asarray(num_unknown, np.int64)
  if np.any(num_unknown < 0):
    raise ValueError(f'num_unknown must be >= 0, got {num_unknown}.')
  progress = np.arange(1, num_steps + 1, dtype=np.float64) / num_steps
  ratios = mask_ratio(progress, schedule)
  counts = []
  previous = num_unknown
  for step in range(num_steps):
    if step == num_steps - 1:
      count = np.zeros_like(num_unknown)
    else:
      target = np.floor(num_unknown * ratios[step] + _FLOOR_GUARD).astype(np.int64)
      count = np.minimum(previous, np.maximum(1, np.minimum(previous - 1, target)))
    counts.append(count)
    previous = count
  return np.stack(counts, axis=-1).astype(np.int32)

"""What can go wrong with a checkpoint on disk, found and reported in one line.

Damage: an Orbax step folder (checkpoints/<step>/) holds `_CHECKPOINT_METADATA` (which lists its
items), and one folder per item: `state/` (OCDBT: `manifest.ocdbt`, `_METADATA` with the tree,
data files under `d/` and `ocdbt.process_<i>/d/`), `meta/metadata` (JSON) and
`data_<stream>/process_<i>-of-<n>.json` (the grain iterator state). Orbax only skips folders it
never finished (`<step>.orbax-checkpoint-tmp*`); a finished step that was later truncated, lost a
file or its metadata (a full disk during a copy, a partial rsync, a bad disk) is listed like any
other, and restoring it fails deep inside TensorStore. A step is intact when its
`_CHECKPOINT_METADATA` and item folders exist (`quick_damage`, cheap) and its items read back as
they were saved, with no target layout (`read_damage`: the JSON files parsed, the state read to
host numpy). That check is independent of the config, so a restore that fails because the config
differs (another optimizer, another mesh) is not mistaken for damage. A damaged step is moved to
checkpoints/damaged/<step>-<what>, never deleted, where Orbax does not see it as a step.

Disk full: TensorStore reports ENOSPC as `ValueError: RESOURCE_EXHAUSTED ... No space left on
device [os_error_code='28']`, from Orbax's background threads, which also log it (with a
traceback) once per thread; `is_disk_full` recognises it anywhere in an exception's chain, and
`install_noise_filters` keeps those logs and TensorStore's late tracebacks off stderr since the
caller reports it in one line.
"""
from __future__ import annotations

import contextlib
import errno
import gc
import json
import logging
import os
import re
import sys
import threading
import time
import warnings

import jax
import numpy as np
from etils import epath
import orbax.checkpoint as ocp

DAMAGED = 'damaged'  # checkpoints/damaged/<step>-<what>: damaged steps, out of Orbax's way
CHECKPOINT_METADATA = '_CHECKPOINT_METADATA'

_DISK_FULL = re.compile(r"No space left on device|Disk quota exceeded|os_error_code='?(28|122)\b")
_MISSING = re.compile(r'NOT_FOUND|does not exist|not found|No such file', re.IGNORECASE)
_TRUNCATED = re.compile(r'OUT_OF_RANGE|DATA_LOSS|Truncated|Invalid JSON|Unexpected end')
# What reading a damaged file raises (TensorStore: ValueError; JSON: JSONDecodeError, a
# ValueError; a missing file or item: FileNotFoundError, KeyError). Anything else is a bug.
_READ_ERRORS = (OSError, ValueError, KeyError)
_NEVER_RETRIEVED = re.compile(r'\w*\s?exception was never retrieved')  # Task, Future, ...
# A TensorStore error (its status code first), as Orbax's reads and writes raise them.
_TENSORSTORE_ERROR = re.compile(r'^[A-Z_]+: .* (OCDBT database|local file) ')


def quick_damage(step_dir: str) -> tuple[str, str] | None:
  """(slug, what is wrong) when `_CHECKPOINT_METADATA` or an item folder it lists is missing or
  unreadable; None otherwise. Reads one small JSON file."""
  path = os.path.join(step_dir, CHECKPOINT_METADATA)
  if not os.path.isfile(path):
    return 'missing-metadata', f'{CHECKPOINT_METADATA} is missing'
  try:
    with open(path) as f:
      items = json.load(f).get('item_handlers') or {}
  except (OSError, ValueError, AttributeError):
    return 'truncated-metadata', f'{CHECKPOINT_METADATA} is not readable JSON (truncated?)'
  for item in sorted(items if isinstance(items, dict) else ()):
    if not os.path.isdir(os.path.join(step_dir, item)):
      return f'missing-{item}', f'its item folder {item}/ is missing'
  return None


def read_damage(step_dir: str, items) -> tuple[str, str] | None:
  """(slug, what is wrong) for the first of `items` ('state', 'meta', 'data_<stream>') that does
  not read back as saved; None when all do. Reads the whole state into host memory."""
  for item in items:
    path = os.path.join(step_dir, item)
    try:
      if item == 'state':
        _read_state(path)
      elif item == 'meta':
        _read_json(os.path.join(path, 'metadata'))
      elif item.startswith('data_'):
        name = f'process_{jax.process_index()}-of-{jax.process_count()}.json'
        _read_json(os.path.join(path, name))
    except _READ_ERRORS as e:
      return describe(item, e, step_dir)
  return None


def _read_json(path: str) -> None:
  with open(path) as f:
    json.load(f)


def _read_state(path: str) -> None:
  """Reads every array of an Orbax StandardSave item into host numpy and drops it."""
  tree = ocp.StandardCheckpointHandler().metadata(epath.Path(path)).tree
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  with ocp.PyTreeCheckpointer() as checkpointer:
    checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))


def describe(item: str, error: BaseException, step_dir: str) -> tuple[str, str]:
  """(slug, one-line reason) of a read error of `item`: 'missing', 'truncated' or 'unreadable',
  with the innermost message, TensorStore's spec dump cut off."""
  innermost = error
  for cause in error_chain(error):
    innermost = cause
  text = str(innermost.args[0] if isinstance(innermost, KeyError) and innermost.args
             else innermost)
  text = re.split(r' ?\[tensorstore_spec| See full TensorStore', text)[0]
  text = ' '.join(text.replace(step_dir.rstrip('/') + '/', '').split())
  text = text if len(text) <= 200 else text[:197] + '...'
  if isinstance(innermost, (FileNotFoundError, KeyError)) or _MISSING.search(text):
    kind = 'missing'
  elif isinstance(innermost, json.JSONDecodeError) or _TRUNCATED.search(text):
    kind = 'truncated'
  else:
    kind = 'unreadable'
  return f'{kind}-{item}', f'{item}/ {kind}: {text}'


def move_aside(directory: str, step: int, slug: str) -> str:
  """Moves checkpoints/<step> to checkpoints/damaged/<step>-<slug> (numbered if taken)."""
  target = os.path.join(directory, DAMAGED, f'{step}-{slug}')
  candidate, number = target, 2
  while os.path.lexists(candidate):
    candidate, number = f'{target}-{number}', number + 1
  os.makedirs(os.path.dirname(candidate), exist_ok=True)
  os.rename(os.path.join(directory, str(step)), candidate)
  return candidate


def damaged_names(directory: str) -> list[str]:
  """The entries of checkpoints/damaged/, by step ([] when there is none)."""
  folder = os.path.join(directory, DAMAGED)
  names = os.listdir(folder) if os.path.isdir(folder) else []
  return sorted(names, key=lambda n: (int(n.split('-')[0]) if n.split('-')[0].isdigit() else -1,
                                      n))


@contextlib.contextmanager
def quiet_failed_reads(settle_s: float = 0.5, max_wait_s: float = 10.0):
  """Keeps a failed Orbax restore's leftovers off stderr: its unawaited array-read coroutines
  ('Exception ignored in: <coroutine ...>', 'RuntimeWarning: coroutine ... was never awaited'),
  its tasks' and futures' '... exception was never retrieved' and, from TensorStore's threads, one 'RuntimeError: Event loop is closed' traceback per read
  still in flight when Orbax closed its event loop. Dozens of tracebacks would bury the one
  warning line. When anything was dropped, waits (at most `max_wait_s`) until none came for
  `settle_s`, so the late ones are dropped too. Other reports pass."""
  previous = sys.unraisablehook
  dropped = []

  def hook(unraisable):
    code = getattr(unraisable.object, 'cr_code', None)
    if (code is not None and 'orbax' in code.co_filename) or _closed_loop_callback(unraisable):
      dropped.append(time.monotonic())
      return
    previous(unraisable)

  asyncio_logger = logging.getLogger('asyncio')
  task_noise = _TaskNoise(dropped)
  sys.unraisablehook = hook
  asyncio_logger.addFilter(task_noise)
  with warnings.catch_warnings():
    warnings.filterwarnings('ignore', r"coroutine '.*' was never awaited", RuntimeWarning)
    try:
      yield
    finally:
      gc.collect()  # the failed reads' coroutines and tasks are reported when collected
      start = time.monotonic()
      while dropped and time.monotonic() - start < max_wait_s:
        if time.monotonic() - dropped[-1] >= settle_s:
          break
        time.sleep(0.05)
        gc.collect()
      sys.unraisablehook = previous
      asyncio_logger.removeFilter(task_noise)


class _TaskNoise(logging.Filter):
  """asyncio's 'Task / Future exception was never retrieved' of a failed checkpoint read."""

  def __init__(self, dropped: list):
    super().__init__()
    self.dropped = dropped

  def filter(self, record: logging.LogRecord) -> bool:
    if _NEVER_RETRIEVED.match(record.getMessage()):
      self.dropped.append(time.monotonic())
      return False
    return True


def error_chain(error: BaseException | None):
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def is_disk_full(error: BaseException) -> bool:
  """Whether ENOSPC / EDQUOT is anywhere in `error`'s chain, as an OSError or in the text
  TensorStore and Orbax wrap it into."""
  return any((isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT))
             or _DISK_FULL.search(str(e)) for e in error_chain(error))


class OrbaxNoise(logging.Filter):
  """Drops Orbax's log records of what the caller reports in one line: a disk-full error (Orbax
  logs it with a traceback once per background thread before it reaches the caller), asyncio's
  'exception was never retrieved' of a failed TensorStore read or write (left over by a failed
  restore of a damaged step), and a step without `_CHECKPOINT_METADATA` (reported as damaged)."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    error = record.exc_info[1] if record.exc_info else None
    if _DISK_FULL.search(message) or (error is not None and is_disk_full(error)):
      return False
    if _NEVER_RETRIEVED.match(message) and error is not None and any(
        _TENSORSTORE_ERROR.match(str(e)) for e in error_chain(error)):
      return False  # a failed read or write of a checkpoint, reported by its caller
    return not (message.startswith('Metadata file does not exist') and
                message.endswith(CHECKPOINT_METADATA))


def install_noise_filters() -> None:
  """Once per process: `OrbaxNoise` on the absl logger (through which Orbax logs) and the
  asyncio logger (Orbax's failed tasks), and an unraisable hook that drops TensorStore's
  'RuntimeError: Event loop is closed' tracebacks.

  Those come when an Orbax save or restore fails (a full disk, a damaged file): Orbax closes its
  event loop while TensorStore still has reads or writes in flight, and each one's completion
  callback prints a traceback, one per array, for seconds after the failure, interleaved with
  the one line that reports it. Every other unraisable exception goes to the previous hook.
  """
  for name in ('absl', 'asyncio'):  # asyncio: 'Task exception was never retrieved'
    logger = logging.getLogger(name)
    if not any(isinstance(f, OrbaxNoise) for f in logger.filters):
      logger.addFilter(OrbaxNoise())
  if getattr(sys.unraisablehook, 'drops_closed_loop_callbacks', False):
    return
  previous = sys.unraisablehook

  def hook(unraisable):
    if not _closed_loop_callback(unraisable):
      previous(unraisable)

  hook.drops_closed_loop_callbacks = True
  sys.unraisablehook = hook


def _closed_loop_callback(unraisable) -> bool:
  return (isinstance(unraisable.exc_value, RuntimeError) and
          str(unraisable.exc_value) == 'Event loop is closed')


def join_orbax_threads(timeout_s: float = 60.0) -> None:
  """Waits (at most `timeout_s` in all) for Orbax's background save threads to end."""
  deadline = time.monotonic() + timeout_s
  for thread in threading.enumerate():
    if thread is not threading.current_thread() and type(thread).__module__.startswith('orbax'):
      thread.join(max(0.0, deadline - time.monotonic()))


def tree_bytes(tree) -> int:
  """Bytes of every array of a pytree (global shapes): what one checkpoint of it writes,
  before compression."""
  return sum(int(getattr(leaf, 'nbytes', 0)) for leaf in jax.tree.leaves(tree))


def folder_bytes(folder: str) -> int:
  """The bytes of the files under `folder`."""
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(folder) for name in names)


def human_bytes(n: float) -> str:
  for unit in ('B', 'kB', 'MB', 'GB', 'TB'):
    if n < 1000 or unit == 'TB':
      return f'{n:.0f} {unit}' if unit == 'B' else f'{n:.1f} {unit}'
    n /= 1000
  return f'{n} B'

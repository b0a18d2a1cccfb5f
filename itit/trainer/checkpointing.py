"""Orbax checkpoints of the whole training state AND the input iterators.

One checkpoint step holds:
  state      the train state pytree (params, optimizer state, step, RNG, counters), sharded
  meta       JSON: the config, identities of the data and tokenizers, anything to check on resume
  data_<s>   the grain iterator state of input stream <s>, one file per process
Orbax writes each step to a temporary folder and renames it when complete, so a run killed during
a save restarts from the last COMPLETE step. A complete step damaged later (a truncated or missing
file, missing metadata) is found when it is restored, moved to checkpoints/damaged/<step>-<what>
with one warning line, and the next older step is used (`checkpoint_faults`); training never
starts from scratch over damaged checkpoints. A disk that fills up during a save is one
`DiskFullError` line; the partial step is removed and the earlier steps stay intact.
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import re
import shutil
import sys
from typing import Any, Callable, Mapping

from etils import epath
import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from itit import errors
from itit.trainer import checkpoint_faults


class DiskFullError(errors.UserError):
  """The disk filled up while a checkpoint was written."""


class Checkpointer:
  """A CheckpointManager with the item layout above."""

  def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    checkpoint_faults.install_noise_filters()
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save))
    self._state_bytes = 0
    self._saving = None  # the step of the last save started
    self._failed = False

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, meta: Mapping[str, Any],
           iterators: Mapping[str, Any] | None = None, *, force: bool = False) -> bool:
    items = dict(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta)))
    for name, iterator in (iterators or {}).items():
      items[f'data_{name}'] = grain.checkpoint.CheckpointSave(iterator)
    self._state_bytes = checkpoint_faults.tree_bytes(state)
    with self._disk_full_guard():  # a full disk surfaces here or at the next save / wait
      self._saving = step
      return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore_latest(self, abstract_state: Any, iterators: Mapping[str, Any] | None = None,
                     check_meta: Callable[[dict], None] | None = None) -> tuple[int, Any] | None:
    """(step, state) of the newest intact checkpoint; None when the folder holds none at all.

    `check_meta(meta)` runs on each candidate's meta before its state is restored (the resume
    checks; their UserError propagates). A damaged step is moved aside with one warning line and
    the next older one is tried; when no step is intact (or only damaged ones were ever found
    here) a one-line `CorruptFileError` lists them, so a run never starts again from scratch over
    its damaged checkpoints.
    """
    def read(step):
      meta = self.restore_meta(step)
      if check_meta is not None:
        check_meta(meta)
      return self.restore(step, abstract_state, iterators)[0]

    steps = self.manager.all_steps()
    found, state, damaged = _newest_intact(self.directory, steps, read)
    if jax.process_count() > 1:  # also the barrier after process 0's moves
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      everyone = multihost_utils.process_allgather(np.int64(-1 if found is None else found))
      if len(set(np.asarray(everyone).tolist())) > 1:  # damage in one process's files only
        raise errors.CorruptFileError(
            f'the processes found different newest intact checkpoints in {self.directory} '
            f'(steps {sorted(set(np.asarray(everyone).tolist()))}, -1: none); the damaged ones '
            'are moved aside now: re-run the same command')
    if damaged:
      self.manager.reload()
    if found is None and (steps or checkpoint_faults.damaged_names(self.directory)):
      raise errors.CorruptFileError(
          _no_intact_message(self.directory, damaged) + '; training does not start from scratch '
          f'over them: restore {self.directory} from a copy, or move it away to start over')
    return None if found is None else (found, state)

  def restore_meta(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def restore(self, step: int, abstract_state: Any,
              iterators: Mapping[str, Any] | None = None) -> tuple[Any, dict]:
    """abstract_state: jax.ShapeDtypeStruct tree WITH shardings (the target layout).

    Restoring into a different mesh than the one that saved works: Orbax reads each shard for
    the target sharding. Iterators are restored in place.
    """
    saved_tree = self.check_params_fit(step, abstract_state)
    # A state field added since the checkpoint was written (TrainState.pseudo_pairs) is absent
    # from its tree: restore the fields it has, the new ones keep their empty (None) value.
    target = abstract_state
    absent = [f.name for f in dataclasses.fields(abstract_state) if f.name not in saved_tree
              ] if dataclasses.is_dataclass(abstract_state) else []
    if absent:
      wanted = [name for name in absent if getattr(abstract_state, name) is not None]
      if wanted:
        raise errors.UserError(
            f'the checkpoint at step {step} in {self.directory} predates the state fields '
            f'{wanted} this config needs; resume with the config it was trained with '
            '(config.json next to checkpoints/), or use a new workdir')
      target = {f.name: getattr(abstract_state, f.name) for f in dataclasses.fields(abstract_state)
                if f.name in saved_tree}
    items = dict(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
    for name, iterator in (iterators or {}).items():
      items[f'data_{name}'] = grain.checkpoint.CheckpointRestore(iterator)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    state = restored['state']
    return (abstract_state.replace(**state) if absent else state), restored['meta']

  def check_params_fit(self, step: int, abstract_state: Any) -> dict:
    """Raises a one-line UserError naming every parameter whose name or shape differs; returns
    the checkpoint's state tree metadata.

    Reads only the checkpoint's metadata, so a run started with another model config (another
    width, depth or vocabulary) is told what differs instead of getting Orbax's shape error.
    """
    saved_tree = ocp.StandardCheckpointHandler().metadata(
        epath.Path(self.directory) / str(step) / 'state').tree
    saved = leaf_shapes(saved_tree.get('params', {}))
    wanted = leaf_shapes(abstract_state.params)
    problems = [f'{k} is not in this model' for k in sorted(set(saved) - set(wanted))]
    problems += [f'{k} is missing' for k in sorted(set(wanted) - set(saved))]
    problems += [f'{k} saved {saved[k]}, this config {shape}'
                 for k, shape in sorted(wanted.items()) if k in saved and saved[k] != shape]
    if problems:
      more = f' (+{len(problems) - 4} more)' if len(problems) > 4 else ''
      raise errors.UserError(
          f'the checkpoint at step {step} in {self.directory} does not fit this model config: '
          f'{len(problems)} parameters differ: {"; ".join(problems[:4])}{more}. Resume with the '
          f'config it was trained with (config.json next to checkpoints/), or use a new workdir')
    return saved_tree

  def wait(self) -> None:
    with self._disk_full_guard():
      self.manager.wait_until_finished()

  def close(self) -> None:
    if self._failed:  # a save failed: its error was raised already
      with contextlib.suppress(Exception):
        self.manager.close()
      return
    with self._disk_full_guard():
      self.manager.wait_until_finished()
    self.manager.close()

  @contextlib.contextmanager
  def _disk_full_guard(self):
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      if self._failed or not checkpoint_faults.is_disk_full(e):
        raise
      self._failed = True
      raise self._disk_full_error(e) from None

  def _disk_full_error(self, error: BaseException) -> DiskFullError:
    """Removes the partial step folder and says what a checkpoint needs and what is free."""
    chain_text = ' '.join(str(e) for e in checkpoint_faults.error_chain(error))
    match = re.search(r'/(\d+)\.orbax-checkpoint-tmp', chain_text)
    step = int(match.group(1)) if match else self._saving
    with contextlib.suppress(Exception):
      self.manager.wait_until_finished()
    # Orbax raises at the first failed write; the item writes still running would recreate the
    # partial folder after it is removed (and log at interpreter exit): let them end first.
    checkpoint_faults.join_orbax_threads()
    if jax.process_index() == 0:
      for partial in glob.glob(os.path.join(self.directory, '*.orbax-checkpoint-tmp*')):
        shutil.rmtree(partial, ignore_errors=True)
    with contextlib.suppress(Exception):
      self.manager.reload()
    kept = sorted(self.manager.all_steps())
    free = shutil.disk_usage(self.directory).free
    size = checkpoint_faults.human_bytes
    if kept:  # the newest kept step on disk: the state's bytes plus Orbax's metadata
      needed = checkpoint_faults.folder_bytes(os.path.join(self.directory, str(kept[-1])))
      needed = f'about {size(max(needed, self._state_bytes))} (as step {kept[-1]} on disk)'
      plural = 's' if len(kept) > 1 else ''
      earlier = (f'the earlier checkpoint{plural} (step{plural} {", ".join(map(str, kept))}) '
                 f'{"are" if plural else "is"} intact and the run resumes from step {kept[-1]}')
    else:
      needed = f"about {size(self._state_bytes)} (the train state's bytes)"
      earlier = 'there is no earlier checkpoint: the run starts again from step 0'
    return DiskFullError(
        f'disk full: the checkpoint of step {step} does not fit in {self.directory}: one needs '
        f'{needed} and {size(free)} are free. Free space (or lower --config.keep_checkpoints) '
        f'and re-run the same command: {earlier}')


def load_params(workdir: str, step: int | None = None) -> tuple[Any, int]:
  """The model parameters of a training workdir's checkpoint (latest by default), on the host.

  Returns (params, step). For sampling and evaluation on one host; training restores the full
  sharded state through `Checkpointer.restore`. A damaged step is moved aside with one warning
  line and the next older one is used (with `step` given: a one-line `CorruptFileError`).
  """
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  checkpoint_faults.install_noise_filters()
  manager = ocp.CheckpointManager(directory)
  try:
    steps = manager.all_steps()
    if step is not None and step not in steps:
      raise errors.MissingFileError(f'{directory} has no checkpoint of step {step}; its steps are '
                                    f'{", ".join(map(str, sorted(steps))) or "none"}')

    def read(s):
      args = ocp.args.Composite(state=ocp.args.StandardRestore())
      return manager.restore(s, args=args)['state']['params']

    found, params, damaged = _newest_intact(directory, [step] if step is not None else steps,
                                            read, items=('state',))
  finally:
    manager.close()
  if found is not None:
    return params, found
  if step is not None:
    raise errors.CorruptFileError(
        f'checkpoint step {step} in {directory} is damaged (the warning above says how); pass '
        'another --step, or none for the newest intact step')
  if damaged or checkpoint_faults.damaged_names(directory):
    raise errors.CorruptFileError(_no_intact_message(directory, damaged) +
                                  f'; restore {directory} from a copy')
  raise FileNotFoundError(f'no checkpoint in {directory}: train first (python -m itit.train)')


def _item_names(step_dir: str) -> list[str]:
  """The item folders of a step, cheapest to check first (meta, iterators, then the state)."""
  names = [n for n in os.listdir(step_dir) if os.path.isdir(os.path.join(step_dir, n))]
  return sorted(names, key=lambda n: (n == 'state', n))


def _newest_intact(directory: str, steps, read: Callable[[int], Any],
                   items=None) -> tuple[int | None, Any, list[int]]:
  """(step, read(step), damaged steps) for the newest of `steps` that is intact; (None, None,
  damaged) when none is. `items`: what `read` reads (default: every item of the step).

  A step is damaged when `quick_damage` finds a problem, or when `read` fails (anything but a
  UserError) AND `read_damage` confirms it; a failure on an intact step (a config that does not
  fit) is re-raised. Each damaged step is moved to damaged/ with one warning line.
  """
  damaged = []
  for step in sorted(steps, reverse=True):
    step_dir = os.path.join(directory, str(step))
    problem = checkpoint_faults.quick_damage(step_dir)
    if problem is None:
      with checkpoint_faults.quiet_failed_reads():
        try:
          return step, read(step), damaged
        except errors.UserError:
          raise
        except Exception as e:  # pylint: disable=broad-except
          failure = e
        problem = checkpoint_faults.read_damage(step_dir, items or _item_names(step_dir))
        if problem is None:
          raise failure
        del failure  # its frames hold the failed reads' coroutines: collected while quiet
    damaged.append(step)
    _set_aside(directory, step, *problem)
  return None, None, damaged


def _set_aside(directory: str, step: int, slug: str, reason: str) -> None:
  """Moves a damaged step to damaged/ (process 0) and prints one warning line."""
  if jax.process_index() != 0:
    return
  try:
    where = f'moved it to {checkpoint_faults.move_aside(directory, step, slug)}'
  except OSError as e:
    where = f'could not move it aside ({e.strerror or e})'
  print(f'warning: checkpoint step {step} in {directory} is damaged ({reason}); {where}; '
        'falling back to the newest intact step', file=sys.stderr, flush=True)


def _no_intact_message(directory: str, damaged: list[int]) -> str:
  names = checkpoint_faults.damaged_names(directory)
  found = f'steps {", ".join(map(str, sorted(damaged)))} are damaged' if damaged else ''
  aside = f'set aside in {os.path.join(directory, checkpoint_faults.DAMAGED)}: {", ".join(names)}'
  return (f'no intact checkpoint in {directory}: ' +
          '; '.join(part for part in (found, aside if names else '') if part))


def all_steps(workdir: str) -> list[int]:
  """The steps of a training workdir's kept checkpoints, ascending ([] when it has none)."""
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  if not os.path.isdir(directory):
    return []
  manager = ocp.CheckpointManager(directory)
  steps = sorted(manager.all_steps())
  manager.close()
  return steps


def leaf_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """'encoder/block_0/mlp/kernel' -> shape, for every array of a nested-dict tree."""
  shapes = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    name = '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path)
    shapes[name] = tuple(leaf.shape)
  return shapes


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)

"""Orbax checkpoints of the whole training state AND the input iterators.

One checkpoint step holds:
  state      the train state pytree (params, optimizer state, step, RNG, counters), sharded
  meta       JSON: the config, identities of the data and tokenizers, anything to check on resume
  data_<s>   the grain iterator state of input stream <s>, one file per process
Orbax writes each step to a temporary folder and renames it when complete, so a run killed during
a save restarts from the last COMPLETE step.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from etils import epath
import grain
import jax
import orbax.checkpoint as ocp

from itit import errors


class Checkpointer:
  """A CheckpointManager with the item layout above."""

  def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, meta: Mapping[str, Any],
           iterators: Mapping[str, Any] | None = None, *, force: bool = False) -> bool:
    items = dict(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta)))
    for name, iterator in (iterators or {}).items():
      items[f'data_{name}'] = grain.checkpoint.CheckpointSave(iterator)
    return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore_meta(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def restore(self, step: int, abstract_state: Any,
              iterators: Mapping[str, Any] | None = None) -> tuple[Any, dict]:
    """abstract_state: jax.ShapeDtypeStruct tree WITH shardings (the target layout).

    Restoring into a different mesh than the one that saved works: Orbax reads each shard for
    the target sharding. Iterators are restored in place.
    """
    self.check_params_fit(step, abstract_state)
    items = dict(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
    for name, iterator in (iterators or {}).items():
      items[f'data_{name}'] = grain.checkpoint.CheckpointRestore(iterator)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored['state'], restored['meta']

  def check_params_fit(self, step: int, abstract_state: Any) -> None:
    """Raises a one-line UserError naming every parameter whose name or shape differs.

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

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def load_params(workdir: str, step: int | None = None) -> tuple[Any, int]:
  """The model parameters of a training workdir's checkpoint (latest by default), on the host.

  Returns (params, step). For sampling and evaluation on one host; training restores the full
  sharded state through `Checkpointer.restore`.
  """
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  manager = ocp.CheckpointManager(directory)
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'no checkpoint in {directory}: train first (python -m itit.train)')
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  manager.close()
  return restored['state']['params'], step


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

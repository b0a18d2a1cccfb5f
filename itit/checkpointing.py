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

import grain
import jax
import orbax.checkpoint as ocp


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
    items = dict(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
    for name, iterator in (iterators or {}).items():
      items[f'data_{name}'] = grain.checkpoint.CheckpointRestore(iterator)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored['state'], restored['meta']

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


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)

"""The train state and its layout: initialisation, shardings, and parameters from another run.

`TrainState` is what a checkpoint holds; `state_layout` gives its abstract shapes and shardings
without allocating anything (itit.train, itit.compile_check and the study's cost estimates use
it); a frozen T5 text encoder is never part of it (an input of the train step instead).
"""
from __future__ import annotations

import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from itit.losses import registry
from itit.models import itit as itit_model
from itit.models import t5_loader
from itit.trainer import checkpointing
from itit.trainer import partitioning


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  first_nonfinite_step: jax.Array  # -1 until a step has a non-finite loss or gradient
  skipped_steps: jax.Array  # updates dropped under nan_policy='skip'
  # cycle.reuse > 1: the pseudo pairs the cycles train on until the next synthesis,
  # {cycle loss: {field: [batch, length] int32}} (registry.pseudo_pair_shapes); None otherwise.
  pseudo_pairs: Any = None


def seed_key_data(config) -> jax.Array:
  """The run's root key as raw uint32 data (what `init_train_state` takes): [2] for
  threefry2x32, [4] for rbg and unsafe_rbg."""
  return jax.random.key_data(jax.random.key(config.seed, impl=config.prng_impl))


def init_train_state(config, tx, seed_data: jax.Array) -> TrainState:
  """A fresh state from `seed_key_data(config)`; a frozen T5 encoder is left out of params.

  state.rng is a typed key of `config.prng_impl`: every key the train step derives from it
  (dropout, masks, synthesis) draws its bits with that implementation.
  """
  init_rng, rng = jax.random.split(jax.random.wrap_key_data(seed_data, impl=config.prng_impl))
  params = nn.unbox(itit_model.init_params(config.model, init_rng))
  if config.model.text_encoder.kind == 't5':
    params, _ = t5_loader.split_frozen(params)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=rng, first_nonfinite_step=jnp.full((), -1, jnp.int32),
                    skipped_steps=jnp.zeros((), jnp.int32),
                    pseudo_pairs=initial_pseudo_pairs(config))


def initial_pseudo_pairs(config):
  """TrainState.pseudo_pairs before the first synthesis: zeros of
  `registry.pseudo_pair_shapes(config)`, or None when config.cycle.reuse is 1 (the first cycle
  step always synthesizes, so the zeros are never trained on)."""
  shapes = registry.pseudo_pair_shapes(config)
  if not shapes:
    return None
  return {name: {field: jnp.zeros(shape, jnp.int32) for field, shape in fields.items()}
          for name, fields in shapes.items()}


def full_params(params, frozen):
  """The model's parameter tree: the trained ones plus the frozen text encoder, if any."""
  return params if frozen is None else t5_loader.merge(params, frozen)


def opt_state_shardings(abstract_opt_state, abstract_params, param_shardings, mesh):
  """Optimizer-state leaves shaped like a parameter (momentum) take that parameter's sharding.

  Leaves are matched by tree path suffix and shape; factored or scalar statistics are replicated.
  """
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  by_path = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_params)[0]:
    by_path[tuple(str(k) for k in path)] = leaf.shape
  sharding_by_path = {
      tuple(str(k) for k in path): s
      for path, s in jax.tree_util.tree_flatten_with_path(param_shardings)[0]}

  def pick(path, leaf):
    keys = tuple(str(k) for k in path)
    for start in range(len(keys)):
      suffix = keys[start:]
      if suffix in by_path and by_path[suffix] == leaf.shape:
        return sharding_by_path[suffix]
    return replicated

  return jax.tree_util.tree_map_with_path(pick, abstract_opt_state)


def state_layout(config, tx, mesh, rules) -> tuple[TrainState, TrainState, Any]:
  """(abstract_state, state_shardings, frozen_shardings), from shapes only (nothing allocated).

  frozen_shardings are the frozen T5 encoder's parameter shardings, or None. Initialization
  runs outside the mesh context: its layout comes from out_shardings, and flax's DenseGeneral
  would apply logical constraints to its flattened kernels there.
  """
  with nn.logical_axis_rules(rules):
    boxed_params = jax.eval_shape(
        lambda r: itit_model.init_params(config.model, r), jax.random.PRNGKey(0))
    param_shardings = partitioning.tree_shardings(boxed_params, mesh, rules)
    frozen_shardings = None
    if config.model.text_encoder.kind == 't5':
      param_shardings, frozen_shardings = t5_loader.split_frozen(param_shardings)
    abstract_state = jax.eval_shape(functools.partial(init_train_state, config, tx),
                                    seed_key_data(config))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  state_shardings = TrainState(
      step=replicated, params=param_shardings,
      opt_state=opt_state_shardings(abstract_state.opt_state, abstract_state.params,
                                    param_shardings, mesh),
      rng=replicated, first_nonfinite_step=replicated, skipped_steps=replicated,
      pseudo_pairs=jax.tree.map(lambda _: partitioning.batch_sharding(mesh),
                                abstract_state.pseudo_pairs))
  return abstract_state, state_shardings, frozen_shardings


def params_from_run(init_from: str, like, shardings):
  """Parameters of another run's checkpoint ('WORKDIR' or 'WORKDIR:STEP'), laid out as `like`.

  The trees must match in paths and shapes (the same model config); the frozen T5 encoder is in
  neither. Used when a workdir has no checkpoint yet (e.g. configs/coco_finetune.py).
  """
  workdir, step = init_from, None
  head, _, tail = init_from.rpartition(':')
  if head and tail.isdigit():
    workdir, step = head, int(tail)
  params, step = checkpointing.load_params(workdir, step)
  loaded = flax.traverse_util.flatten_dict(params, sep='/')
  wanted = flax.traverse_util.flatten_dict(like, sep='/')
  problems = [f'{k}: missing' for k in sorted(set(wanted) - set(loaded))]
  problems += [f'{k}: not in this model' for k in sorted(set(loaded) - set(wanted))]
  problems += [f'{k}: {tuple(loaded[k].shape)} vs {tuple(v.shape)}'
               for k, v in sorted(wanted.items()) if k in loaded and loaded[k].shape != v.shape]
  if problems:
    raise ValueError(f'init_from={init_from!r}: its step-{step} parameters do not fit this model '
                     f'({len(problems)} differences, e.g. {problems[:3]}); use the model config '
                     'of that run')
  params = jax.tree.map(lambda x, ref: np.asarray(x, ref.dtype), params, like)
  print(f'Initialised the parameters from {workdir} at step {step}.', flush=True)
  return jax.device_put(params, shardings)

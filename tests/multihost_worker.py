"""Runs three ITIT train steps under one device layout; tests/test_multihost.py launches it.

  python tests/multihost_worker.py meshes --out=DIR
      8 CPU devices: a 1-device run, then meshes (8,1,1), (2,4,1), (2,2,2); the fsdp=8 layout;
      a checkpoint saved under (8,1,1) restored under (2,4,1) and under 1 device.
  python tests/multihost_worker.py process --process_id=I --num_processes=2 --port=P --out=DIR
      one of several processes on 127.0.0.1 (2 CPU devices each, gloo collectives); every
      process feeds only its own rows of each global batch; all save one checkpoint.
  python tests/multihost_worker.py single --devices=4 --out=DIR [--restore=CKPT_DIR]
      the same run in one process (the reference), optionally restoring the multi-process
      checkpoint.

Results go to DIR/<mode>[_<process_id>].json (losses, max differences) and .npz (parameters).
"""
import argparse
import functools
import json
import os
import sys

import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import numpy as np

from configs import tiny
from itit.losses import registry
from itit.models import itit as itit_model
from itit.trainer import checkpointing
from itit.trainer import distributed
from itit.trainer import optimizer as optimizer_lib
from itit.trainer import partitioning
from itit.trainer import state as state_lib
from itit.trainer import step as step_lib

STEPS = 3
ROW = 14  # table 2 row 14: T2I, I2T + I2I, and both full cycles
BATCH = 8
MESHES = ((8, 1, 1), (2, 4, 1), (2, 2, 2))
PROCESS_MESH = (1, 4, 1)  # fsdp across the processes: parameters are gathered over gloo


def parse_args():
  parser = argparse.ArgumentParser()
  parser.add_argument('mode', choices=['meshes', 'process', 'single'])
  parser.add_argument('--out', required=True)
  parser.add_argument('--devices', type=int, default=8)
  parser.add_argument('--process_id', type=int, default=0)
  parser.add_argument('--num_processes', type=int, default=1)
  parser.add_argument('--port', type=int, default=0)
  parser.add_argument('--restore', default='')
  return parser.parse_args()


def start_jax(args):
  """CPU devices for the mode; joins the multi-process run. Precedes any device query."""
  jax.config.update('jax_platforms', 'cpu')
  jax.config.update('jax_threefry_partitionable', True)
  if args.mode == 'process':
    jax.config.update('jax_num_cpu_devices', 2)
    distributed.initialize(f'127.0.0.1:{args.port}', args.num_processes, args.process_id, env={})
  else:
    jax.config.update('jax_num_cpu_devices', args.devices)


def make_config():
  config = tiny.get_config(f'row{ROW}')
  config.batch.update(dict(paired=BATCH, unpaired_image=BATCH, unpaired_text=BATCH))
  return config


def global_batch_numpy(config, step: int, streams) -> dict:
  """The step's whole batch, the same in every process: random tokens, texts ending in EOS."""
  rng = np.random.RandomState(1000 + step)
  model = config.model
  image_tokens = rng.randint(0, model.image_vocab_size, (BATCH, model.image_grid ** 2))
  length = model.max_text_len
  text_ids = rng.randint(2, model.text_vocab_size, (BATCH, length))
  text_lengths = rng.randint(1, length, (BATCH, 1))
  positions = np.arange(length)[None]
  text_ids = np.where(positions < text_lengths, text_ids, 0)
  text_ids = np.where(positions == text_lengths, 1, text_ids)
  fields = dict(paired=dict(image_tokens=image_tokens, text_ids=text_ids),
                unpaired_image=dict(image_tokens=image_tokens[::-1]),
                unpaired_text=dict(text_ids=text_ids[::-1]))
  return {s: {k: v.astype(np.int32) for k, v in fields[s].items()} for s in streams}


def mesh_of(shape, devices=None):
  return partitioning.make_mesh(dict(zip(partitioning.MESH_AXES, shape)), devices)


def setup(config, mesh):
  rules = partitioning.logical_rules(config)
  loss_fns = registry.make_loss_fns(config, itit_model.ITIT(config.model))
  tx, schedule = optimizer_lib.make_optimizer(config.optimizer, config.total_steps)
  abstract, shardings, _ = state_lib.state_layout(config, tx, mesh, rules)
  return rules, loss_fns, tx, schedule, abstract, shardings


def run(config, mesh):
  """STEPS steps from the seed's initial state -> (final state, [loss per step], shardings)."""
  rules, loss_fns, tx, schedule, _, shardings = setup(config, mesh)
  state = jax.jit(functools.partial(state_lib.init_train_state, config, tx),
                  out_shardings=shardings)(state_lib.seed_key_data(config))
  step_fn = step_lib.jit_train_step(config, loss_fns, tx, schedule, shardings)
  streams = sorted({stream for stream, _ in loss_fns.values()})
  rows = BATCH // jax.process_count()
  own = slice(jax.process_index() * rows, (jax.process_index() + 1) * rows)
  losses = []
  for step in range(STEPS):
    local = jax.tree.map(lambda x: x[own], global_batch_numpy(config, step, streams))
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      state, metrics = step_fn(state, partitioning.global_batch(local, mesh), None)
    losses.append(float(np.asarray(metrics['loss'].addressable_data(0))))
  return state, losses, shardings


def host_params(params) -> dict:
  """Flat {path: numpy} of (possibly multi-process) sharded parameters."""
  if jax.process_count() > 1:
    params = multihost_utils.process_allgather(params, tiled=True)
  flat = jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]
  return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in flat}


def max_difference(a: dict, b: dict) -> float:
  assert a.keys() == b.keys()
  return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def restore(directory, step, config, mesh):
  _, _, _, _, abstract, shardings = setup(config, mesh)
  checkpointer = checkpointing.Checkpointer(directory, async_save=False)
  state, _ = checkpointer.restore(step, checkpointing.abstract_with_shardings(abstract, shardings))
  checkpointer.close()
  same_layout = all(leaf.sharding == s for leaf, s in
                    zip(jax.tree.leaves(state.params), jax.tree.leaves(shardings.params)))
  return state, same_layout


def fsdp_layout(config) -> dict:
  """Per-device bytes of a freshly initialised (1,8,1) state, from the arrays' own shards."""
  mesh = mesh_of((1, 8, 1))
  _, _, tx, _, _, shardings = setup(config, mesh)
  state = jax.jit(functools.partial(state_lib.init_train_state, config, tx),
                  out_shardings=shardings)(state_lib.seed_key_data(config))
  device = jax.devices()[0]

  def bytes_on_device(tree):
    return sum(shard.data.nbytes for leaf in jax.tree.leaves(tree)
               for shard in leaf.addressable_shards if shard.device == device)

  param_specs = {jax.tree_util.keystr(p): (leaf.shape, leaf.sharding.spec) for p, leaf in
                 jax.tree_util.tree_flatten_with_path(state.params)[0]}
  matched, mismatched = 0, []
  for path, leaf in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]:
    keys = jax.tree_util.keystr(path)
    owner = [p for p in param_specs if keys.endswith(p) and param_specs[p][0] == leaf.shape]
    if owner:
      matched += 1
      if leaf.sharding.spec != param_specs[owner[0]][1]:
        mismatched.append(keys)
  return dict(
      param_bytes_total=sum(leaf.nbytes for leaf in jax.tree.leaves(state.params)),
      param_bytes_device=bytes_on_device(state.params),
      opt_bytes_total=sum(leaf.nbytes for leaf in jax.tree.leaves(state.opt_state)),
      opt_bytes_device=bytes_on_device(state.opt_state),
      opt_param_shaped_leaves=matched, opt_mismatched=mismatched,
      replicated=partitioning.replicated_leaves(state.params, jax.tree.map(
          lambda x: x.sharding, state.params), min_size=2))


def meshes_mode(config, out):
  result = {}
  reference, losses, _ = run(config, mesh_of((1, 1, 1), jax.devices()[:1]))
  reference_params = host_params(reference.params)
  result['reference_losses'] = losses
  for shape in MESHES:
    state, losses, _ = run(config, mesh_of(shape))
    name = 'x'.join(map(str, shape))
    result[name] = dict(losses=losses, max_param_diff=max_difference(
        host_params(state.params), reference_params))
    if shape == (8, 1, 1):
      saved_params = host_params(state.params)
      checkpointer = checkpointing.Checkpointer(os.path.join(out, 'ckpt'), async_save=False)
      checkpointer.save(STEPS, state, dict(mesh=name))
      checkpointer.close()
    print(f'{name}: losses {losses}', flush=True)
  for name, shape, devices in (('restore_2x4x1', (2, 4, 1), None),
                               ('restore_1', (1, 1, 1), jax.devices()[:1])):
    state, same_layout = restore(os.path.join(out, 'ckpt'), STEPS, config,
                                 mesh_of(shape, devices))
    restored = host_params(state.params)
    result[name] = dict(identical=all(np.array_equal(restored[k], saved_params[k])
                                      for k in saved_params) and restored.keys() == saved_params.keys(),
                        target_layout=same_layout)
  result['fsdp8'] = fsdp_layout(config)
  return result


def main():
  args = parse_args()
  start_jax(args)
  config = make_config()
  os.makedirs(args.out, exist_ok=True)
  if args.mode == 'meshes':
    name, result = 'meshes', meshes_mode(config, args.out)
  else:
    mesh = mesh_of(PROCESS_MESH)
    state, losses, _ = run(config, mesh)
    params = host_params(state.params)
    result = dict(losses=losses, process_count=jax.process_count(),
                  local_devices=jax.local_device_count())
    name = f'{args.mode}_{args.process_id}' if args.mode == 'process' else args.mode
    if args.mode == 'process':
      checkpointer = checkpointing.Checkpointer(os.path.join(args.out, 'ckpt'), async_save=False)
      checkpointer.save(STEPS, state, dict(process_count=jax.process_count()))
      checkpointer.close()
    if args.restore:
      restored, same_layout = restore(args.restore, STEPS, config, mesh)
      result['restored_max_diff'] = max_difference(host_params(restored.params), params)
      result['restored_target_layout'] = same_layout
    if jax.process_index() == 0:
      np.savez(os.path.join(args.out, f'{name}.npz'), **params)
  with open(os.path.join(args.out, f'{name}.json'), 'w') as f:
    json.dump(result, f, indent=2)
  print(json.dumps(result), flush=True)
  if jax.process_count() > 1:
    jax.distributed.shutdown()
  sys.stdout.flush()


if __name__ == '__main__':
  main()

"""Device mesh, logical-axis rules and the shardings derived from them.

Every parameter and main activation carries logical axis names ('batch', 'embed', 'mlp', ...);
the rules below map them onto the mesh axes (data, fsdp, tensor). Rules are config data, so a new
topology is a config change. Rules are applied in priority order and a mesh axis is used at most
once per array (flax semantics): 'batch' comes first so activations shard over (data, fsdp) and
their 'embed' dimension stays whole, while parameters shard 'embed' over fsdp.

Every parameter with an 'embed' dimension (embedding tables, attention and MLP kernels, norms)
shards over fsdp. The vectors without one (MLP, attention and logit biases) take the second
rule of their axis, so they shard too: 'mlp' over (tensor, fsdp), 'kv' over fsdp, the
vocabularies over (tensor, fsdp). A kernel never gets those second rules, because its 'embed'
already holds fsdp. Activations are not affected: only ('batch', 'length', 'embed') is
constrained.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AbstractMesh, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ('data', 'fsdp', 'tensor')

DEFAULT_RULES = (
    ('batch', ('data', 'fsdp')),
    ('embed', 'fsdp'),
    ('mlp', ('tensor', 'fsdp')),
    ('mlp', 'tensor'),
    ('heads', 'tensor'),
    ('vocab', ('tensor', 'fsdp')),
    ('vocab', 'tensor'),
    ('image_vocab', ('tensor', 'fsdp')),
    ('image_vocab', 'tensor'),
    ('kv', 'fsdp'),
    ('length', None),
    ('layers', None),
    ('relpos_buckets', None),  # T5's 32-bucket relative-position table stays whole
)


def logical_rules(config) -> tuple[tuple[str, Any], ...]:
  """The config's `sharding_rules` (list of [logical, mesh axis or axes]) or the defaults."""
  rules = config.get('sharding_rules', None)
  if not rules:
    return DEFAULT_RULES
  return tuple((name, tuple(axes) if isinstance(axes, (list, tuple)) else axes)
               for name, axes in rules)


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, int, int]:
  """Resolves (data, fsdp, tensor); one -1 entry takes the remaining devices."""
  sizes = [int(mesh_config[axis]) for axis in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f'mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f'mesh: {num_devices} devices do not divide by the fixed axes '
                       f'{dict(zip(MESH_AXES, sizes))}; set --config.mesh.* so their product divides '
                       f'{num_devices}')
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(f'mesh: {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices but '
                     f'{num_devices} are present; fix --config.mesh.* (use -1 on one axis to fill)')
  return tuple(sizes)


def make_mesh(mesh_config, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The (data, fsdp, tensor) mesh over `devices` (default: all devices of all processes).

  On TPU the device order follows the physical torus (jax's `create_device_mesh`), so 'tensor',
  the last and most talkative axis, stays on neighbouring chips; elsewhere it is device order,
  which keeps each process's devices together along 'data'.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_config, len(devices))
  grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
  return Mesh(grid, MESH_AXES)


def abstract_mesh(mesh_config, num_devices: int) -> AbstractMesh:
  """A device-less mesh of `num_devices`: enough to compute shard shapes for any topology."""
  return AbstractMesh(mesh_shape(mesh_config, num_devices), MESH_AXES)


def divisible_spec(spec: P, shape: Sequence[int], mesh_shape: Mapping[str, int]) -> P:
  """`spec` with trailing mesh axes dropped from any dimension they do not divide evenly.

  E.g. a ViT-H attention bias [16 heads, 80] under P('tensor', 'fsdp') on fsdp=32 keeps its 80
  whole: jax requires even shards, and the few such leaves (biases of an odd width) are small.
  """
  dims = []
  for size, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    while axes and size % math.prod(mesh_shape[a] for a in axes):
      axes = axes[:-1]
    dims.append(None if not axes else axes[0] if len(axes) == 1 else axes)
  return P(*dims)


def tree_shardings(abstract_tree, mesh: Mesh, rules) -> Any:
  """NamedShardings for a tree of (possibly boxed) abstract arrays from their logical names.

  Leaves without logical annotations (optimizer counters, the step, RNG keys) are replicated; a
  mesh axis that does not divide a dimension is left out of it (`divisible_spec`).
  """
  specs = nn.logical_to_mesh(nn.get_partition_spec(abstract_tree), rules)
  shapes = nn.unbox(abstract_tree)
  return jax.tree.map(
      lambda spec, leaf: NamedSharding(mesh, divisible_spec(spec, leaf.shape, mesh.shape)),
      specs, shapes, is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension over data and fsdp; everything else replicated."""
  return NamedSharding(mesh, P(('data', 'fsdp')))


def global_batch(local_batch, mesh: Mesh):
  """Assembles this process's part of the batch into global arrays sharded over the batch axes."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def _leaf_bytes(leaf, sharding) -> int:
  shape = sharding.shard_shape(leaf.shape) if sharding is not None else leaf.shape
  return math.prod(shape) * np.dtype(leaf.dtype).itemsize


def per_device_bytes(abstract_tree, shardings) -> int:
  """Bytes one device holds of a tree of arrays (or ShapeDtypeStructs) under `shardings`.

  Shardings here are even (every sharded dimension divides), so every device holds the same.
  """
  leaves = jax.tree.leaves(abstract_tree)
  return sum(_leaf_bytes(leaf, s) for leaf, s in zip(leaves, jax.tree.leaves(shardings)))


def total_bytes(abstract_tree) -> int:
  return sum(_leaf_bytes(leaf, None) for leaf in jax.tree.leaves(abstract_tree))


def replicated_leaves(abstract_tree, shardings, min_size: int = 1) -> list[str]:
  """Paths of leaves with at least `min_size` elements that every device holds whole."""
  found = []
  flat = jax.tree_util.tree_flatten_with_path(abstract_tree)[0]
  for (path, leaf), sharding in zip(flat, jax.tree.leaves(shardings)):
    size = math.prod(leaf.shape)
    if size >= min_size and sharding.shard_shape(leaf.shape) == tuple(leaf.shape):
      found.append(jax.tree_util.keystr(path))
  return found

"""Mesh shapes, sharding rules and the layouts they give, on device-less (abstract) meshes.

The multi-device runs (8 faked devices, 2 processes) are in tests/test_multihost.py.
"""
import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs import tiny
from configs import vit_b
from configs import vit_h
from itit.models import itit as itit_model
from itit.trainer import distributed
from itit.trainer import optimizer as optimizer_lib
from itit.trainer import partitioning
from itit.trainer import state as state_lib


def _param_layout(config, mesh_sizes):
  mesh = partitioning.abstract_mesh(dict(zip(partitioning.MESH_AXES, mesh_sizes)),
                                    int(np.prod(mesh_sizes)))
  rules = partitioning.logical_rules(config)
  with nn.logical_axis_rules(rules):
    boxed = jax.eval_shape(lambda r: itit_model.init_params(config.model, r),
                           jax.random.PRNGKey(0))
    shardings = partitioning.tree_shardings(boxed, mesh, rules)
  return nn.unbox(boxed), shardings


def test_mesh_shape_fills_and_rejects():
  assert partitioning.mesh_shape(dict(data=-1, fsdp=4, tensor=2), 64) == (8, 4, 2)
  assert partitioning.mesh_shape(dict(data=2, fsdp=2, tensor=2), 8) == (2, 2, 2)
  with pytest.raises(ValueError, match='needs 8 devices but 4'):
    partitioning.mesh_shape(dict(data=2, fsdp=2, tensor=2), 4)
  with pytest.raises(ValueError, match='do not divide'):
    partitioning.mesh_shape(dict(data=-1, fsdp=3, tensor=1), 8)
  with pytest.raises(ValueError, match='at most one axis'):
    partitioning.mesh_shape(dict(data=-1, fsdp=-1, tensor=1), 8)


def test_make_mesh_on_the_local_device():
  mesh = partitioning.make_mesh(dict(data=-1, fsdp=1, tensor=1))
  assert dict(mesh.shape) == dict(data=jax.device_count(), fsdp=1, tensor=1)


@pytest.mark.parametrize('make_config', [tiny.get_config, vit_b.get_config, vit_h.get_config],
                         ids=['tiny', 'vit_b_t5', 'vit_h_t5'])
def test_fsdp8_holds_an_eighth_of_the_parameters(make_config):
  config = make_config()
  params, shardings = _param_layout(config, (1, 8, 1))
  # The default rules shard every parameter with more than a few elements, biases included.
  assert partitioning.replicated_leaves(params, shardings, min_size=4096) == []
  total = partitioning.total_bytes(params)
  assert partitioning.per_device_bytes(params, shardings) <= total / 8 * 1.05


def test_kernels_and_vectors_take_the_expected_axes():
  params, shardings = _param_layout(tiny.get_config(), (1, 2, 2))
  block = shardings['encoder']['block_0']
  assert block['attention']['query']['kernel'].spec == P('fsdp', 'tensor', None)
  assert block['attention']['query']['bias'].spec == P('tensor', 'fsdp')
  assert block['attention']['out']['kernel'].spec == P('tensor', None, 'fsdp')
  assert block['mlp']['wi']['kernel'].spec == P('fsdp', 'tensor')
  assert block['mlp']['wi']['bias'].spec == P(('tensor', 'fsdp'))
  assert block['mlp']['wo']['kernel'].spec == P('tensor', 'fsdp')
  assert shardings['encoder_image_embedding'].spec == P('tensor', 'fsdp')
  assert shardings['text_decoder_logit_bias'].spec == P(('tensor', 'fsdp'))
  assert params['encoder_image_embedding'].shape == (32, 32)


def test_the_default_rules_shard_the_frozen_t5_encoder():
  config = vit_h.get_config()
  rules = partitioning.logical_rules(config)
  assert ('batch', ('data', 'fsdp')) in rules and ('embed', 'fsdp') in rules
  params, shardings = _param_layout(config, (1, 16, 4))
  encoder = partitioning.per_device_bytes(params['text_encoder'], shardings['text_encoder'])
  assert encoder <= partitioning.total_bytes(params['text_encoder']) / 64 * 1.05


def test_optimizer_state_follows_the_parameters():
  config = vit_b.get_config()
  config.model.text_encoder.kind = 'learned'
  mesh = partitioning.abstract_mesh(dict(data=1, fsdp=8, tensor=1), 8)
  tx, _ = optimizer_lib.make_optimizer(config.optimizer, config.total_steps)
  abstract, shardings, frozen = state_lib.state_layout(config, tx, mesh,
                                                   partitioning.logical_rules(config))
  assert frozen is None
  param_specs = {jax.tree_util.keystr(p): (x.shape, s.spec) for (p, x), s in zip(
      jax.tree_util.tree_flatten_with_path(abstract.params)[0],
      jax.tree.leaves(shardings.params))}
  matched = 0
  for (path, leaf), sharding in zip(jax.tree_util.tree_flatten_with_path(abstract.opt_state)[0],
                                    jax.tree.leaves(shardings.opt_state)):
    keys = jax.tree_util.keystr(path)
    owners = [p for p in param_specs if keys.endswith(p) and param_specs[p][0] == leaf.shape]
    if owners:
      matched += 1
      assert sharding.spec == param_specs[owners[0]][1], keys
  assert matched >= len(param_specs)  # Adafactor's momentum has one per parameter
  opt_total = partitioning.total_bytes(abstract.opt_state)
  assert partitioning.per_device_bytes(abstract.opt_state, shardings.opt_state) <= (
      opt_total / 8 * 1.05)


def test_global_batch_keeps_values():
  mesh = partitioning.make_mesh(dict(data=-1, fsdp=1, tensor=1))
  local = {'paired': {'text_ids': np.arange(12, dtype=np.int32).reshape(4, 3)}}
  batch = partitioning.global_batch(local, mesh)
  np.testing.assert_array_equal(np.asarray(batch['paired']['text_ids']), local['paired']['text_ids'])
  assert batch['paired']['text_ids'].sharding.spec == P(('data', 'fsdp'))


def test_launch_settings():
  settings = distributed.launch_settings
  assert settings({}) is None
  assert settings({}, '10.0.0.1:1234', 4, 2) == dict(
      coordinator_address='10.0.0.1:1234', num_processes=4, process_id=2)
  assert settings({}, 'h:1', 1, 0) is None
  assert settings(dict(JAX_COORDINATOR_ADDRESS='h:1', JAX_NUM_PROCESSES='2',
                       JAX_PROCESS_ID='1')) == dict(coordinator_address='h:1', num_processes=2,
                                                   process_id=1)
  assert settings(dict(SLURM_NTASKS='8', SLURM_PROCID='3')) == {}
  assert settings(dict(SLURM_NTASKS='1', SLURM_PROCID='0')) is None
  assert settings(dict(SLURM_NTASKS='4', SLURM_PROCID='1', SLURM_NTASKS_PER_NODE='1',
                       SLURM_GPUS_ON_NODE='8')) == dict(local_device_ids=list(range(8)))
  assert settings(dict(OMPI_COMM_WORLD_SIZE='4')) == {}
  assert settings(dict(TPU_WORKER_HOSTNAMES='t1,t2,t3,t4')) == {}
  assert settings(dict(TPU_WORKER_HOSTNAMES='localhost')) is None
  with pytest.raises(ValueError, match='process_id missing'):
    settings({}, 'h:1', 2)
  with pytest.raises(ValueError, match='outside 0..1'):
    settings({}, 'h:1', 2, 2)
  with pytest.raises(ValueError, match='JAX_NUM_PROCESSES'):
    settings(dict(JAX_COORDINATOR_ADDRESS='h:1', JAX_NUM_PROCESSES='two', JAX_PROCESS_ID='0'))
  assert distributed.initialize(env={}) is False


def test_divisible_spec_drops_only_the_axes_that_do_not_divide():
  mesh = dict(data=2, fsdp=32, tensor=4)
  assert partitioning.divisible_spec(P('tensor', 'fsdp'), (16, 80), mesh) == P('tensor', None)
  assert partitioning.divisible_spec(P('tensor', 'fsdp'), (16, 96), mesh) == P('tensor', 'fsdp')
  # A dimension sharded over two axes keeps the leading one when only it divides.
  assert partitioning.divisible_spec(P(('tensor', 'fsdp'),), (20,), mesh) == P('tensor')
  assert partitioning.divisible_spec(P(None, 'fsdp'), (3, 64), mesh) == P(None, 'fsdp')
  assert partitioning.divisible_spec(P(), (5,), mesh) == P(None)


@pytest.mark.parametrize('fsdp', [32, 64])
def test_vit_h_lays_out_on_the_papers_pod_sizes(fsdp):
  """ViT-H's 80-wide attention heads do not divide by 32 or 64: those bias dimensions stay
  whole, and the rest shards evenly (1/fsdp of the bytes per device, to within 5%)."""
  params, shardings = _param_layout(vit_h.get_config(), (1, fsdp, 1))
  assert partitioning.per_device_bytes(params, shardings) <= (
      partitioning.total_bytes(params) / fsdp * 1.05)
  whole = partitioning.replicated_leaves(params, shardings, min_size=4096)
  assert whole == []

r"""Compiles the full train step for a target topology on faked CPU devices, and reports memory.

  python -m itit.compile_check --config=configs/vit_b.py --devices=64 --mesh=1,64,1

finds out whether a config fits a device BEFORE any hardware is rented: it builds the real
`itit.train` step of the config (the paper configs: table 2 row 14, cycles included, with the
frozen T5-XXL; `--config=configs/vit_b.py:row3` for another row) with abstract inputs
(`jax.ShapeDtypeStruct`s carrying the target shardings), lowers and compiles it for `--devices`
CPU devices laid out as `--mesh` (data,fsdp,tensor), and prints per device: parameters,
optimizer state, the frozen T5 (no weights needed), the batch, XLA's temporary buffers and their
sum, as a table and as JSON (--json=FILE as well).

The parameter, optimizer and batch figures are exact (shard shapes). The temporary figure is the
CPU compiler's: the SPMD partitioning is the one a TPU or GPU gets, but fusion and buffer reuse
differ by backend, so treat it as an estimate (CPU tends to over-estimate: it keeps some bf16
math in float32). --nocompile gives the exact figures only, in seconds, for any topology.
"""
from __future__ import annotations

import json
import math
import time

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import NamedSharding, PartitionSpec as P

from itit import errors
from itit.losses import registry
from itit.models import itit as itit_model
from itit.models import t5_loader
from itit.trainer import checkpointing
from itit.trainer import config_check
from itit.trainer import optimizer as optimizer_lib
from itit.trainer import partitioning
from itit.trainer import state as state_lib
from itit.trainer import step as step_lib
from itit.trainer import train_data

_CONFIG = errors.config_flag('Training config file, e.g. configs/vit_h.py.')
_DEVICES = flags.DEFINE_integer('devices', 8, 'Target device count (faked CPU devices).')
_MESH = flags.DEFINE_string('mesh', None, 'data,fsdp,tensor sizes, e.g. 1,64,1 (-1 fills); '
                            "default: the config's mesh section.")
_FROZEN_DTYPE = flags.DEFINE_enum('frozen_dtype', 'float32', ['float32', 'bfloat16'],
                                  'dtype of the frozen T5 parameters.')
_COMPILE = flags.DEFINE_bool('compile', True, 'Lower and compile (else: exact bytes only).')
_JSON = flags.DEFINE_string('json', None, 'Also write the report here.')

GIB = 1024 ** 3
DEVICE_MEMORY_GIB = {'TPUv3 16 GB': 16 * 1e9 / GIB, 'H100 80 GB': 80 * 1e9 / GIB,
                     'H200 141 GB': 141 * 1e9 / GIB}


def parse_mesh(text: str) -> dict:
  sizes = text.split(',')
  if len(sizes) != 3:
    raise errors.UserError(f'--mesh={text!r}: give data,fsdp,tensor sizes, e.g. --mesh=1,64,1')
  try:
    return dict(zip(partitioning.MESH_AXES, (int(s) for s in sizes)))
  except ValueError:
    raise errors.UserError(
        f'--mesh={text!r}: sizes must be integers, e.g. --mesh=1,64,1') from None


def abstract_batch(config, streams, sharding) -> dict:
  """ShapeDtypeStructs of one global batch: {stream: {field: [batch, ...] int32}}."""
  num_tokens = config.model.image_grid ** 2
  fields = dict(paired=dict(image_tokens=num_tokens, text_ids=config.model.max_text_len),
                unpaired_image=dict(image_tokens=num_tokens),
                unpaired_text=dict(text_ids=config.model.max_text_len))
  return {stream: {name: jax.ShapeDtypeStruct((config.batch[stream], length), jnp.int32,
                                              sharding=sharding)
                   for name, length in fields[stream].items()}
          for stream in streams}


def abstract_frozen(config, frozen_shardings, dtype):
  """The frozen T5 parameters as ShapeDtypeStructs, or None."""
  if frozen_shardings is None:
    return None
  boxed = jax.eval_shape(lambda r: itit_model.init_params(config.model, r), jax.random.PRNGKey(0))
  _, frozen = t5_loader.split_frozen(nn.unbox(boxed))
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, dtype, sharding=s),
                      frozen, frozen_shardings)


def check(config: ml_collections.ConfigDict, mesh, *, compile_step: bool = True,
          frozen_dtype=jnp.float32) -> dict:
  """Per-device bytes of the train step of `config` on `mesh` (a Mesh, or an AbstractMesh when
  compile_step is False). Returns the report as a dict."""
  jax.config.update('jax_threefry_partitionable', True)
  num_devices = math.prod(mesh.shape.values())
  data_parallel = mesh.shape['data'] * mesh.shape['fsdp']
  for stream in train_data.STREAMS:
    size = config.batch[stream]
    if size % data_parallel:
      raise errors.UserError(f'batch.{stream}={size} does not divide by the data-parallel '
                             f'size {data_parallel} (mesh data x fsdp); set '
                             f'--config.batch.{stream}')
  rules = partitioning.logical_rules(config)
  model = itit_model.ITIT(config.model)
  loss_fns = registry.make_loss_fns(config, model)
  streams = sorted({stream for stream, _ in loss_fns.values()})
  tx, schedule = optimizer_lib.make_optimizer(config.optimizer, config.total_steps)
  abstract_state, state_shardings, frozen_shardings = state_lib.state_layout(config, tx, mesh,
                                                                            rules)
  state = checkpointing.abstract_with_shardings(abstract_state, state_shardings)
  batch = abstract_batch(config, streams, NamedSharding(mesh, P(('data', 'fsdp'))))
  frozen = abstract_frozen(config, frozen_shardings, frozen_dtype)
  counts = itit_model.count_params(config)
  report = dict(
      devices=num_devices, mesh=dict(mesh.shape), losses=sorted(loss_fns),
      batch={s: config.batch[s] for s in streams},
      params_total=counts['total'],
      params_trained=sum(math.prod(x.shape) for x in jax.tree.leaves(abstract_state.params)),
      param_bytes=partitioning.per_device_bytes(abstract_state.params, state_shardings.params),
      opt_state_bytes=partitioning.per_device_bytes(abstract_state.opt_state,
                                                    state_shardings.opt_state),
      frozen_bytes=0 if frozen is None else partitioning.per_device_bytes(
          frozen, jax.tree.map(lambda x: x.sharding, frozen)),
      batch_bytes=partitioning.per_device_bytes(batch, jax.tree.map(lambda x: x.sharding, batch)),
      unsharded_params=partitioning.replicated_leaves(
          abstract_state.params, state_shardings.params, min_size=4096) if num_devices > 1 else [])
  if compile_step:
    step_fn = step_lib.jit_train_step(config, loss_fns, tx, schedule, state_shardings,
                                      registry.make_cycle_parts(config, model))
    start = time.perf_counter()
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      lowered = step_fn.lower(state, batch, frozen)
    report['lower_s'] = time.perf_counter() - start
    start = time.perf_counter()
    compiled = lowered.compile()
    report['compile_s'] = time.perf_counter() - start
    memory = compiled.memory_analysis()
    report.update(
        argument_bytes=memory.argument_size_in_bytes, output_bytes=memory.output_size_in_bytes,
        alias_bytes=memory.alias_size_in_bytes, temp_bytes=memory.temp_size_in_bytes)
    # Donated state is aliased: its buffers are counted once, in the arguments.
    report['peak_bytes'] = (memory.argument_size_in_bytes + memory.output_size_in_bytes
                            - memory.alias_size_in_bytes + memory.temp_size_in_bytes)
  else:
    report['peak_bytes_lower_bound'] = (report['param_bytes'] + report['opt_state_bytes']
                                        + report['frozen_bytes'] + report['batch_bytes'])
  peak = report.get('peak_bytes', report.get('peak_bytes_lower_bound'))
  report['fits'] = {name: peak / GIB <= limit for name, limit in DEVICE_MEMORY_GIB.items()}
  return report


def format_report(report: dict) -> str:
  """A human-readable table of `check`'s report (GiB per device)."""
  gib = lambda key: f'{report[key] / GIB:10.3f}' if key in report else '         -'
  lines = [f'{report["devices"]} devices, mesh {report["mesh"]}, losses {report["losses"]}, '
           f'batch {report["batch"]}',
           f'parameters: {report["params_total"] / 1e6:.1f}M ({report["params_trained"] / 1e6:.1f}M '
           f'trained)',
           f'{"per device":<28}{"GiB":>10}']
  rows = [('parameters', 'param_bytes'), ('optimizer state', 'opt_state_bytes'),
          ('frozen T5', 'frozen_bytes'), ('batch', 'batch_bytes'),
          ('XLA temporaries', 'temp_bytes'), ('peak (args+out-alias+temp)', 'peak_bytes'),
          ('state+batch (no temps)', 'peak_bytes_lower_bound')]
  lines += [f'{label:<28}{gib(key)}' for label, key in rows if key in report]
  if 'compile_s' in report:
    lines.append(f'lowered in {report["lower_s"]:.1f}s, compiled in {report["compile_s"]:.1f}s')
  label = 'fits' if 'peak_bytes' in report else 'state fits (activations not counted)'
  lines.append(f'{label}: ' + ', '.join(f'{k} {"yes" if v else "NO"}'
                                    for k, v in report['fits'].items()))
  if report['unsharded_params']:
    lines.append(f'replicated parameters >= 4096 elements: {report["unsharded_params"]}')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  if config is None:
    raise app.UsageError('--config is required, e.g. --config=configs/vit_b.py')
  config = config.copy_and_resolve_references()
  config_check.check_model(config)
  mesh_config = parse_mesh(_MESH.value) if _MESH.value else config.mesh
  if _COMPILE.value:
    # Fake the target's device count on the host CPU; must precede any device query.
    jax.config.update('jax_platforms', 'cpu')
    jax.config.update('jax_num_cpu_devices', _DEVICES.value)
    if jax.device_count() != _DEVICES.value:
      raise errors.UserError(f'asked for {_DEVICES.value} devices but JAX has '
                             f'{jax.device_count()}: unset XLA_FLAGS=--xla_force_host_platform_'
                             f'device_count or make it match --devices')
    mesh = partitioning.make_mesh(mesh_config)
  else:
    mesh = partitioning.abstract_mesh(mesh_config, _DEVICES.value)
  frozen_dtype = jnp.dtype(_FROZEN_DTYPE.value)
  report = check(config, mesh, compile_step=_COMPILE.value, frozen_dtype=frozen_dtype)
  report.update(text_encoder=config.model.text_encoder.kind, frozen_dtype=_FROZEN_DTYPE.value)
  print(format_report(report))
  print(json.dumps(report))
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump(report, f, indent=2)


if __name__ == '__main__':
  errors.run_app(main)

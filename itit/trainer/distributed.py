"""Multi-process start-up: one JAX process per host (TPU pod slice) or per GPU node / task.

`initialize()` runs `jax.distributed.initialize` when the program was launched as several
processes and does nothing for a single process, so the same command works on one machine, a
TPU pod slice (`gcloud ... ssh --worker=all`), or a SLURM allocation (`srun`). How it decides:

  1. explicit values (the --coordinator_address / --num_processes / --process_id flags, or the
     function's arguments) win;
  2. JAX_COORDINATOR_ADDRESS with JAX_NUM_PROCESSES and JAX_PROCESS_ID in the environment;
  3. a multi-task SLURM step (SLURM_NTASKS > 1), Open MPI (OMPI_COMM_WORLD_SIZE > 1) or a
     multi-host TPU slice (TPU_WORKER_HOSTNAMES lists several hosts): JAX detects the
     coordinator, process count and index itself (under SLURM one GPU per task, or all the
     node's GPUs with --ntasks-per-node=1);
  4. otherwise: a single process, nothing to do.

It must run before anything touches a device. Processes on CPU exchange data over gloo.
"""
from __future__ import annotations

import os
from typing import Mapping

from absl import flags
import jax

_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0, for a multi-process run started by '
    'hand (SLURM, Open MPI and TPU pods are detected without it).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in the run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process, 0..num_processes-1.')


def _int_env(env: Mapping[str, str], name: str) -> int | None:
  value = env.get(name)
  if value in (None, ''):
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f'environment variable {name}={value!r} must be an integer') from None


def launch_settings(env: Mapping[str, str], coordinator_address: str | None = None,
                    num_processes: int | None = None,
                    process_id: int | None = None) -> dict | None:
  """The keyword arguments for `jax.distributed.initialize`, or None for a single process.

  An empty dict means: let JAX detect the cluster (SLURM, Open MPI, TPU pod).
  """
  explicit = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                  process_id=process_id)
  if all(v is None for v in explicit.values()) and env.get('JAX_COORDINATOR_ADDRESS'):
    explicit = dict(coordinator_address=env['JAX_COORDINATOR_ADDRESS'],
                    num_processes=_int_env(env, 'JAX_NUM_PROCESSES'),
                    process_id=_int_env(env, 'JAX_PROCESS_ID'))
  given = {k: v for k, v in explicit.items() if v is not None}
  if given:
    missing = sorted(set(explicit) - set(given))
    if missing:
      raise ValueError(f'multi-process launch: {", ".join(given)} given but {", ".join(missing)} '
                       f'missing; pass all of --coordinator_address, --num_processes, '
                       f'--process_id (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, '
                       f'JAX_PROCESS_ID)')
    if not 0 <= given['process_id'] < given['num_processes']:
      raise ValueError(f'process_id={given["process_id"]} is outside 0..'
                       f'{given["num_processes"] - 1} (num_processes={given["num_processes"]})')
    return None if given['num_processes'] == 1 else given
  if (_int_env(env, 'SLURM_NTASKS') or 1) > 1 and 'SLURM_PROCID' in env:
    # JAX's SLURM detection gives each task the one GPU of its local rank; a task that is
    # alone on its node keeps all of the node's GPUs instead.
    gpus = _int_env(env, 'SLURM_GPUS_ON_NODE')
    if env.get('SLURM_NTASKS_PER_NODE') == '1' and gpus:
      return dict(local_device_ids=list(range(gpus)))
    return {}
  if (_int_env(env, 'OMPI_COMM_WORLD_SIZE') or 1) > 1:
    return {}
  if len([h for h in env.get('TPU_WORKER_HOSTNAMES', '').split(',') if h]) > 1:
    return {}
  return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, env: Mapping[str, str] | None = None) -> bool:
  """Joins the multi-process run if this is one; returns whether it is.

  Arguments left None fall back to the flags (when parsed), then to the environment.
  """
  if flags.FLAGS.is_parsed():
    coordinator_address = coordinator_address or _COORDINATOR.value
    num_processes = num_processes if num_processes is not None else _NUM_PROCESSES.value
    process_id = process_id if process_id is not None else _PROCESS_ID.value
  settings = launch_settings(os.environ if env is None else env, coordinator_address,
                             num_processes, process_id)
  if settings is None:
    return False
  if jax.config.jax_platforms == 'cpu' or os.environ.get('JAX_PLATFORMS') == 'cpu':
    # CPU devices of different processes talk through gloo (the default has no collectives).
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(**settings)
  return True

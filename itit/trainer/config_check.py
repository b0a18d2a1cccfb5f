"""Checks of a training config that need no compile: each problem is one `UserError` line.

`itit.train` runs `check_train_config` first, so a typo in a batch size, a mesh for other
hardware or a wrong path fails in seconds, not after minutes of compiling. (Unknown config
fields are refused earlier still, by the locked ConfigDict: `itit.errors.parse_flags`.)
"""
from __future__ import annotations

import os

from itit import errors
from itit.models import masking
from itit.models import t5_loader
from itit.trainer import partitioning
from itit.trainer import train_data

NAN_POLICIES = ('halt', 'skip')
PRNG_IMPLS = ('threefry2x32', 'rbg', 'unsafe_rbg')
_STREAM_HINT = 'python -m itit.prepare writes one folder per stream under data.dir'


def check_mesh(config, num_devices: int) -> tuple[int, int, int]:
  """The resolved (data, fsdp, tensor) sizes, or a UserError if they do not fit the devices."""
  try:
    return partitioning.mesh_shape(config.mesh, num_devices)
  except ValueError as e:
    raise errors.UserError(str(e)) from None


def check_batch_sizes(config, data_parallel: int, process_count: int, streams) -> None:
  for stream in streams:
    size = config.batch[stream]
    if size <= 0:
      raise errors.UserError(f'batch.{stream}={size}: a batch size must be positive')
    if size % data_parallel:
      raise errors.UserError(
          f'batch.{stream}={size} is not divisible by the data-parallel size {data_parallel} '
          f'(mesh data x fsdp); choose a multiple of {data_parallel}, e.g. '
          f'--config.batch.{stream}={max(data_parallel, size // data_parallel * data_parallel)}')
    if size % process_count:
      raise errors.UserError(f'batch.{stream}={size} is not divisible by the {process_count} '
                             f'processes; choose a multiple of {process_count}')
  if 'paired' in streams and config.batch.paired_split:
    per_shard = config.batch.paired // data_parallel
    if per_shard % 2:
      raise errors.UserError(
          f'batch.paired={config.batch.paired} gives {per_shard} paired examples per '
          f'data-parallel shard, which batch.paired_split cannot halve; choose a multiple of '
          f'{2 * data_parallel}, or --config.batch.paired_split=false to share the paired batch')


def check_data_dir(config, streams) -> None:
  """data.dir exists and holds a shard folder (with manifest.json) for every stream read."""
  if not config.data.dir:
    raise errors.UserError('data.dir is empty: point --config.data.dir at prepared shards '
                           '(python -m itit.prepare)')
  if not os.path.isdir(config.data.dir):
    raise errors.MissingFileError(f'data.dir {config.data.dir} does not exist: point '
                                  f'--config.data.dir at prepared shards ({_STREAM_HINT})')
  for stream in streams:
    folder = os.path.join(config.data.dir, config.data[stream])
    if not os.path.isfile(os.path.join(folder, 'manifest.json')):
      raise errors.MissingFileError(
          f'stream {stream!r}: {folder} holds no token shards (no manifest.json); set '
          f'--config.data.{stream} to its folder under data.dir ({_STREAM_HINT})')


def check_text_encoder(config) -> None:
  """The frozen T5's directory must exist and hold a T5 of the configured architecture."""
  encoder = config.model.text_encoder
  if encoder.kind not in ('learned', 't5'):
    raise errors.UserError(f"model.text_encoder.kind={encoder.kind!r}; use 'learned' or 't5'")
  if encoder.kind != 't5':
    return
  smoke = ('or, for a smoke run without T5 weights, train the small text encoder jointly: '
           '--config.model.text_encoder.kind=learned')
  if not encoder.path:
    raise errors.MissingFileError(
        'the frozen T5 text encoder needs its weights: point --config.model.text_encoder.path '
        f'at a local Hugging Face T5 directory (config.json + *.safetensors), {smoke}')
  if not os.path.isdir(encoder.path):
    raise errors.MissingFileError(
        f'model.text_encoder.path={encoder.path!r} is not a directory: point it at a local '
        f'Hugging Face T5 directory (config.json + *.safetensors), {smoke}')
  try:
    t5_loader.check_config(encoder.t5, encoder.path)
  except (FileNotFoundError, ValueError) as e:
    raise errors.UserError(str(e)) from None


def check_model(config) -> None:
  """Dropout in [0, 1), and every attention's width divisible by its number of heads (the
  head dimension is width // heads): the joint encoder and image decoder, the text decoder, and
  the learned text encoder when it is used."""
  model = config.model
  if not 0.0 <= model.dropout < 1.0:
    raise errors.UserError(f'model.dropout={model.dropout}: must be in [0, 1) (the paper '
                           'uses 0.1; 0 turns dropout off)')
  stacks = [('model.width', model.width, 'model.num_heads', model.num_heads),
            ('model.text_decoder_width', model.text_decoder_width,
             'model.text_decoder_num_heads', model.text_decoder_num_heads)]
  if model.text_encoder.kind == 'learned':
    learned = model.text_encoder.learned
    stacks.append(('model.text_encoder.learned.width', learned.width,
                   'model.text_encoder.learned.num_heads', learned.num_heads))
  for width_name, width, heads_name, heads in stacks:
    if heads <= 0 or width <= 0:
      raise errors.UserError(f'{width_name}={width}, {heads_name}={heads}: both must be positive')
    if width % heads:
      nearest = sorted({max(width // heads, 1) * heads, (width // heads + 1) * heads})
      raise errors.UserError(
          f'{width_name}={width} is not divisible by {heads_name}={heads} (each head takes '
          f'width / heads dimensions): set --config.{width_name} to a multiple of {heads}, '
          f'e.g. {" or ".join(map(str, nearest))}, or change --config.{heads_name}')


def check_mask_ratios(config) -> None:
  """The truncated Gaussian of each masking loss must be valid, and its minimum must mask at
  least the `model.num_dropped` tokens the encoder drops (static shapes)."""
  loss, num_tokens = config.loss, config.model.image_grid ** 2
  for name in ('mask_ratio_max_t2i', 'mask_ratio_max_i2t'):
    if not 0.0 <= loss.mask_ratio_min <= loss[name] <= 1.0:
      raise errors.UserError(
          f'0 <= loss.mask_ratio_min={loss.mask_ratio_min} <= loss.{name}={loss[name]} <= 1 '
          'does not hold')
  if not 0.0 <= loss.mask_ratio_mode <= 1.0:
    raise errors.UserError(f'loss.mask_ratio_mode={loss.mask_ratio_mode}: must be in [0, 1]')
  schedules = masking.T2I_MASK_SCHEDULES
  if loss.get('t2i_mask_schedule', schedules[0]) not in schedules:
    raise errors.UserError(
        f'loss.t2i_mask_schedule={loss.t2i_mask_schedule!r}: use one of {", ".join(schedules)}')
  if loss.mask_ratio_std <= 0:
    raise errors.UserError(f'loss.mask_ratio_std={loss.mask_ratio_std}: must be positive')
  if loss.mask_ratio_min * num_tokens < config.model.num_dropped:
    raise errors.UserError(
        f'model.num_dropped={config.model.num_dropped} tokens are dropped from the encoder, but '
        f'loss.mask_ratio_min={loss.mask_ratio_min} masks only '
        f'{loss.mask_ratio_min * num_tokens:g} of {num_tokens}: raise the ratio or lower '
        'num_dropped')


def check_cycle(cycle) -> None:
  """The pseudo-pair synthesis settings (config.cycle) a run can decode with."""
  if cycle.synthesis_steps < 1:
    raise errors.UserError(f'cycle.synthesis_steps={cycle.synthesis_steps}: must be >= 1')
  if not cycle.sample_temperature > 0:
    raise errors.UserError(f'cycle.sample_temperature={cycle.sample_temperature}: must be > 0')
  for name in ('temperature', 'guidance_scale', 'gumbel_strength'):
    if not cycle[name] >= 0:
      raise errors.UserError(f'cycle.{name}={cycle[name]}: must be >= 0 (0 = off)')
  if not cycle.get('encoder_grad_scale', 1.0) >= 0:
    raise errors.UserError(f'cycle.encoder_grad_scale={cycle.encoder_grad_scale}: must be >= 0 '
                           '(1: the cycles train the joint encoder, the paper; 0: they do not)')
  if isinstance(cycle.reuse, bool) or not isinstance(cycle.reuse, int) or cycle.reuse < 1:
    raise errors.UserError(f'cycle.reuse={cycle.reuse!r}: must be a whole number of steps >= 1 '
                           '(1: a fresh pseudo pair every step, the paper)')


def check_train_config(config, num_devices: int, process_count: int, streams=None) -> None:
  """Every check above; `streams` are the input streams the enabled losses read (default all)."""
  streams = sorted(streams if streams is not None else train_data.STREAMS)
  for name in ('total_steps', 'log_every', 'checkpoint_every'):
    if config[name] <= 0:
      raise errors.UserError(f'{name}={config[name]}: must be a positive number of steps')
  if config.nan_policy not in NAN_POLICIES:
    raise errors.UserError(f'nan_policy={config.nan_policy!r}; use one of {NAN_POLICIES}')
  if config.prng_impl not in PRNG_IMPLS:
    raise errors.UserError(f'prng_impl={config.prng_impl!r}; use one of {PRNG_IMPLS}')
  if not 0 <= config.cycle.start_step < config.total_steps:
    raise errors.UserError(f'cycle.start_step={config.cycle.start_step}: must be in [0, '
                           f'total_steps={config.total_steps}) (0: cycles from the first step)')
  check_cycle(config.cycle)
  check_model(config)
  data, fsdp, _ = check_mesh(config, num_devices)
  check_batch_sizes(config, data * fsdp, process_count, streams)
  check_text_encoder(config)
  check_data_dir(config, streams)
  check_mask_ratios(config)

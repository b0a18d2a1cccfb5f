"""The objective in one table: every loss ITIT can train, the stream it reads, its function, its
training FLOPs and its default weight; and table 2's rows as switches over them.

The train step, the FLOP counter, the config check, the run summary and the loss-gradient tool
all read `LOSSES`; adding a loss is one `Loss` entry (plus its default weight in the config, read
from here). A loss is enabled by the config's switches: loss.t2i, loss.i2t, loss.i2i,
loss.unpaired_text_loss in TEXT_LOSSES and loss.unpaired_image_loss in IMAGE_LOSSES.

FLOPs follow `itit.models.flops`: training cost of a part = 3x its forward (forward + backward),
1x for forward-only work (synthesis, a cycle's stopped first encoder pass, the frozen T5; 2x
where gradient must reach the frozen T5's input, as in the full I2T2I cycle).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

from itit import errors
from itit.losses import baselines
from itit.losses import cycles
from itit.losses import paired
from itit.models import flops

TEXT_LOSSES = ('none', 't2t', 't2i2t_half', 't2i2t')
IMAGE_LOSSES = ('none', 'i2i', 'i2t2i_half', 'i2t2i')
# Table 2 of the paper, rows on one paired dataset: row -> (loss.t2i, loss.i2t,
# loss.unpaired_text_loss, loss.unpaired_image_loss); loss.i2i follows loss.t2i. Row 13 also
# reads the paired shards as its unpaired streams; row 4 (more pairs) is data, not losses.
TABLE2_ROWS = {
    1: (True, False, 'none', 'none'),
    2: (False, True, 'none', 'none'),
    3: (True, True, 'none', 'none'),
    5: (True, True, 't2t', 'none'),
    6: (True, True, 'none', 'i2i'),
    7: (True, True, 't2t', 'i2i'),
    8: (True, True, 't2i2t_half', 'none'),
    9: (True, True, 'none', 'i2t2i_half'),
    10: (True, True, 't2i2t_half', 'i2t2i_half'),
    11: (True, True, 't2i2t', 'none'),
    12: (True, True, 'none', 'i2t2i'),
    13: (True, True, 't2i2t', 'i2t2i'),
    14: (True, True, 't2i2t', 'i2t2i'),
}


# -- training FLOPs of each loss (all devices together) ----------------------------------------

def _text_encoder_train(mc, batch, length, distributions=False, input_grad=False):
  """3x for the learned encoder; the frozen T5: 1x, or 2x when gradient must reach its input."""
  forward = flops.text_encoder(mc, batch, length, distributions)
  if mc.text_encoder.kind == 't5':
    return forward * (2 if input_grad else 1)
  return 3 * forward


def _sizes(config):
  """(N image tokens, N kept by a dropping pass, kept by a T2I pass, L, empty-text FLOPs)."""
  mc = config.model
  n = mc.image_grid ** 2
  kept = n - mc.num_dropped
  # A T2I reconstruction's encoder pass drops nothing under the cosine mask schedule.
  t2i_kept = n if config.loss.get('t2i_mask_schedule') == 'cosine' else kept
  return n, kept, t2i_kept, mc.max_text_len, flops.text_encoder(mc, 1, 1)


def _paired_batch(config) -> int:
  """Examples each paired loss reads: half the paired batch under batch.paired_split."""
  return config.batch.paired // (2 if config.batch.get('paired_split') else 1)


def _t2i_flops(config, batch):
  mc = config.model
  _, _, t2i_kept, length, _ = _sizes(config)
  return (_text_encoder_train(mc, batch, length) + 3 * flops.encoder(mc, batch, t2i_kept, length)
          + 3 * flops.image_decoder(mc, batch)), 0.0


def _i2t_flops(config, batch):
  mc = config.model
  _, kept, _, length, empty = _sizes(config)
  train = 3 * (flops.encoder(mc, batch, kept, 1)
               + flops.text_decoder(mc, batch, kept + 1, length)) + empty
  if config.loss.i2i:
    train += 3 * flops.image_decoder(mc, batch)
  return train, 0.0


def _i2i_flops(config, batch):
  mc = config.model
  _, kept, _, _, empty = _sizes(config)
  return 3 * (flops.encoder(mc, batch, kept, 1) + flops.image_decoder(mc, batch)) + empty, 0.0


def _t2t_flops(config, batch):
  return 3 * flops.text_decoder(config.model, batch, 0, config.model.max_text_len), 0.0


def _t2i2t_flops(config, batch):
  mc, c = config.model, config.cycle
  _, kept, t2i_kept, length, empty = _sizes(config)
  half = config.loss.unpaired_text_loss == 't2i2t_half'
  first_encoder = 1 if c.stop_first_encoder_grad else 3
  # A pseudo pair serves cycle.reuse steps: its synthesis is paid once per reuse steps.
  synthesis = flops.image_sampler(mc, batch, length, c.synthesis_steps,
                                  bool(c.guidance_scale)) / c.reuse
  text = (flops.text_encoder(mc, batch, length) if c.stop_first_encoder_grad
          else _text_encoder_train(mc, batch, length))
  train = (text + first_encoder * flops.encoder(mc, batch, t2i_kept, length)
           + (1 if half else 3) * flops.image_decoder(mc, batch)
           + 3 * flops.encoder(mc, batch, kept, 1, image_distributions=True) + empty
           + 3 * flops.text_decoder(mc, batch, kept + 1, length))
  return train, synthesis


def _i2t2i_flops(config, batch):
  mc, c = config.model, config.cycle
  _, kept, t2i_kept, length, empty = _sizes(config)
  half = config.loss.unpaired_image_loss == 'i2t2i_half'
  first_encoder = 1 if c.stop_first_encoder_grad else 3
  synthesis = flops.captioner(mc, batch, length) / c.reuse
  train = (first_encoder * flops.encoder(mc, batch, kept, 1) + empty
           + (1 if half else 3) * flops.text_decoder(mc, batch, kept + 1, length)
           + _text_encoder_train(mc, batch, length, distributions=True, input_grad=not half)
           + 3 * flops.encoder(mc, batch, t2i_kept, length) + 3 * flops.image_decoder(mc, batch))
  return train, synthesis


# -- the registry ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Loss:
  """One term of the objective.

  fn: `(params, batch, rng, *, model, config, deterministic=False) -> (loss, metrics)`.
  enabled: config -> whether the config's switches turn this loss on.
  flops: (config, batch) -> (training FLOPs, synthesis FLOPs) of one step on `batch` examples.
  paired_half: under batch.paired_split, the half of the paired batch this loss reads.
  cycle: trains on pseudo pairs the model makes itself (eqs. 3-4): skipped before
    cycle.start_step.
  pseudo_pair, on_pseudo_pair: a cycle's two halves, `fn` = on_pseudo_pair after pseudo_pair:
    `(params, batch, rng, *, model, config) -> pair` (the synthesis, no gradient) and
    `(params, pair, rng, *, model, config, deterministic=False) -> (loss, metrics)`; the train
    step calls them apart to reuse a pair for cycle.reuse steps.
  """
  name: str
  label: str
  stream: str
  fn: Callable
  enabled: Callable
  flops: Callable
  paired_half: int | None = None
  cycle: bool = False
  default_weight: float = 1.0
  pseudo_pair: Callable | None = None
  on_pseudo_pair: Callable | None = None


LOSSES = {loss.name: loss for loss in (
    Loss('t2i', 'T2I (eq. 2)', 'paired', paired.t2i_loss,
         lambda c: c.loss.t2i, _t2i_flops, paired_half=0),
    # I2T with its I2I term (loss.i2i) from the same encoder pass.
    Loss('i2t', 'I2T (eq. 1) + I2I', 'paired', paired.i2t_loss,
         lambda c: c.loss.i2t, _i2t_flops, paired_half=1),
    # I2I alone on pairs: loss.i2i without loss.i2t (table 2 row 1).
    Loss('i2i', 'I2I', 'paired', paired.i2i_loss,
         lambda c: c.loss.i2i and not c.loss.i2t, _i2i_flops, paired_half=1),
    Loss('t2t', 'T2T', 'unpaired_text', baselines.t2t_loss,
         lambda c: c.loss.unpaired_text_loss == 't2t', _t2t_flops),
    Loss('unpaired_i2i', 'I2I on unpaired images', 'unpaired_image', paired.i2i_loss,
         lambda c: c.loss.unpaired_image_loss == 'i2i', _i2i_flops),
    Loss('t2i2t', 'T2I2T (eq. 3)', 'unpaired_text', cycles.t2i2t_loss,
         lambda c: c.loss.unpaired_text_loss in ('t2i2t', 't2i2t_half'), _t2i2t_flops,
         cycle=True, pseudo_pair=cycles.t2i2t_pseudo_pair,
         on_pseudo_pair=cycles.t2i2t_on_pseudo_pair),
    Loss('i2t2i', 'I2T2I (eq. 4)', 'unpaired_image', cycles.i2t2i_loss,
         lambda c: c.loss.unpaired_image_loss in ('i2t2i', 'i2t2i_half'), _i2t2i_flops,
         cycle=True, pseudo_pair=cycles.i2t2i_pseudo_pair,
         on_pseudo_pair=cycles.i2t2i_on_pseudo_pair),
)}
DEFAULT_WEIGHTS = {name: loss.default_weight for name, loss in LOSSES.items()}
CYCLE_LOSSES = tuple(name for name, loss in LOSSES.items() if loss.cycle)


def enabled_losses(config) -> list[str]:
  """The names of the losses `config` trains, sorted; bad switches -> one clear error."""
  text_loss, image_loss = config.loss.unpaired_text_loss, config.loss.unpaired_image_loss
  if text_loss not in TEXT_LOSSES:
    raise errors.UserError(f'loss.unpaired_text_loss={text_loss!r}; use one of {TEXT_LOSSES}')
  if image_loss not in IMAGE_LOSSES:
    raise errors.UserError(f'loss.unpaired_image_loss={image_loss!r}; use one of {IMAGE_LOSSES}')
  names = sorted(name for name, loss in LOSSES.items() if loss.enabled(config))
  if not names:
    raise errors.UserError('config.loss enables no loss: set at least one of loss.t2i, '
                           'loss.i2t')
  return names


def streams(config) -> list[str]:
  """The input streams the enabled losses read, sorted."""
  return sorted({LOSSES[name].stream for name in enabled_losses(config)})


def _times_weight(fn, weight):
  def fn_times_weight(*args, **kwargs):
    loss, metrics = fn(*args, **kwargs)
    return weight * loss, metrics
  return fn_times_weight


def make_loss_fns(config, model) -> dict[str, tuple[str, Callable]]:
  """The enabled losses: name -> (input stream, fn(params, batch, rng) -> (loss, metrics)), each
  bound to `model` and `config` and multiplied by loss.weights[name]."""
  fns = {}
  for name in enabled_losses(config):
    loss = LOSSES[name]
    fn = functools.partial(loss.fn, model=model, config=config)
    weight = config.loss.weights[name]
    fns[name] = (loss.stream, fn if weight == 1.0 else _times_weight(fn, weight))
  return fns


def make_cycle_parts(config, model) -> dict[str, tuple[Callable, Callable]]:
  """The enabled cycle losses' halves: name -> (pseudo_pair(params, batch, rng) -> pair,
  on_pseudo_pair(params, pair, rng) -> (loss, metrics)), bound like `make_loss_fns` (the
  weight on the second)."""
  parts = {}
  for name in enabled_losses(config):
    loss = LOSSES[name]
    if loss.pseudo_pair is None:
      continue
    on_pair = functools.partial(loss.on_pseudo_pair, model=model, config=config)
    weight = config.loss.weights[name]
    parts[name] = (functools.partial(loss.pseudo_pair, model=model, config=config),
                   on_pair if weight == 1.0 else _times_weight(on_pair, weight))
  return parts


def pseudo_pair_shapes(config) -> dict[str, dict[str, tuple[int, int]]]:
  """The pseudo pairs a train step keeps for cycle.reuse > 1 (global batch, int32):
  {cycle loss: {field: [batch, length]}}; {} when nothing is reused."""
  if config.cycle.reuse <= 1:
    return {}
  tokens, length = config.model.image_grid ** 2, config.model.max_text_len
  fields = {'t2i2t': (('text_ids', length), ('pseudo_image', tokens)),
            'i2t2i': (('image_tokens', tokens), ('pseudo_text', length))}
  return {name: {field: (batch_size(config, name), size) for field, size in fields[name]}
          for name in enabled_losses(config) if name in fields}


def label(config, name: str) -> str:
  """What loss `name` is, for the run summary ('T2I2T (eq. 3), half cycle')."""
  half = ((name == 't2i2t' and config.loss.unpaired_text_loss == 't2i2t_half')
          or (name == 'i2t2i' and config.loss.unpaired_image_loss == 'i2t2i_half'))
  return LOSSES[name].label + (', half cycle' if half else '')


def batch_size(config, name: str) -> int:
  """Examples loss `name` reads per step."""
  stream = LOSSES[name].stream
  return _paired_batch(config) if stream == 'paired' else config.batch[stream]


def loss_flops(config, name: str) -> dict:
  """Training FLOPs of one step of loss `name`: {'train': ..., 'synthesis': ...}."""
  train, synthesis = LOSSES[name].flops(config, batch_size(config, name))
  return {'train': train, 'synthesis': synthesis}


def train_step_flops(config, loss_names) -> dict:
  """FLOPs of one train step (all devices together) with the losses `loss_names`.

  Returns {'<loss>': train + synthesis FLOPs, ..., 'synthesis': the synthesis share,
  'total': the step}.
  """
  out, synthesis = {}, 0.0
  for name in sorted(loss_names):
    parts = loss_flops(config, name)
    out[name] = parts['train'] + parts['synthesis']
    synthesis += parts['synthesis']
  out['synthesis'] = synthesis
  out['total'] = sum(out[name] for name in loss_names)
  return out


def table2_row_of(config) -> int | None:
  """The table 2 row whose losses (and streams) `config` trains, or None for a custom mix."""
  loss = config.loss
  switches = (loss.t2i, loss.i2t, loss.unpaired_text_loss, loss.unpaired_image_loss)
  rows = [row for row, values in TABLE2_ROWS.items() if values == switches]
  if not rows or loss.i2i != loss.t2i:
    return None
  own_data = (config.data.unpaired_image == config.data.paired
              and config.data.unpaired_text == config.data.paired)
  if set(rows) == {13, 14}:
    return 13 if own_data else 14
  return rows[0]

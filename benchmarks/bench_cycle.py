r"""Step time of the full ITIT step (table 2 row 14) over the paired-only step (row 3).

Times, on the `shapes` config with random-init parameters and random token batches, the jitted
`itit.trainer.step.train_step` (median of --steps after one warm-up/compile call) for:
  row3_total   paired-only, batch.paired = paired + unpaired_image + unpaired_text (equal total
               examples per step with row 14)
  row3_same    paired-only at the same batch.paired as row 14 (the same per-loss batches)
  row14_sN     the full ITIT step with cycle.synthesis_steps = N (guided synthesis)
  row14_sN_ng  the same without guidance in synthesis (cycle.guidance_scale = 0)
and, alone and jitted at the unpaired batch size, the synthesis: `gen_sN` (generate_images with
the cycle settings), `gen_sN_ng`, `captions` (greedy generate_captions).

  python -m benchmarks.bench_cycle
  python -m benchmarks.bench_cycle --runs=row3_total,row14_s8,gen_s8,captions --steps=5

Random-init captions rarely emit EOS, so greedy captioning runs to max_text_len: the captioning
figure is the worst case.
"""
import argparse
import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.benchmark import time_calls
from configs import shapes
from itit.losses import cycles
from itit.losses import registry
from itit.models import itit as itit_model
from itit.trainer import optimizer as optimizer_lib
from itit.trainer import state as state_lib
from itit.trainer import step as step_lib

DEFAULT_RUNS = ('row3_total,row3_same,row14_s8,row14_s24,row14_s4,row14_s8_ng,'
                'gen_s8,gen_s24,gen_s4,gen_s8_ng,captions')


def random_batch(config, rng, size):
  """{image_tokens [size, N], text_ids [size, L]}: captions of 8-20 tokens, EOS, padding."""
  m = config.model
  images = rng.randint(0, m.image_vocab_size, (size, m.image_grid ** 2)).astype(np.int32)
  texts = rng.randint(2, m.text_vocab_size, (size, m.max_text_len)).astype(np.int32)
  lengths = rng.randint(8, 21, size)
  texts[np.arange(m.max_text_len)[None] > lengths[:, None]] = 0
  texts[np.arange(size), lengths] = 1
  return {'image_tokens': images, 'text_ids': texts}


def parse_run(name):
  """'row14_s8_ng' -> (kind, synthesis steps, guidance on)."""
  parts = name.split('_')
  steps = next((int(p[1:]) for p in parts if p.startswith('s') and p[1:].isdigit()), 8)
  return parts[0], steps, 'ng' not in parts


def make_config(name):
  kind, steps, guided = parse_run(name)
  config = shapes.get_config('row14' if kind in ('row14', 'gen', 'captions') else 'row3')
  config.cycle.synthesis_steps = steps
  config.cycle.guidance_scale = config.cycle.guidance_scale if guided else 0.0
  if name == 'row3_total':
    config.batch.paired = sum(config.batch[s] for s in ('paired', 'unpaired_image',
                                                         'unpaired_text'))
  return config


def _time_calls(fn, steps):
  """(first call incl. compile, median of `steps` later calls), seconds."""
  timing = time_calls(fn, steps)
  return timing['first_s'], timing['median_s']


def bench(name, steps, params, data_rng):
  config = make_config(name)
  model = itit_model.ITIT(config.model)
  kind = parse_run(name)[0]
  key = jax.random.PRNGKey(0)
  if kind == 'gen':
    fn = jax.jit(functools.partial(cycles.synthesize_pseudo_images, model=model,
                                   config=config))
    texts = random_batch(config, data_rng, config.batch.unpaired_text)['text_ids']
    return _time_calls(lambda: fn(params, texts, key), steps), config.batch.unpaired_text
  if kind == 'captions':
    fn = jax.jit(functools.partial(cycles.synthesize_pseudo_captions, model=model,
                                   config=config))
    images = random_batch(config, data_rng, config.batch.unpaired_image)['image_tokens']
    return _time_calls(lambda: fn(params, images), steps), config.batch.unpaired_image
  loss_fns = registry.make_loss_fns(config, model)
  streams = sorted({stream for stream, _ in loss_fns.values()})
  batch = {s: random_batch(config, data_rng, config.batch[s]) for s in streams}
  tx, schedule = optimizer_lib.make_optimizer(config.optimizer, config.total_steps)
  state = state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                           opt_state=tx.init(params), rng=jax.random.PRNGKey(1),
                           first_nonfinite_step=jnp.full((), -1, jnp.int32),
                           skipped_steps=jnp.zeros((), jnp.int32))
  step_fn = jax.jit(functools.partial(step_lib.train_step, loss_fns=loss_fns, tx=tx,
                                      schedule=schedule, nan_policy='halt'))
  holder = [state]

  def one_step():
    holder[0], metrics = step_fn(holder[0], batch)
    return metrics['loss']

  return _time_calls(one_step, steps), sum(config.batch[s] for s in streams)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--runs', default=DEFAULT_RUNS)
  parser.add_argument('--steps', type=int, default=5, help='timed calls per run (median)')
  args = parser.parse_args()
  print(f'uptime at start: {os.popen("uptime").read().strip()}; jax {jax.__version__}, '
        f'{jax.devices()[0].device_kind}', flush=True)
  config = shapes.get_config()
  params = nn.unbox(jax.jit(lambda r: itit_model.init_params(config.model, r))(
      jax.random.PRNGKey(0)))
  data_rng = np.random.RandomState(0)
  rows = []
  runs = args.runs.split(',')
  for index, name in enumerate(runs, 1):
    (first, median), examples = bench(name, args.steps, params, data_rng)
    rows.append((name, examples, first, median))
    print(f'[{index}/{len(runs)}] {name}: {examples} examples, first call {first:.1f} s, '
          f'median {median:.3f} s', flush=True)
  print(f'uptime at end: {os.popen("uptime").read().strip()}')
  print('\n| run | examples/step | first call (s, with compile) | median (s) |\n|---|---|---|---|')
  for name, examples, first, median in rows:
    print(f'| {name} | {examples} | {first:.1f} | {median:.3f} |')
  medians = {name: median for name, _, _, median in rows}
  for name in medians:
    if name.startswith('row14') and 'row3_total' in medians:
      print(f'{name} / row3_total = {medians[name] / medians["row3_total"]:.2f}x')


if __name__ == '__main__':
  main()

r"""Speed of ITIT: train steps, T2I sampling, captioning, input pipeline, MFU (issue 11).

Random-init parameters and random token batches (no checkpoint or data needed). Each timing is
the median of --steps calls after one warm-up call (which compiles), with block_until_ready.

  (a) step    the paired-only step (table 2 row 3, batch.paired = 3 x --batch) and the full ITIT
              step (row 14: paired, unpaired text and unpaired images, --batch each): equal total
              examples per step; their time ratio.
  (b) t2i     images/s of `generate.jit_image_sampler` (24 steps), with and without guidance.
  (c) caption captions/s: greedy and beam 4 with the KV cache, and greedy without a cache (the
              full decoder pass rerun at every step over a max_len buffer) -> the cache speedup.
  (d) input   records/s of `pipeline.make_iterator` over synthetic shards, against the examples/s
              the row-14 step consumes.
  (e) MFU     from `itit.models.flops` for every timed jit (TFLOP/s per device; MFU on known
              devices).

  python -m benchmarks.benchmark --config=configs/shapes.py --batch=64 --steps=5 --out=results.json
  python -m benchmarks.benchmark --config=configs/vit_b.py --batch=32 \
      --config.model.attention_impl=cudnn --parts=step --out=gpu.json

`--config.KEY=VALUE` overrides any config field. `--parts` picks parts; results are merged
into --out if it exists, so several invocations (one per part, as benchmarks/gpu_check.sh does)
fill one file. Random-init captioners rarely emit EOS, so captioning runs to max_text_len: the
worst case, the same for the cached and uncached loops.
"""
import argparse
import datetime
import functools
import importlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from configs import base
from itit.decoding import generate
from itit.losses import registry
from itit.models import flops
from itit.models import itit as itit_model
from itit.trainer import optimizer as optimizer_lib
from itit.trainer import state as state_lib
from itit.trainer import step as step_lib

PARTS = ('step', 't2i', 'caption', 'input')


# -- configs -----------------------------------------------------------------------------------

def load_config(spec, overrides):
  """'configs/x.py[:arg]' + ['model.dtype=bfloat16', ...] -> ConfigDict (values cast to the
  field's type; 'none' clears a field)."""
  path, _, arg = spec.partition(':')
  module = importlib.import_module(os.path.splitext(path)[0].replace('/', '.'))
  config = module.get_config(arg or None) if arg else module.get_config()
  for item in overrides:
    key, _, value = item.partition('=')
    *parents, leaf = key.split('.')
    node = config
    for name in parents:
      node = node[name]
    if leaf not in node:
      raise ValueError(f'--config.{key}: no such field in {path}')
    old = node[leaf]
    if value.lower() == 'none':
      node[leaf] = None
    elif isinstance(old, bool):
      node[leaf] = value.lower() in ('1', 'true', 'yes')
    elif isinstance(old, (int, float)) and not isinstance(old, bool):
      node[leaf] = type(old)(value)
    else:
      node[leaf] = value
  return config


def row_config(config, row, batch):
  """Table 2 `row` with per-stream batch `batch` (row 3: 3 x batch paired, the same total)."""
  config = base.table2_row(config.copy_and_resolve_references(), row)
  # Both paired losses read the whole paired batch, as in every figure recorded so far.
  config.batch.paired_split = False
  if row == 3:
    config.batch.update(dict(paired=3 * batch, unpaired_image=batch, unpaired_text=batch))
  else:
    config.batch.update(dict(paired=batch, unpaired_image=batch, unpaired_text=batch))
  return config


def random_batch(model_config, rng, size):
  """{image_tokens [size, N], text_ids [size, L]}: captions of 40-80% of max_text_len + EOS."""
  m = model_config
  images = rng.integers(0, m.image_vocab_size, (size, m.image_grid ** 2)).astype(np.int32)
  texts = rng.integers(2, m.text_vocab_size, (size, m.max_text_len)).astype(np.int32)
  lengths = rng.integers(int(0.4 * m.max_text_len), int(0.8 * m.max_text_len), size)
  texts[np.arange(m.max_text_len)[None] > lengths[:, None]] = 0
  texts[np.arange(size), lengths] = 1
  return {'image_tokens': images, 'text_ids': texts}


# -- timing ------------------------------------------------------------------------------------

def time_calls(fn, steps):
  """{'first_s': first call (compile + run), 'median_s': median of `steps` later calls}."""
  start = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - start
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return {'first_s': first, 'median_s': statistics.median(times), 'timed_calls': steps}


def with_flops(timing, flops_per_call):
  timing.update(flops_per_call=flops_per_call, **flops.mfu(
      flops_per_call, timing['median_s'], jax.device_count(), jax.devices()[0].device_kind))
  return timing


def init_params(model_config):
  return nn.unbox(jax.jit(lambda r: itit_model.init_params(model_config, r))(
      jax.random.PRNGKey(0)))


# -- (a) train steps ---------------------------------------------------------------------------

def make_step(config, params, rng):
  """(one_call() -> loss, loss names, examples per step, steps per call) for the jitted,
  donated train step. A call runs cycle.reuse steps (one synthesis and its reuses), so the
  time of a call over its steps is the mean step time of the cycle."""
  model = itit_model.ITIT(config.model)
  loss_fns = registry.make_loss_fns(config, model)
  streams = sorted({stream for stream, _ in loss_fns.values()})
  batch = jax.device_put({s: random_batch(config.model, rng, config.batch[s]) for s in streams})
  tx, schedule = optimizer_lib.make_optimizer(config.optimizer, config.total_steps)
  params = jax.tree.map(jnp.array, params)  # a copy: the step donates its state
  state = state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                           opt_state=tx.init(params),
                           rng=jax.random.key(1, impl=config.prng_impl),
                           first_nonfinite_step=jnp.full((), -1, jnp.int32),
                           skipped_steps=jnp.zeros((), jnp.int32),
                           pseudo_pairs=state_lib.initial_pseudo_pairs(config))
  reuse = config.cycle.reuse
  step_fn = jax.jit(functools.partial(step_lib.train_step, loss_fns=loss_fns, tx=tx,
                                      schedule=schedule, nan_policy='halt',
                                      cycle_parts=registry.make_cycle_parts(config, model),
                                      reuse=reuse),
                    donate_argnums=(0,))
  holder = [state]

  def one_call():
    for _ in range(reuse):
      holder[0], metrics = step_fn(holder[0], batch)
    return metrics['loss']

  return one_call, sorted(loss_fns), sum(config.batch[s] for s in streams), reuse


def bench_step(config, args, results, rng):
  """Step time of each table-2 row in --rows; the row-14 / row-3 ratio once both are in
  `results` (under the same --tag), so separate processes can time one row each."""
  params = init_params(config.model)
  rows = [int(r) for r in args.rows.split(',')]
  for row in rows:
    row_cfg = row_config(config, row, args.batch)
    one_step, names, examples, steps_per_call = make_step(row_cfg, params, rng)
    timing = time_calls(one_step, args.steps)
    for key in ('first_s', 'median_s'):  # per step (a call runs cycle.reuse of them)
      timing[key] /= steps_per_call
    step_flops = registry.train_step_flops(row_cfg, names)
    with_flops(timing, step_flops['total'])
    timing.update(losses=names, examples_per_step=examples,
                  examples_per_s=examples / timing['median_s'],
                  synthesis_flops_fraction=step_flops['synthesis'] / step_flops['total'],
                  synthesis_steps=row_cfg.cycle.synthesis_steps,
                  guidance_scale=row_cfg.cycle.guidance_scale, reuse=row_cfg.cycle.reuse)
    key = f'step_row{row}{args.tag}'
    results[key] = timing
    report(key, timing)
    save(args, results)
    if row == rows[-1] and args.trace_dir:
      try:
        with jax.profiler.trace(args.trace_dir):
          for _ in range(2):
            jax.block_until_ready(one_step())
        results['trace_dir'] = args.trace_dir
      except Exception as e:  # pylint: disable=broad-except
        results.setdefault('notes', []).append(f'profiler trace failed: {e!r:.300}')
    del one_step
  baseline = results.get(f'step_row3{args.tag}', results.get('step_row3'))
  if baseline and f'step_row14{args.tag}' in results:
    ratio = results[f'step_row14{args.tag}']['median_s'] / baseline['median_s']
    results[f'itit_over_baseline{args.tag}'] = ratio
    print(f'ITIT (row 14{args.tag}) / baseline (row 3) step time: {ratio:.2f}x', flush=True)


# -- (b) T2I sampling --------------------------------------------------------------------------

def bench_t2i(config, args, results, rng):
  model = itit_model.ITIT(config.model)
  params = init_params(config.model)
  m = config.model
  texts = jnp.asarray(random_batch(m, rng, args.sample_batch)['text_ids'])
  key = jax.random.PRNGKey(0)
  for guided in (True, False):
    sampler = generate.jit_image_sampler(model, num_steps=args.t2i_steps,
                                         guidance_scale=2.0 if guided else 0.0)
    timing = time_calls(lambda: sampler(params, texts, key), args.steps)
    with_flops(timing, flops.image_sampler(m, args.sample_batch, m.max_text_len,
                                           args.t2i_steps, guided))
    timing.update(batch=args.sample_batch, num_steps=args.t2i_steps,
                  images_per_s=args.sample_batch / timing['median_s'])
    name = f't2i_{"guided" if guided else "unguided"}'
    results[name] = timing
    report(name, timing)
    save(args, results)


# -- (c) captioning ----------------------------------------------------------------------------

def greedy_without_cache(params, image_tokens, *, model, max_len):
  """Greedy captions that rerun the full decoder pass over a [B, max_len] buffer every step.

  The reference for the KV cache: position i's logits come from the teacher-forced pass over
  [BOS, tokens so far, zeros] (the causal mask hides the zeros). Returns ids [B, max_len].
  """
  encoded = generate.encode_image_for_captioning(params, image_tokens, model=model)
  batch = image_tokens.shape[0]

  def body(i, ids):
    text_in = jnp.concatenate([jnp.zeros((batch, 1), jnp.int32), ids[:, :-1]], axis=1)
    logits = model.apply({'params': params}, encoded, text_in, deterministic=True,
                         method=itit_model.ITIT.decode_text)
    next_token = jnp.argmax(jax.lax.dynamic_index_in_dim(logits, i, 1, keepdims=False), -1)
    return jax.lax.dynamic_update_index_in_dim(ids, next_token.astype(jnp.int32), i, 1)

  return jax.lax.fori_loop(0, max_len, body, jnp.zeros((batch, max_len), jnp.int32))


def bench_caption(config, args, results, rng):
  model = itit_model.ITIT(config.model)
  params = init_params(config.model)
  m = config.model
  images = jnp.asarray(random_batch(m, rng, args.sample_batch)['image_tokens'])
  runs = {
      'caption_greedy_cached': (generate.jit_captioner(model, beam_size=1), 1, True),
      'caption_beam4_cached': (generate.jit_captioner(model, beam_size=4), 4, True),
      'caption_greedy_uncached': (jax.jit(functools.partial(
          greedy_without_cache, model=model, max_len=m.max_text_len)), 1, False),
  }
  outputs = {}
  for name, (fn, beam, cached) in runs.items():
    timing = time_calls(lambda fn=fn: fn(params, images), args.steps)
    outputs[name] = fn(params, images)
    with_flops(timing, flops.captioner(m, args.sample_batch, m.max_text_len, beam, cached))
    timing.update(batch=args.sample_batch, beam_size=beam, max_len=m.max_text_len,
                  captions_per_s=args.sample_batch / timing['median_s'])
    results[name] = timing
    report(name, timing)
    save(args, results)
  cached_ids = np.asarray(outputs['caption_greedy_cached'][0])
  reference = np.asarray(outputs['caption_greedy_uncached'])
  # Up to each row's first EOS (the cached loop pads after it; the reference runs on).
  upto_eos = np.cumsum(np.cumsum(cached_ids == generate.EOS_ID, 1), 1) <= 1
  results['caption_cache_agreement'] = float(np.mean((cached_ids == reference)[upto_eos]))
  results['caption_cache_speedup'] = (results['caption_greedy_uncached']['median_s']
                                      / results['caption_greedy_cached']['median_s'])
  print(f'captioning: cache speedup {results["caption_cache_speedup"]:.1f}x, cached ids equal '
        f'the reference on {100 * results["caption_cache_agreement"]:.1f}% of tokens', flush=True)


# -- (d) input pipeline ------------------------------------------------------------------------

def bench_input(config, args, results, rng):
  del rng
  from benchmarks import bench_shards  # the synthetic shard writer
  from itit.data import pipeline
  from itit.data import shards
  m = config.model
  batch = args.batch
  with tempfile.TemporaryDirectory() as tmp:
    out_dir = os.path.join(tmp, 'shards')
    bench_shards.write(out_dir, args.input_records, m.image_grid, m.max_text_len,
                       records_per_shard=max(args.input_records // 4, 1))
    iterator = pipeline.make_iterator(shards.open_shards(out_dir), batch_size=batch, seed=0)
    for _ in range(5):
      next(iterator)
    num_batches = max(args.input_records // batch, 20)
    start = time.perf_counter()
    for _ in range(num_batches):
      next(iterator)
    seconds = time.perf_counter() - start
  records_per_s = num_batches * batch / seconds
  results['input'] = {'records_per_s': records_per_s, 'batch': batch, 'batches': num_batches}
  consumed = results.get('step_row14', {}).get('examples_per_s')
  if consumed:
    # Row 14 reads three streams, each through its own iterator like this one.
    results['input']['row14_examples_per_s'] = consumed
    results['input']['headroom'] = records_per_s / (consumed / 3)
  print(f'input: {records_per_s:,.0f} records/s per stream iterator'
        + (f'; row 14 consumes {consumed / 3:,.0f}/s per stream, headroom '
           f'{results["input"]["headroom"]:.1f}x' if consumed else ''), flush=True)


# -- driver ------------------------------------------------------------------------------------

def save(args, results):
  """Writes the results so far: a part killed by its timeout keeps what it finished."""
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out + '.tmp', 'w') as f:
    json.dump(results, f, indent=1)
  os.replace(args.out + '.tmp', args.out)


def report(name, timing):
  extra = ', '.join(f'{k} {timing[k]:.1f}' for k in ('examples_per_s', 'images_per_s',
                                                       'captions_per_s') if k in timing)
  mfu = f', MFU {100 * timing["mfu"]:.1f}%' if 'mfu' in timing else ''
  print(f'{name}: median {timing["median_s"] * 1e3:.1f} ms (first {timing["first_s"]:.1f} s); '
        f'{extra}; {timing["tflops_per_device"]:.3g} TFLOP/s/device{mfu}', flush=True)


def run_part(name, fn, config, args, results):
  """Runs one part; on failure with cuDNN attention, retries it once with XLA attention."""
  rng = np.random.default_rng(0)
  try:
    fn(config, args, results, rng)
  except Exception as e:  # pylint: disable=broad-except
    message = f'{type(e).__name__}: {str(e)[:800]}'
    traceback.print_exc()
    results.setdefault('errors', {})[name] = message
    if config.model.get('attention_impl') == 'cudnn':
      print(f'{name}: failed with cudnn attention; retrying with xla', flush=True)
      config = config.copy_and_resolve_references()
      config.model.attention_impl = 'xla'
      results.setdefault('notes', []).append(f'{name}: cudnn attention failed ({message[:200]}); '
                                             'figures are with xla attention')
      try:
        fn(config, args, results, rng)
        results.setdefault('attention_impl_used', {})[name] = 'xla'
      except Exception as e2:  # pylint: disable=broad-except
        traceback.print_exc()
        results['errors'][name] += f' | with xla: {type(e2).__name__}: {str(e2)[:800]}'


def print_table(results):
  rows = [k for k in results if isinstance(results[k], dict) and 'median_s' in results[k]]
  print('\n| run | median (ms) | per second | TFLOP/s/device | MFU |\n|---|---|---|---|---|')
  for k in rows:
    r = results[k]
    rate = next((f'{r[n]:.1f} {n.split("_")[0]}' for n in ('examples_per_s', 'images_per_s',
                                                          'captions_per_s') if n in r), '')
    mfu = f'{100 * r["mfu"]:.1f}%' if 'mfu' in r else 'n/a'
    print(f'| {k} | {r["median_s"] * 1e3:.1f} | {rate} | {r["tflops_per_device"]:.3g} | {mfu} |')
  for k, value in results.items():
    if k.startswith(('itit_over_baseline', 'caption_cache_')):
      print(f'{k}: {value:.2f}')
  if 'input' in results:
    print(f'input: {json.dumps(results["input"])}')
  if results.get('errors'):
    print(f'errors: {json.dumps(results["errors"], indent=1)}')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/shapes.py')
  parser.add_argument('--batch', type=int, default=64, help='per-stream train batch')
  parser.add_argument('--sample_batch', type=int, default=0, help='default: --batch')
  parser.add_argument('--steps', type=int, default=5, help='timed calls per run (median)')
  parser.add_argument('--t2i_steps', type=int, default=24)
  parser.add_argument('--input_records', type=int, default=20000)
  parser.add_argument('--parts', default=','.join(PARTS))
  parser.add_argument('--rows', default='3,14', help='table-2 rows the step part times')
  parser.add_argument('--tag', default='',
                      help="suffix of the step part's result keys, e.g. '_unguided8'")
  parser.add_argument('--trace_dir', default='',
                      help="jax.profiler trace of 2 steps of the step part's last row")
  parser.add_argument('--out', default='results.json')
  args, rest = parser.parse_known_args()
  overrides = []
  for item in rest:
    if not item.startswith('--config.'):
      parser.error(f'unknown argument {item!r} (config overrides are --config.KEY=VALUE)')
    overrides.append(item[len('--config.'):])
  args.sample_batch = args.sample_batch or args.batch
  config = load_config(args.config, overrides)

  results = {}
  if os.path.exists(args.out):
    with open(args.out) as f:
      results = json.load(f)
  device = jax.devices()[0]
  results.setdefault('runs', []).append({
      'date': datetime.datetime.now().isoformat(timespec='seconds'),
      'command': ' '.join(sys.argv), 'jax': jax.__version__, 'platform': device.platform,
      'device_kind': device.device_kind, 'device_count': jax.device_count(),
      'host': platform.node(), 'cpu_count': os.cpu_count(),
      'load_average': os.getloadavg()[0], 'config': args.config, 'overrides': overrides,
      'batch': args.batch, 'sample_batch': args.sample_batch,
      'dtype': config.model.dtype, 'attention_impl': config.model.get('attention_impl')})
  print(f'{device.device_kind} x{jax.device_count()}, jax {jax.__version__}, {args.config} '
        f'{overrides}, load {os.getloadavg()[0]:.1f}', flush=True)
  benches = {'step': bench_step, 't2i': bench_t2i, 'caption': bench_caption,
             'input': bench_input}
  for name in args.parts.split(','):
    if name not in benches:
      parser.error(f'--parts: unknown part {name!r}; choose from {PARTS}')
    run_part(name, benches[name], config, args, results)
    save(args, results)
  print_table(results)


if __name__ == '__main__':
  main()

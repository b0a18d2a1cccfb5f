"""Benchmarks reading token shards through the grain pipeline (records/s, one process).

Writes `--num_records` records of {image_tokens: uint16[256], text_ids: int32[64]} (random
tokens, captions of random length) to a temporary folder with `write_shards`, then times
`make_iterator(batch_size, shuffle=True)`. Pin it to one core to measure the per-core figure:

  taskset -c 0 python -m benchmarks.bench_shards
"""
import argparse
import os
import tempfile
import time

import grain
import numpy as np

from itit.data import pipeline
from itit.data import shards
from itit.data.sources import Record


class _RandomTextTokenizer:
  """Stands in for TextTokenizer: random ids + EOS, right-padded, at no tokenizing cost."""

  identity = {'kind': 'random', 'sha256': 'none', 'vocab_size': 32128}

  def __init__(self, seed):
    self._rng = np.random.default_rng(seed)

  def encode(self, texts, max_len):
    lengths = self._rng.integers(5, max_len, len(texts))
    ids = self._rng.integers(2, 32000, (len(texts), max_len)).astype(np.int32)
    ids[np.arange(max_len)[None] >= lengths[:, None]] = 0
    ids[np.arange(len(texts)), lengths] = 1
    return ids


def write(out_dir, num_records, grid, max_text_len, records_per_shard):
  # The "image" carries its own tokens, so the image tokenizer is a reshape and the timing is
  # the writer's, not a model's.
  rng = np.random.default_rng(0)
  # The stand-in text tokenizer ignores the text.
  examples = (Record(str(i), rng.integers(0, 256, (grid, grid, 3), np.uint8), '')
              for i in range(num_records))

  def image_tokenizer(images):
    # 8192-way codes from pixel values: [batch, grid, grid, 3] -> [batch, grid*grid].
    return (images[..., 0].astype(np.int64) * 32 + images[..., 1] % 32).reshape(len(images), -1)

  return shards.write_shards(
      out_dir, examples, image_tokenizer=image_tokenizer,
      text_tokenizer=_RandomTextTokenizer(0), max_text_len=max_text_len,
      identities={'image_tokenizer': {'kind': 'bench', 'sha256': 'none'}},
      config={'bench': True}, records_per_shard=records_per_shard, total=num_records)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--num_records', type=int, default=200_000)
  parser.add_argument('--batch_size', type=int, default=256)
  parser.add_argument('--num_batches', type=int, default=2000,
                      help='batches timed (after 10 warm-up batches); crosses epochs')
  parser.add_argument('--grid', type=int, default=16, help='image tokens per record: grid**2')
  parser.add_argument('--max_text_len', type=int, default=64)
  parser.add_argument('--records_per_shard', type=int, default=10000)
  parser.add_argument('--dir', default='', help='shard folder (default: a temporary one)')
  parser.add_argument('--path', choices=['batched', 'per_record'], default='batched',
                      help="batched: pipeline.make_iterator; per_record: grain's plain "
                      'MapDataset.source(...).shuffle().repeat().batch(), for comparison')
  args = parser.parse_args()

  with tempfile.TemporaryDirectory() as tmp:
    out_dir = args.dir or os.path.join(tmp, 'shards')
    start = time.perf_counter()
    manifest = write(out_dir, args.num_records, args.grid, args.max_text_len,
                     args.records_per_shard)
    write_s = time.perf_counter() - start
    size = sum(os.path.getsize(os.path.join(out_dir, s['file'])) for s in manifest['shards'])
    num_records = manifest['num_records']
    print(f'wrote {num_records} records in {len(manifest["shards"])} shards, '
          f'{size / 2**20:.1f} MiB, {write_s:.1f} s ({num_records / write_s:,.0f} rec/s)')

    source = shards.open_shards(out_dir)
    if args.path == 'batched':
      iterator = pipeline.make_iterator(source, batch_size=args.batch_size, seed=0)
    else:
      dataset = grain.MapDataset.source(source).shuffle(seed=0).repeat().batch(args.batch_size)
      iterator = iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=1,
                                                                prefetch_buffer_size=4)))
    for _ in range(10):
      next(iterator)
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(args.num_batches):
      batch = next(iterator)
    read_s = time.perf_counter() - start
    # CPU seconds of this process (all its threads): the per-core figure on a shared machine.
    read_cpu_s = time.process_time() - start_cpu
    assert batch['image_tokens'].shape == (args.batch_size, args.grid**2)
    assert batch['text_ids'].shape == (args.batch_size, args.max_text_len)
    records = args.num_batches * args.batch_size
    print(f'{args.path} path: read {records} records ({args.num_batches} batches of '
          f'{args.batch_size}, shuffled) '
          f'in {read_s:.2f} s: {records / read_s:,.0f} records/s wall clock, '
          f'{records / read_cpu_s:,.0f} records per CPU second')


if __name__ == '__main__':
  main()

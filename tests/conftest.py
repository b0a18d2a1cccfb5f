"""Fixtures and helpers several test modules share.

The session fixtures are built once per pytest run, however many modules use them: the shapes
SentencePiece models, an untrained shapes VQGAN checkpoint and the tiny ITIT model's initial
parameters. `compile_cache` is a module fixture: a persistent XLA cache (one folder for the whole
run) for a module whose runs compile the same programs. The rest are plain functions (`import
conftest`; pytest puts tests/ on sys.path): the shard writers, whose variants each module builds
once in a module fixture, and the environment for subprocesses.
"""
import os

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax._src import compilation_cache

from configs import tiny
from configs import vqgan_shapes
from itit.data import shapes
from itit.data import shapes_splits
from itit.data import shards
from itit.data.sources import Record
from itit.data.text_tokenizer import TextTokenizer
from itit.models import itit
from itit.models import vqgan
from index_tokenizer import IndexTextTokenizer  # pylint: disable=g-bad-import-order

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The pooled stand-in image tokenizer: a GRID x GRID token grid of CODES values (32px images).
GRID, CODES = 4, 32


def repo_env(**extra):
  """The environment for a subprocess that must import this checkout's `itit`, `configs`, ...

  An installed `itit` may point at another checkout, and `python tests/<worker>.py` puts only
  tests/ on sys.path, so the repository root goes first on PYTHONPATH.
  """
  env = dict(os.environ, **extra)
  env['PYTHONPATH'] = os.pathsep.join(p for p in (REPO, env.get('PYTHONPATH')) if p)
  return env


def apply_overrides(config, overrides):
  """Sets dotted keys ({'optimizer.lr': 1e-3}) on `config`, as --config.KEY=VALUE flags do."""
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    target = config
    for parent in parents:
      target = target[parent]
    target[leaf] = value
  return config


def pooled_tokens(images):
  """A stand-in image tokenizer: 8x8-pixel block means, quantized to CODES values."""
  blocks = np.asarray(images, np.float32).reshape(-1, GRID, 8, GRID, 8, 3).mean(axis=(2, 4))
  value = (blocks[..., 0] // 64) * 16 + (blocks[..., 1] // 64) * 4 + blocks[..., 2] // 64
  return (value.reshape(len(images), GRID * GRID) % CODES).astype(np.int32)


def write_pooled_shards(root, spiece, splits, *, num_test, sha256):
  """Shapes scenes (64 paired, `num_test` test) as pooled tokens and 8 text ids, one folder per
  split of `splits` under `root`; `sha256` names the stand-in image tokenizer."""
  tokenizer = TextTokenizer.load(spiece)
  scenes = shapes_splits.make_splits(0, paired_fraction=1.0, num_train=64, num_test=num_test)
  identity = {'kind': 'pooled', 'sha256': sha256, 'codebook_size': CODES, 'grid_size': GRID}
  for split in splits:
    records = [Record(f'{split}/{i}', image, text)
               for i, (image, text) in enumerate(shapes.examples(scenes[split], seed=0))]
    shards.write_shards(os.path.join(root, split), records, image_tokenizer=pooled_tokens,
                        text_tokenizer=tokenizer, max_text_len=8,
                        identities={'image_tokenizer': identity}, config={'split': split},
                        records_per_shard=32)
  return str(root)


def write_index_shards(out_dir, num_records, max_text_len, token_scale=1):
  """Record i: text ids [i, EOS, 0, ...] (IndexTextTokenizer) and four image tokens
  i * token_scale, 25 records a shard, so a test can tell which records it read."""
  examples = (Record(str(i), np.full((2, 2, 3), i, np.uint8), str(i))
              for i in range(num_records))
  shards.write_shards(
      out_dir, examples,
      image_tokenizer=lambda images: (
          images[..., 0].reshape(len(images), -1).astype(np.int64) * token_scale),
      text_tokenizer=IndexTextTokenizer(), max_text_len=max_text_len,
      identities={'image_tokenizer': {'kind': 'fake', 'sha256': 'f' * 64}}, config={},
      records_per_shard=25)


@pytest.fixture(scope='session')
def shapes_spiece(tmp_path_factory):
  """vocab_size -> the path of a SentencePiece model of `shapes.caption_corpus(num_scenes=300)`,
  trained once per vocabulary size."""
  paths = {}

  def get(vocab_size):
    if vocab_size not in paths:
      path = tmp_path_factory.mktemp(f'spiece{vocab_size}') / 'spiece.model'
      TextTokenizer.train(shapes.caption_corpus(num_scenes=300), path, vocab_size=vocab_size)
      paths[vocab_size] = str(path)
    return paths[vocab_size]

  return get


@pytest.fixture(scope='session')
def shapes_vqgan_dir(tmp_path_factory):
  """An untrained but real 32px VQGAN (configs/vqgan_shapes.py, seed 0) in the layout
  itit.train_tokenizer writes."""
  directory = str(tmp_path_factory.mktemp('vqgan'))
  config = vqgan_shapes.get_config()
  params = jax.jit(lambda rng: vqgan.init_params(config, rng))(jax.random.PRNGKey(0))
  vqgan.save_tokenizer(directory, params, config)
  return directory


@pytest.fixture(scope='session')
def tiny_boxed_params():
  """configs/tiny.py's model parameters from PRNGKey(0), boxed (nn.Partitioned).

  Every tiny preset (row3, row7, row14, ...) shares one model config, and dropout has no
  parameters, so these are each preset's initial parameters. Nothing may donate them: every
  module that asks for them gets the same arrays.
  """
  model_config = tiny.get_config().model
  return jax.jit(lambda rng: itit.init_params(model_config, rng))(jax.random.PRNGKey(0))


@pytest.fixture(scope='session')
def tiny_params(tiny_boxed_params):
  """`tiny_boxed_params` unboxed: plain arrays, as model.apply takes them."""
  return nn.unbox(tiny_boxed_params)


@pytest.fixture(scope='session')
def xla_cache_dir(tmp_path_factory):
  """One folder for every module's persistent XLA cache: a program two modules compile (the
  reliability and checkpoint-damage runs) is compiled once per pytest run."""
  return str(tmp_path_factory.mktemp('xla_cache'))


@pytest.fixture(scope='module')
def compile_cache(xla_cache_dir):
  """A persistent XLA cache for a module and its subprocesses (their environment: the fixture's
  value): a module whose runs compile the same programs (a run, its resumes) compiles each once.
  Other modules compile as usual."""
  names = ('jax_compilation_cache_dir', 'jax_persistent_cache_min_compile_time_secs',
           'jax_persistent_cache_min_entry_size_bytes')
  values = (xla_cache_dir, 0, -1)
  previous = {name: getattr(jax.config, name) for name in names}
  for name, value in zip(names, values):
    jax.config.update(name, value)
  compilation_cache.reset_cache()
  yield {name.upper(): str(value) for name, value in zip(names, values)}
  for name, value in previous.items():
    jax.config.update(name, value)
  compilation_cache.reset_cache()

r"""Raw data -> token shards: `python -m itit.prepare --config=configs/prepare_shapes.py --out_dir=DIR`.

Images go through a trained VQGAN (`--config.image_tokenizer=VQGAN_WORKDIR`), texts through a
SentencePiece model (`--config.text_tokenizer=spiece.model`, or trained here on the training
texts when empty and saved as DIR/spiece.model). Each stream becomes one shard folder
DIR/<stream>/ with a manifest recording both tokenizers' sha256; `itit.train` refuses data whose
identities differ from what a checkpoint was trained on.

Re-running the same command resumes: completed streams are skipped, a partial one continues from
its last complete shard.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Iterator

from absl import app
from absl import flags
import ml_collections
import numpy as np

from itit.data import shapes
from itit.data import shapes_splits
from itit.data import shards
from itit.data import source_registry
from itit.data import sources
from itit.data.text_tokenizer import TextTokenizer
from itit import errors
from itit.models import vqgan

_CONFIG = errors.config_flag('Prepare config file.')
_OUT_DIR = flags.DEFINE_string('out_dir', None, 'Folder of the token shards (one sub-folder per stream).')

# What each stream kind keeps of a record.
KINDS = ('paired', 'image', 'text')


def stream_records(stream_config, *, image_size: int, min_image_size: int,
                   skips: sources.SkipCounter, shapes_splits=None) -> Iterator[sources.Record]:
  """The records of one stream, per its `source`; image-less or text-less as its `kind` says."""
  kind = stream_config.kind
  if kind not in KINDS:
    raise ValueError(f'stream kind must be one of {KINDS}, got {kind!r}')
  read = source_registry.reader(stream_config.source)
  records = read(stream_config, image_size=image_size, min_image_size=min_image_size, skips=skips,
                 shapes_splits=shapes_splits)
  for record in records:
    if kind == 'image':
      yield sources.Record(record.key, record.image, None)
    elif kind == 'text':
      yield sources.Record(record.key, None, record.text)
    else:
      yield record


def refuse_empty(records: Iterator[sources.Record], name: str, stream_config,
                 skips: sources.SkipCounter, min_image_size: int) -> Iterator[sources.Record]:
  """`records` unchanged; a stream that yields none raises SourceError with its skip counts."""
  count = 0
  for record in records:
    count += 1
    yield record
  if count:
    return
  hint = ''
  if skips.counts['too_small']:
    hint = (f'; images with a short side below min_image_size={min_image_size} are skipped: '
            'lower --config.min_image_size (smaller images are then upscaled to image_size)')
  raise sources.SourceError(f'stream {name} ({stream_config.source}) has no usable record: '
                            f'{skips.summary()}{hint}')


def dedup_images(tokenize):
  """Tokenizes each distinct image of a batch once (COCO repeats an image for its 5 captions)."""

  def run(images: np.ndarray) -> np.ndarray:
    index_of, unique, positions = {}, [], []
    for image in images:
      key = hashlib.sha1(image.tobytes()).digest()
      if key not in index_of:
        index_of[key] = len(unique)
        unique.append(image)
      positions.append(index_of[key])
    return np.asarray(tokenize(np.stack(unique)))[np.asarray(positions)]

  return run


def _text_tokenizer(config, out_dir: str) -> tuple[TextTokenizer, str]:
  """(tokenizer, path of its .model) when config.text_tokenizer is empty: the one in `out_dir`
  of an earlier run, or one trained on the corpus and saved there."""
  model_path = os.path.join(out_dir, 'spiece.model')
  if os.path.isfile(model_path):
    return TextTokenizer.load(model_path), model_path
  if config.text_corpus == 'shapes':
    texts = shapes.caption_corpus(seed=config.get('shapes_seed', 0))
  else:
    skips = sources.SkipCounter()
    texts = [r.text for r in sources.text_files(source_registry.glob_paths(config.text_corpus),
                                                skips=skips)]
    if not texts:
      raise sources.SourceError(f'text_corpus={config.text_corpus!r} holds no usable text to '
                                f'train the SentencePiece model on: {skips.summary()}')
  print(f'Training a {config.text_vocab_size}-piece SentencePiece model on {len(texts)} texts.')
  return TextTokenizer.train(texts, model_path, config.text_vocab_size), model_path


def prepare(config: ml_collections.ConfigDict, out_dir: str) -> dict:
  """Writes every configured stream; returns {stream: {'records': n, 'skipped': {...}}}.

  The tokenizers given are loaded (and checked) before `out_dir` is created.
  """
  needs_images = any(s.kind != 'text' for s in config.streams.values())
  image_tokenizer, image_identity = None, None
  if needs_images:
    if not config.image_tokenizer:
      raise errors.UserError('config.image_tokenizer is empty: pass the workdir of a trained '
                             'VQGAN (python -m itit.train_tokenizer) as '
                             '--config.image_tokenizer=DIR')
    params, vq_config = vqgan.load_tokenizer(config.image_tokenizer)
    if vq_config.image_size != config.image_size:
      raise errors.UserError(
          f'the VQGAN in {config.image_tokenizer} takes {vq_config.image_size}px images but '
          f'config.image_size is {config.image_size}: set --config.image_size='
          f'{vq_config.image_size} or pass a VQGAN of {config.image_size}px images')
    image_tokenizer = dedup_images(vqgan.tokenizer_fn(params, vq_config, config.batch_size))
    image_identity = {'kind': 'vqgan', 'sha256': vq_config.sha256,
                      'codebook_size': int(vq_config.codebook_size),
                      'grid_size': int(vqgan.grid_size(vq_config))}
  given_text = config.text_tokenizer and (TextTokenizer.load(config.text_tokenizer),
                                          config.text_tokenizer)
  os.makedirs(out_dir, exist_ok=True)
  splits = None
  if any(s.source == 'shapes' for s in config.streams.values()):
    splits = shapes_splits.make_splits(
        config.shapes.seed, paired_fraction=config.shapes.paired_fraction,
        num_train=config.shapes.num_train, num_test=config.shapes.num_test,
        max_objects=config.shapes.get('max_objects', 2),
        paired_looks_fraction=config.shapes.get('paired_looks', 1.0),
        heldout_combinations=(shapes_splits.DEFAULT_HELDOUT if config.shapes.get('heldout', True)
                              else ()))
  text_tokenizer, text_tokenizer_path = given_text or _text_tokenizer(config, out_dir)
  summary = {}
  for name, stream_config in sorted(config.streams.items()):
    skips = sources.SkipCounter()
    kind = stream_config.kind
    identities = {}
    if kind != 'text':
      identities['image_tokenizer'] = image_identity
    total = len(splits[stream_config.split]) if stream_config.source == 'shapes' else None
    print(f'Stream {name} ({kind}, from {stream_config.source}):', flush=True)
    manifest = shards.write_shards(
        os.path.join(out_dir, name),
        refuse_empty(stream_records(stream_config, image_size=config.image_size,
                                    min_image_size=config.min_image_size, skips=skips,
                                    shapes_splits=splits),
                     name, stream_config, skips, config.min_image_size),
        image_tokenizer=image_tokenizer if kind != 'text' else None,
        text_tokenizer=text_tokenizer if kind != 'image' else None,
        max_text_len=config.max_text_len, identities=identities,
        config=dict(stream=stream_config.to_dict(), image_size=config.image_size,
                    shapes=config.shapes.to_dict() if stream_config.source == 'shapes' else None,
                    # Where evaluation finds the tokenizers again (identities are checked).
                    image_tokenizer_path=(os.path.abspath(config.image_tokenizer)
                                          if kind != 'text' else None),
                    text_tokenizer_path=os.path.abspath(text_tokenizer_path)),
        records_per_shard=config.records_per_shard, batch_size=config.batch_size, total=total)
    summary[name] = {'records': manifest['num_records'], 'skipped': dict(skips.counts)}
    if skips.total:
      print(f'  skipped {skips.total}: {skips.summary()}', flush=True)
  with open(os.path.join(out_dir, 'prepare_summary.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  print(f'Token shards in {os.path.abspath(out_dir)}: ' +
        ', '.join(f'{k}={v["records"]}' for k, v in summary.items()), flush=True)
  return summary


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _CONFIG.value is None or _OUT_DIR.value is None:
    raise app.UsageError('--config and --out_dir are required')
  prepare(_CONFIG.value, _OUT_DIR.value)
  # Every shard and manifest is closed by now. One run in six on the 2-core sandbox segfaulted
  # in native teardown after this point (no Python frame left), which a shell script sees as a
  # failed prepare; leave without running the native destructors.
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(0)  # pylint: disable=protected-access


if __name__ == '__main__':
  errors.run_app(main, outputs=lambda: [_OUT_DIR.value], also=(sources.SourceError,))

r"""How right the pseudo pairs of a shapes-world run are, at every kept checkpoint.

  python -m tools.pseudo_pairs --workdir=RUN [--data_dir=DIR] [--steps=400,1200]
      [--num_examples=256] [--out=FILE.json]

The cycle losses train each direction on pseudo pairs the other direction makes of unpaired
data (eq. (3): an image drawn from an unpaired text; eq. (4): a caption of an unpaired image).
The losses can only check that a pseudo pair is consistent with itself (the run's
`*/pseudo_*_agreement` metrics); on the shapes world the truth is known, so this tool scores the
pairs themselves. For every kept checkpoint of RUN it makes the pseudo pairs of the first
`--num_examples` unpaired images and texts with the training code's own synthesis
(`itit.losses.cycles.i2t2i_pseudo_pair` / `t2i2t_pseudo_pair`, the run's `cycle.*` settings)
and parses them (`itit.data.shapes_parse`):

- pseudo captions: the caption of each unpaired image against the scene the image shows (its
  VQGAN reconstruction parsed; images that parse to no object are left out and counted);
- pseudo images: the image drawn from each unpaired text, decoded by the VQGAN, against the
  text's scene.

Scores are `itit.evaluation.scenes.scene_metrics` (exact scene, and colour / shape / size /
region of the object). `--data_dir` scores a run on another prepared folder's unpaired splits,
e.g. pairs alone (row 3) on the unpaired data the cycles of row 14 read: what pseudo pairs its
model would have made.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import jax
import numpy as np

from itit import errors
from itit.data import shapes_parse
from itit.data import shards
from itit.evaluation import common
from itit.evaluation import scenes
from itit.losses import cycles
from itit.models import vqgan
from itit.trainer import checkpointing
from itit.trainer import run as run_lib

# What a pseudo pair is scored on (scene_metrics' keys).
METRICS = ('exact', 'color', 'shape', 'size', 'region')


def _read_field(folder: str, field: str, count: int, identities: dict) -> np.ndarray:
  if not os.path.isdir(folder):
    raise errors.MissingFileError(f'{folder} does not exist: pass --data_dir, a prepared folder '
                                  'with unpaired splits')
  source = shards.open_shards(folder, identities)
  names = [f['name'] for f in shards.read_manifest(folder)['fields']]
  if field not in names:
    raise errors.UserError(f'{folder} has no {field} field ({", ".join(names)}): pass the '
                           'unpaired split of a prepared folder')
  return np.asarray(source.read_batch(np.arange(min(count, len(source))))[field], np.int32)


@dataclasses.dataclass
class UnpairedTruth:
  """Unpaired images and texts of the shapes world with the scene each shows or describes.

  image_tokens [I, N] and image_scenes: the readable images; text_ids [T, L] and text_scenes:
  the parseable texts; unreadable_images / unparseable_texts: how many were left out;
  detokenize: tokens [B, N] -> uint8 images [B, H, W, 3] (the VQGAN's decoder).
  """
  image_tokens: np.ndarray
  image_scenes: list
  text_ids: np.ndarray
  text_scenes: list
  unreadable_images: int
  unparseable_texts: int
  text_tokenizer: object
  detokenize: Callable


def unpaired_truth(image_tokens, text_ids, text_tokenizer, detokenize) -> UnpairedTruth:
  """The truth of unpaired images (their reconstructions parsed; those with no object left out)
  and texts (parsed; non-shapes-world texts left out). Raises a one-line UserError when no
  image or no text reads as a scene."""
  image_tokens = np.asarray(image_tokens, np.int32)
  text_ids = np.asarray(text_ids, np.int32)
  image_scenes = shapes_parse.parse_images(detokenize(image_tokens))
  readable = np.array([bool(s.objects) for s in image_scenes], bool)
  text_scenes = [shapes_parse.parse_caption(t) for t in text_tokenizer.decode(text_ids)]
  parsed = np.array([s is not None for s in text_scenes], bool)
  for kind, found in (('images', readable), ('texts', parsed)):
    if not found.any():
      raise errors.UserError(f'none of the {len(found)} unpaired {kind} reads as a shapes-world '
                             'scene: this tool scores runs of the shapes world only')
  return UnpairedTruth(
      image_tokens=image_tokens[readable],
      image_scenes=[s for s, keep in zip(image_scenes, readable) if keep],
      text_ids=text_ids[parsed], text_scenes=[s for s, keep in zip(text_scenes, parsed) if keep],
      unreadable_images=int(np.sum(~readable)), unparseable_texts=int(np.sum(~parsed)),
      text_tokenizer=text_tokenizer, detokenize=detokenize)


def load_unpaired_truth(data_dir: str, data_config, *, count: int,
                        batch_size: int) -> UnpairedTruth:
  """`unpaired_truth` of the first `count` records of `data_dir`'s unpaired splits (named as in
  a run's `config.data`), with the tokenizers its paired test split names."""
  # The test split is paired, so its manifest names both tokenizers.
  text_tokenizer, (vq_params, vq_config) = common.stream_tokenizers(
      os.path.join(data_dir, data_config.test))
  image_tokens = _read_field(os.path.join(data_dir, data_config.unpaired_image), 'image_tokens',
                             count, {'image_tokenizer': {'sha256': vq_config.sha256}})
  text_ids = _read_field(os.path.join(data_dir, data_config.unpaired_text), 'text_ids', count,
                         {'text_tokenizer': text_tokenizer.identity})
  return unpaired_truth(image_tokens, text_ids, text_tokenizer,
                        vqgan.detokenizer_fn(vq_params, vq_config, batch_size))


def pseudo_pair_scores(config, model, params, truth: UnpairedTruth, *, seed: int,
                       batch_size: int, caption_fn=None, image_fn=None):
  """-> ({'pseudo_caption/<metric>', 'pseudo_image/<metric>': value}, caption_fn, image_fn).

  caption_fn / image_fn: the jitted synthesis of an earlier call (same config), reused.
  """
  if caption_fn is None:
    caption_fn = jax.jit(lambda p, tokens: cycles.i2t2i_pseudo_pair(
        p, {'image_tokens': tokens}, None, model=model, config=config)['pseudo_text'])
    image_fn = jax.jit(lambda p, ids, rng: cycles.t2i2t_pseudo_pair(
        p, {'text_ids': ids}, rng, model=model, config=config)['pseudo_image'])
  rng = jax.random.PRNGKey(seed)
  captions = common.batched(lambda tokens, _: caption_fn(params, tokens), truth.image_tokens,
                            batch_size)
  # Each batch's key folds in its first example's index.
  images = common.batched(
      lambda ids, index: image_fn(params, ids, jax.random.fold_in(rng, index * batch_size)),
      truth.text_ids, batch_size)
  caption_scenes = [shapes_parse.parse_caption(t) for t in truth.text_tokenizer.decode(captions)]
  image_scenes = shapes_parse.parse_images(truth.detokenize(images))
  scores = {}
  for name, predicted, target in (('pseudo_caption', caption_scenes, truth.image_scenes),
                                  ('pseudo_image', image_scenes, truth.text_scenes)):
    metrics = scenes.scene_metrics(predicted, target)
    scores.update({f'{name}/{k}': float(metrics[k]) for k in METRICS})
  return scores, caption_fn, image_fn


def format_table(rows: list[dict]) -> str:
  """A Markdown table: a row per checkpoint, exact and per-attribute % of both kinds."""
  keys = [f'{kind}/{k}' for kind in ('pseudo_caption', 'pseudo_image') for k in METRICS]
  lines = ['| step | ' + ' | '.join(k.replace('/', ' ') + ' %' for k in keys) + ' |',
           '|---:|' + '---:|' * len(keys)]
  for row in rows:
    lines.append(f'| {row["step"]} | ' + ' | '.join(f'{100 * row[k]:.1f}' for k in keys) + ' |')
  return '\n'.join(lines)


def parse_steps(text: str | None, kept: list[int], workdir: str) -> list[int]:
  """'400,1200' -> [400, 1200] (each a kept checkpoint); None -> every kept step."""
  if not text:
    return kept
  try:
    steps = sorted({int(s) for s in text.split(',') if s.strip()})
  except ValueError:
    raise errors.UserError(
        f'--steps takes comma-separated checkpoint steps, got {text!r}') from None
  missing = [s for s in steps if s not in kept]
  if missing or not steps:
    raise errors.UserError(f'{workdir} has no checkpoint at step(s) {missing or text!r}; '
                           f'it keeps {kept} (pass some of those, or no --steps for all)')
  return steps


def main(argv=None) -> None:
  parser = errors.ArgumentParser(description=__doc__.split('\n\n')[1].strip())
  parser.add_argument('--workdir', required=True, help='an itit.train workdir of the shapes world')
  parser.add_argument('--data_dir', default=None,
                      help="a prepared folder with unpaired splits (default: the run's data.dir)")
  parser.add_argument('--steps', default=None, help='checkpoint steps (default: every kept one)')
  parser.add_argument('--num_examples', type=int, default=256,
                      help='unpaired images and texts scored, the first of each split')
  parser.add_argument('--batch_size', type=int, default=64)
  parser.add_argument('--seed', type=int, default=0, help='the pseudo images\' sampling key')
  parser.add_argument('--out', default=None, help='JSON file for the figures')
  args = parser.parse_args(argv)
  for name in ('num_examples', 'batch_size'):
    if getattr(args, name) < 1:
      parser.error(f'--{name} must be at least 1, got {getattr(args, name)}')
  errors.quiet_library_logs()
  run_lib.check_workdir(args.workdir)
  steps = parse_steps(args.steps, checkpointing.all_steps(args.workdir), args.workdir)
  config = run_lib.load_config(args.workdir)
  data_dir = args.data_dir or config.data.dir
  truth = load_unpaired_truth(data_dir, config.data, count=args.num_examples,
                              batch_size=args.batch_size)
  rows, caption_fn, image_fn = [], None, None
  for step in steps:
    config, model, params, _ = run_lib.load_run(args.workdir, step)
    scores, caption_fn, image_fn = pseudo_pair_scores(
        config, model, params, truth, seed=args.seed, batch_size=args.batch_size,
        caption_fn=caption_fn, image_fn=image_fn)
    rows.append(dict(step=step, **scores))
    print(f'step {step}: pseudo captions exact {100 * scores["pseudo_caption/exact"]:.1f}%, '
          f'pseudo images exact {100 * scores["pseudo_image/exact"]:.1f}%', flush=True)
  print(f'\n{len(truth.image_scenes)} unpaired images ({truth.unreadable_images} unreadable, left '
        f'out) and {len(truth.text_scenes)} unpaired texts ({truth.unparseable_texts} '
        f'unparseable, left out) of {data_dir}; cycle synthesis: {dict(config.cycle)}\n')
  print(format_table(rows))
  if args.out:
    shards.write_json_atomic(args.out, dict(
        workdir=args.workdir, data_dir=data_dir, num_images=len(truth.image_scenes),
        num_texts=len(truth.text_scenes), unreadable_images=truth.unreadable_images,
        unparseable_texts=truth.unparseable_texts, seed=args.seed, rows=rows))
    print(f'Wrote {args.out}')


if __name__ == '__main__':
  errors.run_command(main)

"""The `shapes` evaluator: exact-scene and per-attribute accuracy of both directions.

`ShapesEval` (the registered evaluator) runs a `ShapesSplitEval` on every split of
`eval.shapes_splits` that was prepared (default: test, and heldout_test with its unseen
attribute combinations). Ground truth is the scene each split caption describes (captions fully
specify shapes-world scenes), read with the world's exact parsers (`itit.data.shapes_parse`) and
scored with `itit.evaluation.scenes.scene_metrics`:

- Captioning: caption the test images (greedy or beam), parse the captions with `parse_caption`.
- T2I: generate images from the test captions (parallel decoding), decode them with the VQGAN,
  parse them with `parse_images`.
- The ceiling: the VQGAN reconstructions of the test images' own tokens, parsed the same way.
- Teacher-forced captioning of the whole image, token by token against every caption of the
  scene (`teacher_forced_scores`): a scene has up to 256 captions (templates, paraphrases,
  object order), so after a given prefix several next tokens are right and the plain token
  accuracy cannot reach 1. `i2t_tf_valid_accuracy` counts a prediction right when some caption
  of the scene continues the prefix with it (1.0 is reachable); `i2t_tf_token_accuracy` is the
  plain accuracy against the sampled caption and `i2t_tf_bayes_ceiling` the best plain accuracy
  any captioner can expect on these captions (always predicting the most frequent continuation).
- `i2t_cider`: CIDEr-D of the generated captions against `reference_captions` of each scene
  (5 of its captions, as COCO has 5 per image), with the Python PTB tokenizer (no Java).

Metric names: `shapes/{i2t,t2i}_{color,shape,size,region,relation,count,exact}` on the test
split (the names the training loop has always logged), `shapes_<split>/...` on the others, and
`.../vqgan_ceiling_exact`: the same parser on the VQGAN reconstructions, the best T2I can do.

Runs during training (every `eval_every` steps, `eval.shapes` or `eval.evaluators`), at its
end, and in itit.evaluate.
"""
from __future__ import annotations

import collections
import functools
import os

import jax
import numpy as np

from itit.data import shapes
from itit.data import shapes_parse
from itit.data import shards
from itit.data.text_tokenizer import TextTokenizer
from itit.decoding import generate
from itit import errors
from itit.evaluation import common
from itit.evaluation.metrics import cider
from itit.evaluation import scenes
from itit.evaluation import visualize
from itit.losses import paired
from itit.models import vqgan


def split_names(text: str) -> list[str]:
  """'test, heldout_test' -> ['test', 'heldout_test']."""
  return [name.strip() for name in text.split(',') if name.strip()]


def scene_continuations(scene: shapes.Scene, tokenizer: TextTokenizer,
                        max_len: int) -> dict[tuple[int, ...], collections.Counter]:
  """Prefix (token ids) -> Counter of the next token over all captions of `scene` (EOS too)."""
  continuations = collections.defaultdict(collections.Counter)
  for ids in tokenizer.encode(shapes.all_captions(scene), max_len):
    length = int(np.sum(ids != 0))
    for position in range(length):
      continuations[tuple(ids[:position])][int(ids[position])] += 1
  return continuations


def teacher_forced_scores(predicted: np.ndarray, text_ids: np.ndarray,
                          continuations: list[dict]) -> dict[str, float]:
  """predicted, text_ids [B, L]; continuations[b] from `scene_continuations` for example b.

  -> {'tf_token_accuracy', 'tf_valid_accuracy', 'tf_bayes_ceiling'}, over every non-pad target.
  """
  right = valid = ceiling = count = 0
  for row_predicted, row_target, table in zip(predicted, text_ids, continuations):
    for position in range(int(np.sum(row_target != 0))):
      counts = table.get(tuple(row_target[:position]))
      count += 1
      right += int(row_predicted[position] == row_target[position])
      if counts:  # a caption outside the world's own (a truncated one) has no table entry
        valid += int(int(row_predicted[position]) in counts)
        ceiling += max(counts.values()) / sum(counts.values())
  count = max(count, 1)
  return {'tf_token_accuracy': right / count, 'tf_valid_accuracy': valid / count,
          'tf_bayes_ceiling': ceiling / count}


def reference_captions(scene: shapes.Scene, count: int = 5) -> list[str]:
  """`count` of the scene's captions, evenly spaced over `all_captions` (its templates and
  paraphrases), so the same scene always gets the same references."""
  captions = shapes.all_captions(scene)
  positions = np.linspace(0, len(captions) - 1, min(count, len(captions)))
  return [captions[i] for i in sorted(set(np.round(positions).astype(int).tolist()))]


def caption_cider(captions, true_scenes, num_references: int = 5) -> float:
  """Corpus CIDEr-D of `captions[i]` against `reference_captions(true_scenes[i])`."""
  references = {i: reference_captions(scene, num_references)
                for i, scene in enumerate(true_scenes)}
  predictions = {i: caption for i, caption in enumerate(captions)}
  return cider.caption_metrics(predictions, references, metrics=('CIDEr',),
                               use_java=False)['CIDEr']


class ShapesSplitEval:
  """Both directions on one split: `run(params, rng)` -> ({metric: value}, {name: uint8 grid}).

  Args:
    model: the ITIT module. shard_dir: a paired shard folder of the shapes world (test split).
    num_examples: the first examples of the split that are evaluated (in order).
    beam_size: 1 = greedy captioning. image_kwargs: `generate.generate_images` settings.
    prefix: the metric names' prefix ('shapes' for the test split, 'shapes_<split>' otherwise).
    captioner, image_sampler: already compiled `generate.jit_captioner` / `jit_image_sampler`
      functions to share between evaluators (they then replace beam_size / image_kwargs).
  """

  def __init__(self, model, shard_dir: str, *, num_examples: int = 256, batch_size: int = 64,
               beam_size: int = 1, image_kwargs: dict | None = None, prefix: str = 'shapes',
               captioner=None, image_sampler=None):
    self.prefix = prefix
    self.batch_size = batch_size
    self.text_tokenizer, (vq_params, vq_config) = common.stream_tokenizers(shard_dir)
    self.detokenize = vqgan.detokenizer_fn(vq_params, vq_config, batch_size)
    source = shards.open_shards(shard_dir)
    count = min(num_examples, len(source))
    count -= count % batch_size if count >= batch_size else 0
    batch = source.read_batch(np.arange(count))
    self.text_ids = np.asarray(batch['text_ids'], np.int32)
    self.image_tokens = np.asarray(batch['image_tokens'], np.int32)
    self.texts = self.text_tokenizer.decode(self.text_ids)
    self.scenes = [shapes_parse.parse_caption(t) for t in self.texts]
    if any(s is None for s in self.scenes):
      bad = self.texts[[s is None for s in self.scenes].index(True)]
      raise errors.UserError(
          f'{shard_dir} holds captions that are not shapes-world captions (e.g. {bad!r}): the '
          'shapes evaluator reads shapes-world shards (configs/prepare_shapes.py); evaluate '
          'other data with --eval=cycle or coco_captions')
    self._caption = captioner or generate.jit_captioner(model, beam_size=beam_size)
    self._sample = image_sampler or generate.jit_image_sampler(model, **(image_kwargs or {}))
    self._ceiling = None
    self._teacher_forced = jax.jit(functools.partial(paired.teacher_forced_ids, model=model))
    max_len = self.text_ids.shape[1]
    cached = functools.lru_cache(maxsize=None)(
        lambda scene: scene_continuations(scene, self.text_tokenizer, max_len))
    self.continuations = [cached(scene) for scene in self.scenes]

  def _batches(self, array):
    for start in range(0, len(array), self.batch_size):
      yield array[start:start + self.batch_size]

  def captions(self, params) -> list[str]:
    ids = [np.asarray(self._caption(params, b)[0]) for b in self._batches(self.image_tokens)]
    return self.text_tokenizer.decode(np.concatenate(ids))

  def images(self, params, rng) -> np.ndarray:
    tokens = [np.asarray(self._sample(params, b, jax.random.fold_in(rng, i)))
              for i, b in enumerate(self._batches(self.text_ids))]
    return self.detokenize(np.concatenate(tokens))

  def teacher_forced(self, params) -> dict[str, float]:
    predicted = [np.asarray(self._teacher_forced(params, images, texts)) for images, texts in
                 zip(self._batches(self.image_tokens), self._batches(self.text_ids))]
    return teacher_forced_scores(np.concatenate(predicted), self.text_ids, self.continuations)

  def run(self, params, rng) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    captions = self.captions(params)
    images = self.images(params, rng)
    results = {}
    caption_scores = scenes.scene_metrics([shapes_parse.parse_caption(c) for c in captions],
                                          self.scenes)
    image_scores = scenes.scene_metrics(shapes_parse.parse_images(images), self.scenes)
    if self._ceiling is None:
      reconstructions = self.detokenize(self.image_tokens)
      self._ceiling = scenes.scene_metrics(shapes_parse.parse_images(reconstructions),
                                           self.scenes)
    for name, value in caption_scores.items():
      results[f'{self.prefix}/i2t_{name}'] = value
    results[f'{self.prefix}/i2t_cider'] = caption_cider(captions, self.scenes)
    for name, value in image_scores.items():
      results[f'{self.prefix}/t2i_{name}'] = value
    for name, value in self.teacher_forced(params).items():
      results[f'{self.prefix}/i2t_{name}'] = value
    results[f'{self.prefix}/vqgan_ceiling_exact'] = self._ceiling['exact']
    shown = min(16, len(captions))
    reconstructions = self.detokenize(self.image_tokens[:shown])
    grids = {
        f'{self.prefix}_t2i': visualize.captioned_grid(images[:shown], self.texts[:shown]),
        f'{self.prefix}_i2t': visualize.captioned_grid(reconstructions, captions[:shown]),
    }
    return results, grids


class ShapesEval(common.Evaluator):
  """Both directions on the shapes world's test splits, scored by the world's exact parsers."""
  name = 'shapes'

  def __init__(self, context: common.EvalContext):
    super().__init__(context)
    cfg = context.eval_config
    self.splits = {}
    for split in split_names(cfg.shapes_splits):
      folder = context.split_dir(split)
      if not os.path.isfile(os.path.join(folder, 'manifest.json')):
        self.notes.append(f'shapes: split {split!r} skipped, {folder} holds no shards')
        continue
      prefix = 'shapes' if split == 'test' else f'shapes_{split}'
      self.splits[split] = ShapesSplitEval(
          context.model, folder, num_examples=cfg.num_examples, batch_size=cfg.batch_size,
          prefix=prefix, captioner=context.captioner(cfg.beam_size),
          image_sampler=context.image_sampler())
    if not self.splits:
      raise FileNotFoundError(
          f'the shapes evaluator found none of eval.shapes_splits={cfg.shapes_splits!r} under '
          f'data.dir={context.config.data.dir!r}: prepare them (configs/prepare_shapes.py)')

  def run(self, params, rng=None, step=None) -> dict[str, float]:
    del step
    rng = self.rng(rng)
    results, self.images = {}, {}
    for index, split_eval in enumerate(self.splits.values()):
      scores, grids = split_eval.run(params, jax.random.fold_in(rng, index))
      results.update(scores)
      self.images.update(grids)
    return results

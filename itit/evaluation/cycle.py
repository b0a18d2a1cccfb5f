"""The `cycle` evaluator: how much of a text or an image survives a round trip through the model.

On the first `eval.num_examples` pairs of `eval.cycle_split` (default: the test split):
- T->I->T: each source text is turned into an image (parallel decoding, the eval sampler
  settings), the image is captioned again (`eval.beam_size`), and the round-trip captions are
  scored against their source text: `cycle/t2i2t_cider` (CIDEr-D, one reference each). On the
  shapes world also `cycle/t2i2t_exact`: the round-trip caption describes the source scene.
- I->T->I: each source image is captioned, an image is generated from that caption, and its
  tokens are compared with the source tokens: `cycle/i2t2i_token_accuracy` (fraction of equal
  tokens, position by position). With `eval.inception` set, `cycle/i2t2i_fid`: FID of the
  round-trip images against the source images (both decoded by the VQGAN; 32 px shapes images are
  upsampled to 299 like any other). The source images' statistics are cached in
  `eval.fid_cache_dir` (default <workdir>/fid_cache), keyed by their pixels and the network, so
  runs that share the folder (a study's cells) compute them once. On the shapes world also
  `cycle/i2t2i_exact`: the round-trip image parses to the source scene.
"""
from __future__ import annotations

import hashlib
import os

import jax
import numpy as np

from itit.data import shapes_parse
from itit.data import shards
from itit.evaluation import common
from itit.evaluation.metrics import cider
from itit.evaluation.metrics import fid
from itit.evaluation import scenes
from itit.evaluation import visualize


class CycleEval(common.Evaluator):
  """Round-trip (T->I->T and I->T->I) consistency on a paired split."""
  name = 'cycle'

  def __init__(self, context: common.EvalContext):
    super().__init__(context)
    cfg = context.eval_config
    folder = context.split_dir(cfg.cycle_split)
    source = shards.open_shards(folder)
    count = min(cfg.num_examples, len(source))
    if count < 2:
      raise ValueError(f'the cycle evaluator needs at least 2 pairs; {folder} has {len(source)}')
    batch = source.read_batch(np.arange(count))
    self.text_ids = np.asarray(batch['text_ids'], np.int32)
    self.image_tokens = np.asarray(batch['image_tokens'], np.int32)
    self.texts = context.text_tokenizer.decode(self.text_ids)
    source_scenes = [shapes_parse.parse_caption(t) for t in self.texts]
    self.scenes = source_scenes if all(s is not None for s in source_scenes) else None
    self._source_images = None
    self._source_statistics = None

  def _captions(self, params, image_tokens) -> np.ndarray:
    return self.context.caption_ids(params, image_tokens, self.context.eval_config.beam_size)

  def _image_tokens(self, params, text_ids, rng) -> np.ndarray:
    return self.context.sampled_image_tokens(params, text_ids, rng)

  def _fid_against_sources(self, images) -> float:
    extractor = self.context.extractor()
    if self._source_statistics is None:
      sources = self._source_images
      digest = hashlib.sha256(np.ascontiguousarray(sources).tobytes()).hexdigest()[:16]
      names = [f'cycle-source-{digest}-{i}' for i in range(len(sources))]
      index_of = {name: i for i, name in enumerate(names)}
      cache_dir = self.context.eval_config.fid_cache_dir or (
          self.context.out_dir and os.path.join(self.context.out_dir, 'fid_cache'))
      if cache_dir:
        self._source_statistics = fid.reference_statistics(
            names, lambda chunk: sources[[index_of[name] for name in chunk]],
            extractor, cache_dir, resolution=sources.shape[1])
      else:
        self._source_statistics = fid.statistics(extractor(sources))
    return common.frechet_distance_to_features(extractor(images), *self._source_statistics)

  def run(self, params, rng=None, step=None) -> dict[str, float]:
    del step
    rng = self.rng(rng)
    decode = self.context.text_tokenizer.decode
    detokenize = self.context.detokenize
    if self._source_images is None:
      self._source_images = detokenize(self.image_tokens)
    results = {}

    # T -> I -> T
    pseudo_tokens = self._image_tokens(params, self.text_ids, jax.random.fold_in(rng, 0))
    round_texts = decode(self._captions(params, pseudo_tokens))
    scores = cider.caption_metrics(
        {i: t for i, t in enumerate(round_texts)}, {i: [t] for i, t in enumerate(self.texts)},
        metrics=('CIDEr',), use_java=self.context.eval_config.use_java)
    results['cycle/t2i2t_cider'] = scores['CIDEr']
    if self.scenes is not None:
      results['cycle/t2i2t_exact'] = float(np.mean(
          [shapes_parse.parse_caption(t) == s for t, s in zip(round_texts, self.scenes)]))

    # I -> T -> I
    caption_ids = self._captions(params, self.image_tokens)
    round_tokens = self._image_tokens(params, caption_ids, jax.random.fold_in(rng, 1))
    results['cycle/i2t2i_token_accuracy'] = float(np.mean(round_tokens == self.image_tokens))
    round_images = detokenize(round_tokens)
    if self.scenes is not None:
      results['cycle/i2t2i_exact'] = scenes.scene_metrics(
          shapes_parse.parse_images(round_images), self.scenes)['exact']
    if self.context.extractor() is not None:
      results['cycle/i2t2i_fid'] = self._fid_against_sources(round_images)

    shown = min(8, len(self.texts))
    captions = decode(caption_ids[:shown])
    self.images = {
        # Pseudo pairs as the cycle losses make them: images synthesized from texts, and
        # captions synthesized from images (then the image made back from that caption).
        'cycle_t2i_pseudo_images': visualize.captioned_grid(detokenize(pseudo_tokens[:shown]),
                                                            self.texts[:shown]),
        'cycle_i2t2i': visualize.chain_figure(
            [[(self._source_images[i], captions[i]), (round_images[i], '')]
             for i in range(shown)]),
    }
    return results

"""The `shapes` evaluator: exact-scene and per-attribute accuracy of both directions.

Runs `itit.shapes_eval.ShapesEvaluator` on every split of `eval.shapes_splits` that was prepared
(default: test, and heldout_test with its unseen attribute combinations). Metric names:
`shapes/{i2t,t2i}_{color,shape,size,region,relation,count,exact}` on the test split (the names
the training loop has always logged), `shapes_<split>/...` on the others, and
`.../vqgan_ceiling_exact`: the same parser on the VQGAN reconstructions, the best T2I can do.
"""
from __future__ import annotations

import os

import jax

from itit import shapes_eval
from itit.evaluators import common


def split_names(text: str) -> list[str]:
  """'test, heldout_test' -> ['test', 'heldout_test']."""
  return [name.strip() for name in text.split(',') if name.strip()]


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
      self.splits[split] = shapes_eval.ShapesEvaluator(
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
    for index, evaluator in enumerate(self.splits.values()):
      scores, grids = evaluator.run(params, jax.random.fold_in(rng, index))
      results.update(scores)
      self.images.update(grids)
    return results

"""The `coco_captions` evaluator: captioning metrics on COCO's Karpathy test split.

Images come from Karpathy's `dataset_coco.json` + the COCO images (`eval.coco.dataset_json`,
`eval.coco.images`: the root holding train2014/ and val2014/), resized like the training data
and tokenized by the run's VQGAN; or from a prepared paired shard folder of the split
(`eval.coco.shards`: a path, or a split name under data.dir), where the consecutive records of
one image (its 5 captions) are grouped.
Captions are decoded with beam search (`eval.coco.beam_size`, the paper's 4) and scored by
`itit.evaluation.metrics.cider.caption_metrics`: `coco/CIDEr` (CIDEr-D), `coco/BLEU-4`,
`coco/METEOR`, `coco/ROUGE-L` on pycocoevalcap's scale (papers print CIDEr x 100), and
`coco/num_images`.
"""
from __future__ import annotations

import os

import numpy as np
from tqdm import tqdm

from itit.data import shards
from itit.data import sources
from itit.evaluation import common
from itit.evaluation.metrics import cider


def from_karpathy(dataset_json: str, image_root: str, *, split: str, tokenize, image_size: int,
                  batch_size: int, num_images: int = 0):
  """(cocoids, image tokens [n, N], {cocoid: [reference, ...]}, SkipCounter) of a Karpathy split.

  Every readable image of the split is used (no minimum size: the benchmark's image set is
  fixed); `num_images` > 0 keeps the first ones by cocoid.
  """
  skips = sources.SkipCounter()
  references = sources.karpathy_references(dataset_json, split=split, skips=skips)
  total = min(num_images, len(references)) if num_images else len(references)
  ids, tokens, pending = [], [], []

  def flush():
    if pending:
      tokens.append(tokenize(np.stack(pending)))
      pending.clear()

  records = sources.karpathy_coco(dataset_json, image_root, split=split, skips=skips,
                                  size=image_size, min_size=1)
  with tqdm(total=total, unit='img', desc=f'Karpathy {split} images', dynamic_ncols=True) as bar:
    for record in records:
      cocoid = int(record.key.split('/')[0])
      if (ids and ids[-1] == cocoid) or cocoid not in references:
        continue  # the same image again (one record per caption)
      ids.append(cocoid)
      pending.append(record.image)
      bar.update(1)
      if len(pending) == batch_size:
        flush()
      if len(ids) == total:
        break
  flush()
  if not ids:
    raise ValueError(f'{dataset_json}: no readable image of Karpathy split {split!r} under '
                     f'{image_root} ({skips.summary() or "the split is empty"})')
  return ids, np.concatenate(tokens), {i: references[i] for i in ids}, skips


def from_shards(shard_dir: str, text_tokenizer, num_images: int = 0):
  """(group ids, image tokens [n, N], {id: [reference, ...]}) from a paired shard folder.

  Consecutive records with the same image tokens are one image and its captions (itit.prepare
  writes a Karpathy split that way). References are the shards' decoded texts.
  """
  source = shards.open_shards(shard_dir)
  batch = source.read_batch(np.arange(len(source)))
  image_tokens = np.asarray(batch['image_tokens'], np.int32)
  texts = text_tokenizer.decode(np.asarray(batch['text_ids'], np.int32))
  starts = [0] + [i for i in range(1, len(image_tokens))
                  if not np.array_equal(image_tokens[i], image_tokens[i - 1])]
  groups = list(zip(starts, starts[1:] + [len(image_tokens)]))
  if num_images:
    groups = groups[:num_images]
  references = {index: [t for t in texts[start:stop] if t]
                for index, (start, stop) in enumerate(groups)}
  return list(references), image_tokens[[start for start, _ in groups]], references


class CocoCaptionsEval(common.Evaluator):
  """Beam-search captions of the Karpathy test images, scored as the COCO evaluation scores."""
  name = 'coco_captions'

  def __init__(self, context: common.EvalContext):
    super().__init__(context)
    cfg = context.eval_config.coco
    if cfg.dataset_json:
      if not cfg.images:
        raise ValueError('eval.coco.dataset_json is set but eval.coco.images is empty: pass the '
                         'COCO root that holds train2014/ and val2014/')
      self.ids, self.image_tokens, self.references, skips = from_karpathy(
          cfg.dataset_json, cfg.images, split=cfg.split, tokenize=context.tokenize_images,
          image_size=context.vq_config.image_size, batch_size=context.eval_config.batch_size,
          num_images=cfg.num_images)
      if skips.total:
        self.notes.append(f'coco_captions: skipped {skips.total} inputs ({skips.summary()})')
    elif cfg.shards:
      # A folder, or a split name under data.dir ('test' = data.test).
      folder = cfg.shards if os.path.isdir(cfg.shards) else context.split_dir(cfg.shards)
      self.ids, self.image_tokens, self.references = from_shards(
          folder, context.text_tokenizer, cfg.num_images)
      self.notes.append('coco_captions: references are the shards\' texts after SentencePiece '
                        '(truncated to max_text_len); pass eval.coco.dataset_json for the '
                        'original sentences')
    else:
      raise ValueError('the coco_captions evaluator needs eval.coco.dataset_json (Karpathy\'s '
                       'dataset_coco.json) with eval.coco.images (the COCO root), or '
                       'eval.coco.shards (a prepared paired shard folder of the split)')
    self.metrics = tuple(m.strip() for m in cfg.metrics.split(',') if m.strip())
    self.predictions = {}

  def run(self, params, rng=None, step=None) -> dict[str, float]:
    del rng, step
    cfg = self.context.eval_config.coco
    captioner = self.context.captioner(cfg.beam_size)
    ids = common.batched(lambda batch, _: captioner(params, batch)[0], self.image_tokens,
                         cfg.batch_size)
    texts = self.context.text_tokenizer.decode(ids)
    self.predictions = dict(zip(self.ids, texts))
    scores = cider.caption_metrics(self.predictions, self.references,
                                   use_java=self.context.eval_config.use_java,
                                   metrics=self.metrics)
    self.notes = [n for n in self.notes if not n.startswith('coco_captions: metric')]
    self.notes += [f'coco_captions: metric note: {n}' for n in scores.get('notes', [])]
    results = {f'coco/{k}': v for k, v in scores.items() if isinstance(v, float)}
    results['coco/num_images'] = float(len(self.ids))
    return results

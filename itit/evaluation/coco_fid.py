"""The `coco_fid` evaluator: COCO FID-30K, the protocol of docs/EVALUATION.md.

Pairs: `eval.coco_fid.num_pairs` (30,000) images drawn with `eval.coco_fid.seed` from COCO's
`captions_val2014.json` (`eval.coco_fid.annotations`, images under `eval.coco_fid.images`), one
caption each (`draw_pairs`). Karpathy's `dataset_coco.json` works too: its val + test + restval
entries are val2014 (`eval.coco_fid.split` picks others). Image i is generated from caption i with
the key `fold_in(PRNGKey(seed), i)`, in batches, its features accumulated by
`fid.accumulate_features` (progress, ETA, resumable: the partial file is keyed by the run, the
step and the sampler settings). The real images' statistics are cached by
`fid.reference_statistics`. The result is `coco_fid/fid` with `coco_fid/num_pairs`.
"""
from __future__ import annotations

import hashlib
import json
import os

import jax
import numpy as np

from itit.evaluation import common
from itit.evaluation.metrics import fid

KARPATHY_VAL2014 = 'val+test+restval'


def _load_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f'eval.coco_fid.annotations={path!r} cannot be read ({e}); pass COCO\'s '
                     'captions_val2014.json or Karpathy\'s dataset_coco.json') from None


def caption_index(annotations_json: str, image_root: str, split: str = '') -> list:
  """[(image path, [caption, ...]), ...] by increasing image id, captioned images only.

  COCO format (`images` + `annotations`): every image of the file, captions in file order.
  Karpathy format (`images` with `sentences`): the entries of `split` ('' = val2014's).
  """
  data = _load_json(annotations_json)
  images = data.get('images')
  if not isinstance(images, list):
    raise ValueError(f'{annotations_json} has no "images" list: pass COCO\'s '
                     'captions_val2014.json or Karpathy\'s dataset_coco.json')
  entries = {}
  if isinstance(data.get('annotations'), list):
    files = {e['id']: e['file_name'] for e in images
             if isinstance(e, dict) and 'id' in e and isinstance(e.get('file_name'), str)}
    for annotation in data['annotations']:
      image_id = annotation.get('image_id') if isinstance(annotation, dict) else None
      caption = annotation.get('caption') if isinstance(annotation, dict) else None
      if image_id in files and isinstance(caption, str) and caption.strip():
        entries.setdefault(image_id, (os.path.join(image_root, files[image_id]), []))
        entries[image_id][1].append(caption.strip())
  else:
    wanted = (split or KARPATHY_VAL2014).split('+')
    for entry in images:
      if (not isinstance(entry, dict) or entry.get('split') not in wanted
          or not isinstance(entry.get('filename'), str)):
        continue
      captions = [s.get('raw', '').strip() for s in entry.get('sentences', [])
                  if isinstance(s, dict) and isinstance(s.get('raw'), str)]
      path = os.path.join(image_root, entry.get('filepath', ''), entry['filename'])
      if captions:
        entries[entry.get('cocoid', entry.get('imgid'))] = (path, [c for c in captions if c])
  return [entries[image_id] for image_id in sorted(entries)]


def draw_pairs(annotations_json: str, image_root: str, *, num_pairs: int, seed: int = 0,
               split: str = '') -> list[tuple[str, str]]:
  """The protocol's (caption, image path) pairs, in drawn order.

  `rng = np.random.default_rng(seed)`; `rng.choice(num_images, num_pairs, replace=False)` over
  the images sorted by id; then for each drawn image, in order, `rng.integers(num_captions)`.
  """
  entries = caption_index(annotations_json, image_root, split)
  if not 1 <= num_pairs <= len(entries):
    raise ValueError(f'eval.coco_fid.num_pairs={num_pairs} but {annotations_json} has '
                     f'{len(entries)} captioned images: choose 1..{len(entries)}')
  rng = np.random.default_rng(seed)
  pairs = []
  for index in rng.choice(len(entries), num_pairs, replace=False):
    path, captions = entries[index]
    pairs.append((captions[rng.integers(len(captions))], path))
  return pairs


class CocoFidEval(common.Evaluator):
  """FID of images generated from COCO captions against the captions' own images."""
  name = 'coco_fid'

  def __init__(self, context: common.EvalContext):
    super().__init__(context)
    cfg = context.eval_config.coco_fid
    if not cfg.annotations or not cfg.images:
      raise ValueError('the coco_fid evaluator needs eval.coco_fid.annotations '
                       '(captions_val2014.json or dataset_coco.json) and eval.coco_fid.images '
                       '(the folder the file names are relative to)')
    if context.extractor() is None:
      raise ValueError('the coco_fid evaluator needs the FID network: set eval.inception to the '
                       '.npz of python -m tools.convert_inception (docs/EVALUATION.md)')
    self.pairs = draw_pairs(cfg.annotations, cfg.images, num_pairs=cfg.num_pairs,
                            seed=cfg.seed, split=cfg.split)
    self.resolution = cfg.resolution or context.vq_config.image_size
    self.cache_dir = cfg.cache_dir or os.path.join(context.out_dir, 'fid_cache')
    self.pairs_digest = hashlib.sha256(json.dumps(self.pairs).encode()).hexdigest()[:16]

  def _reference_statistics(self):
    resolution = self.resolution
    return fid.reference_statistics(
        [path for _, path in self.pairs],
        lambda paths: np.stack([fid.load_reference_image(p, resolution) for p in paths]),
        self.context.extractor(), self.cache_dir, resolution=resolution,
        save_every=self.context.eval_config.coco_fid.save_every)

  def run_key(self, step) -> str:
    """What the generated images depend on: the checkpoint and every sampling setting."""
    cfg = self.context.eval_config.coco_fid
    return json.dumps(dict(workdir=self.context.workdir, step=step, pairs=self.pairs_digest,
                           seed=cfg.seed, **self.context.image_kwargs), sort_keys=True)

  def run(self, params, rng=None, step=None) -> dict[str, float]:
    del rng  # the protocol fixes the keys: image i comes from fold_in(PRNGKey(seed), i)
    context, cfg = self.context, self.context.eval_config.coco_fid
    mu_ref, sigma_ref = self._reference_statistics()
    captions = [caption for caption, _ in self.pairs]
    sampler = context.per_example_sampler()
    key = jax.random.PRNGKey(cfg.seed)
    max_len = context.config.model.max_text_len

    def generated_images(start, stop):
      text_ids = context.text_tokenizer.encode(captions[start:stop], max_len)
      keys = np.asarray(common.keys_for(key, range(start, stop)))
      # Batches of indices (the last padded by repeating one): one compile for every batch.
      tokens = common.batched(lambda rows, _: sampler(params, text_ids[rows], keys[rows]),
                              np.arange(stop - start), cfg.batch_size)
      return context.detokenize(tokens)

    run_key = self.run_key(step)
    cache_path = os.path.join(
        self.cache_dir, f'fid_gen_{hashlib.sha256(run_key.encode()).hexdigest()[:16]}.npz')
    features = fid.accumulate_features(
        generated_images, len(self.pairs), cache_path, context.extractor(),
        batch_size=cfg.batch_size, run_key=run_key, save_every=cfg.save_every,
        desc='FID generated images')
    self.notes = [f'coco_fid: FID-{len(self.pairs)} at {self.resolution} px, pairs seed '
                  f'{cfg.seed}, sampler {context.image_kwargs}, step {step}']
    return {'coco_fid/fid': common.frechet_distance_to_features(features, mu_ref, sigma_ref),
            'coco_fid/num_pairs': float(len(self.pairs))}

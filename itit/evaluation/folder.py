"""The `folder` evaluator: a user's own captioned test folder, scored in both directions.

The folder (`eval.folder.images`, read recursively) and its captions (`eval.folder.captions`: a
JSONL with {"file" or "image": relative path, "caption" or "text": ...} per line, or a TSV
path<TAB>caption; empty = the folder's own captions.jsonl or captions.tsv) are read as
`itit.prepare` reads an image folder (itit.data.sources.image_folder), every readable image at
the VQGAN's resolution (no minimum size: the test set is what it is), skipped inputs counted in
the notes; `eval.folder.num_images` > 0 keeps the first images by path. Then:

- I2T: each image is captioned (beam search, `eval.folder.beam_size`) and the captions are
  scored against ALL of the image's captions: `folder/CIDEr` (CIDEr-D) and the other
  `eval.folder.metrics` (itit.evaluation.metrics.cider.caption_metrics, pycocoevalcap's scale).
- T2I: one image is generated from each image's first caption (the eval sampler settings);
  with `eval.inception` set, `folder/fid`: FID of those images against the folder's images
  (both at the VQGAN's resolution, upsampled to 299 by the network). Without it FID is skipped
  and the notes say so. With a few hundred images FID is biased upwards: compare runs on the
  same folder only.
- Round trips, as the `cycle` evaluator makes them: `folder/t2i2t_cider` (the generated images
  captioned again, against the caption they came from), `folder/i2t2i_token_accuracy` (images
  generated from the generated captions, token by token against the folder images' tokens) and,
  with `eval.inception`, `folder/i2t2i_fid` against the folder's images.

`folder/num_images` counts the images scored. `predictions` holds the last run's captions by
relative path (itit.evaluate writes them as <step>_folder_captions.jsonl, readable by prepare).
"""
from __future__ import annotations

import os

import jax
import numpy as np

from itit import errors
from itit.data import sources
from itit.evaluation import common
from itit.evaluation import visualize
from itit.evaluation.metrics import cider
from itit.evaluation.metrics import fid

CAPTION_FILES = ('captions.jsonl', 'captions.tsv')


def read_folder(images: str, captions: str = '', *, size: int, num_images: int = 0):
  """(relative paths, uint8 images [n, size, size, 3], {index: [caption, ...]}, SkipCounter).

  `captions` '' means the folder's own captions.jsonl or captions.tsv. Raises ValueError when
  the folder, its captions or a usable captioned image is missing (a UserError).
  """
  if not images or not os.path.isdir(images):
    raise errors.MissingFileError(
        f'eval.folder.images={images!r} is not a directory: the folder evaluator needs a folder '
        'of test images with captions (--config.folder.images=DATA/test for itit.evaluate, '
        '--config.eval.folder.images for itit.train)')
  if not captions:
    found = [os.path.join(images, n) for n in CAPTION_FILES
             if os.path.isfile(os.path.join(images, n))]
    if not found:
      raise errors.UserError(f'{images} holds no {" or ".join(CAPTION_FILES)}: set '
                             'eval.folder.captions to its captions file')
    captions = found[0]
  skips = sources.SkipCounter()
  names, pixels, references = [], [], {}
  for record in sources.image_folder(images, captions=captions, size=size, min_size=1,
                                     skips=skips):
    name = record.key.rsplit('/', 1)[0]  # '<relative path>/<caption index>'
    if not names or names[-1] != name:
      if num_images and len(names) == num_images:
        break
      names.append(name)
      pixels.append(record.image)
      references[len(names) - 1] = []
    references[len(names) - 1].append(record.text)
  if not names:
    raise errors.UserError(f'{images} with captions {captions}: no usable captioned image '
                           f'({skips.summary()})')
  return names, np.stack(pixels), references, skips


class FolderEval(common.Evaluator):
  """Captioning, generation and round-trip metrics on a captioned image folder."""
  name = 'folder'

  def __init__(self, context: common.EvalContext):
    super().__init__(context)
    cfg = context.eval_config.folder
    self.names, self.real_images, self.references, skips = read_folder(
        cfg.images, cfg.captions, size=context.vq_config.image_size,
        num_images=cfg.num_images)
    if skips.total:
      self.notes.append(f'folder: {skips.summary()}')
    self.image_tokens = context.tokenize_images(self.real_images)
    self.first_captions = [self.references[i][0] for i in range(len(self.names))]
    self.text_ids = context.text_tokenizer.encode(self.first_captions,
                                                  context.config.model.max_text_len)
    self.metrics = tuple(m.strip() for m in cfg.metrics.split(',') if m.strip())
    self.predictions: dict[str, str] = {}
    self._real_statistics = None

  def _captions(self, params, image_tokens) -> np.ndarray:
    return self.context.caption_ids(params, image_tokens, self.context.eval_config.folder.beam_size)

  def _image_tokens(self, params, text_ids, rng) -> np.ndarray:
    return self.context.sampled_image_tokens(params, text_ids, rng)

  def _fid(self, images) -> float:
    extractor = self.context.extractor()
    if self._real_statistics is None:
      self._real_statistics = fid.statistics(extractor(self.real_images))
    return common.frechet_distance_to_features(extractor(images), *self._real_statistics)

  def run(self, params, rng=None, step=None) -> dict[str, float]:
    del step
    rng = self.rng(rng)
    context = self.context
    decode = context.text_tokenizer.decode
    with_fid = context.extractor() is not None and len(self.names) >= 2
    self.notes = [n for n in self.notes if not n.startswith(('folder: metric', 'folder: FID'))]

    # I2T, scored against every caption of each image.
    caption_ids = self._captions(params, self.image_tokens)
    captions = decode(caption_ids)
    self.predictions = dict(zip(self.names, captions))
    scores = cider.caption_metrics(dict(enumerate(captions)), self.references,
                                   metrics=self.metrics,
                                   use_java=context.eval_config.use_java)
    results = {f'folder/{k}': v for k, v in scores.items() if isinstance(v, float)}
    self.notes += [f'folder: metric note: {n}' for n in scores.get('notes', [])]

    # T2I from each image's first caption, then T -> I -> T.
    generated_tokens = self._image_tokens(params, self.text_ids, jax.random.fold_in(rng, 0))
    generated = context.detokenize(generated_tokens)
    round_texts = decode(self._captions(params, generated_tokens))
    results['folder/t2i2t_cider'] = cider.caption_metrics(
        dict(enumerate(round_texts)), {i: [t] for i, t in enumerate(self.first_captions)},
        metrics=('CIDEr',), use_java=context.eval_config.use_java)['CIDEr']

    # I -> T -> I: images from the generated captions, against the folder's tokens.
    round_tokens = self._image_tokens(params, caption_ids, jax.random.fold_in(rng, 1))
    results['folder/i2t2i_token_accuracy'] = float(np.mean(round_tokens == self.image_tokens))

    if with_fid:
      results['folder/fid'] = self._fid(generated)
      results['folder/i2t2i_fid'] = self._fid(context.detokenize(round_tokens))
      self.notes.append(f'folder: FID over {len(self.names)} images at '
                        f'{self.real_images.shape[1]} px (few images bias FID upwards: compare '
                        'runs on the same folder only)')
    elif context.extractor() is None:
      self.notes.append('folder: FID skipped: eval.inception is empty (convert the FID network '
                        'with python -m tools.convert_inception, docs/EVALUATION.md)')
    else:
      self.notes.append('folder: FID skipped: it needs at least 2 images')
    results['folder/num_images'] = float(len(self.names))

    shown = min(8, len(self.names))
    self.images = {
        'folder_t2i': visualize.captioned_grid(generated[:shown], self.first_captions[:shown]),
        'folder_i2t': visualize.captioned_grid(self.real_images[:shown], captions[:shown]),
    }
    return results

r"""Images from prompts, captions from images, and T->I->T->I cycle chains from a trained run.

  python -m itit.sample --workdir=DIR --prompt="a large red circle at the top left"
  python -m itit.sample --workdir=DIR --prompts=prompts.txt --images=photos/ --cycle=4

Reads the run's config.json and latest checkpoint (or --step), and the VQGAN and SentencePiece
model that made its data. Writes into --out (default DIR/samples): t2i.png (each image with its
prompt under it) and, beside it, t2i/000.png, 001.png, ... (each generated image at the VQGAN's
resolution) with t2i/captions.jsonl ({"image": "000.png", "caption": prompt} per line);
captions.jsonl (the captions of --images: {"image": file name, "caption": ...} per line);
cycle.png (one chain per prompt); and prints where they are. Both captions files are captioned
image folders as `itit.prepare` (configs/prepare_folder.py) and the `folder` evaluator read them.
"""
from __future__ import annotations

import json
import os

from absl import app
from absl import flags
import jax
import numpy as np

from itit.data import images as images_lib
from itit.decoding import generate
from itit import errors
from itit.evaluation import common as evaluation_common
from itit.evaluation import visualize
from itit.models import vqgan
from itit.trainer import run as run_lib

_WORKDIR = errors.string_flag('workdir', 'A training workdir (config.json + checkpoints/).')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step; default the latest.')
_PROMPT = flags.DEFINE_multi_string('prompt', [], 'A prompt (repeatable).')
_PROMPTS = flags.DEFINE_string('prompts', None, 'A text file with one prompt per line.')
_IMAGES = flags.DEFINE_string('images', None, 'A folder of images to caption.')
_CYCLE = flags.DEFINE_integer('cycle', 0, 'Length of T->I->T->I chains made from the prompts.')
_OUT = flags.DEFINE_string('out', None, 'Output folder; default WORKDIR/samples.')
_SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed.')
_STEPS = flags.DEFINE_integer('num_steps', 24, 'Parallel decoding steps (paper: 24).')
_GUIDANCE = flags.DEFINE_float('guidance_scale', 2.0, 'Classifier-free guidance tau (paper: 2.0).')
_TEMPERATURE = flags.DEFINE_float('temperature', 32.0, 'Confidence-noise temperature (paper: 32).')
_SAMPLE_TEMPERATURE = flags.DEFINE_float(
    'sample_temperature', 1.0, 'Token sampling temperature; below 1 draws nearer the mode.')
_BEAM = flags.DEFINE_integer('beam_size', 4, 'Captioning beam size (paper: 4; 1 = greedy).')


class Sampler:
  """A trained run's model, parameters and tokenizers, with batched generation helpers."""

  def __init__(self, workdir: str, step: int | None = None, *, image_kwargs=None, beam_size=4):
    self.config, self.model, self.params, self.step = run_lib.load_run(workdir, step)
    shard_dir = os.path.join(self.config.data.dir, self.config.data.test)
    self.text_tokenizer, (vq_params, self.vq_config) = evaluation_common.stream_tokenizers(
        shard_dir)
    self.tokenize_images = vqgan.tokenizer_fn(vq_params, self.vq_config, 16)
    self.detokenize = vqgan.detokenizer_fn(vq_params, self.vq_config, 16)
    self.image_kwargs = image_kwargs or {}
    self._sample = generate.jit_image_sampler(self.model, **self.image_kwargs)
    self._caption = generate.jit_captioner(self.model, beam_size=beam_size)

  def text_ids(self, prompts):
    return self.text_tokenizer.encode(prompts, self.config.model.max_text_len)

  def images_from_prompts(self, prompts, rng) -> np.ndarray:
    tokens = self._sample(self.params, self.text_ids(prompts), rng)
    return self.detokenize(np.asarray(tokens))

  def captions_from_images(self, images: np.ndarray) -> list[str]:
    ids, _ = self._caption(self.params, self.tokenize_images(images))
    return self.text_tokenizer.decode(np.asarray(ids))

  def cycle(self, prompts, length: int, rng) -> list[list[tuple[np.ndarray, str]]]:
    rounds = generate.cycle_chain(self.params, self.text_ids(prompts), rng, model=self.model,
                                  length=length, image_kwargs=self.image_kwargs)
    rows = [[] for _ in prompts]
    for r in rounds:
      images = self.detokenize(np.asarray(r['image_tokens']))
      texts = self.text_tokenizer.decode(np.asarray(r['text_ids']))
      for row, image, text in zip(rows, images, texts):
        row.append((image, text))
    return rows


def write_captioned_folder(folder: str, images: np.ndarray, captions) -> str:
  """Writes images [B, H, W, 3] as FOLDER/000.png, ... and FOLDER/captions.jsonl; returns it."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(folder, exist_ok=True)
  width = max(3, len(str(len(images) - 1)))
  path = os.path.join(folder, 'captions.jsonl')
  with open(path, 'w') as f:
    for index, (image, caption) in enumerate(zip(images, captions)):
      name = f'{index:0{width}d}.png'
      Image.fromarray(np.asarray(image, np.uint8)).save(os.path.join(folder, name))
      f.write(json.dumps({'image': name, 'caption': caption}) + '\n')
  return path


def _folder_images(folder: str, size: int) -> tuple[list[str], np.ndarray]:
  names, images = [], []
  for name in sorted(os.listdir(folder)):
    if not name.lower().endswith(images_lib.IMAGE_EXTENSIONS):
      continue  # a captioned folder's captions.jsonl, notes, ...
    try:
      images.append(images_lib.load_image(os.path.join(folder, name), size=size, min_size=1))
      names.append(name)
    except (images_lib.BadInput, IsADirectoryError) as e:
      print(f'skipping {name}: {getattr(e, "reason", e)}')
  if not images:
    raise errors.UserError(f'no readable image in {folder} (pass a folder of .png or .jpg '
                           'images as --images)')
  return names, np.stack(images)


def main(argv):
  errors.quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required')
  prompts = list(_PROMPT.value)
  if _PROMPTS.value:
    with open(_PROMPTS.value) as f:
      prompts += [line.strip() for line in f if line.strip()]
  if not prompts and not _IMAGES.value:
    raise app.UsageError('give --prompt, --prompts or --images')
  if _IMAGES.value and not os.path.isdir(_IMAGES.value):
    raise errors.MissingFileError(f'--images={_IMAGES.value} is not a folder: pass a folder of '
                                  'images to caption')
  sampler = Sampler(_WORKDIR.value, _STEP.value, beam_size=_BEAM.value,
                    image_kwargs=dict(num_steps=_STEPS.value, guidance_scale=_GUIDANCE.value,
                                      temperature=_TEMPERATURE.value,
                                      sample_temperature=_SAMPLE_TEMPERATURE.value))
  out = _OUT.value or os.path.join(_WORKDIR.value, 'samples')
  os.makedirs(out, exist_ok=True)
  rng = jax.random.PRNGKey(_SEED.value)
  written = []
  if prompts:
    images = sampler.images_from_prompts(prompts, rng)
    path = os.path.join(out, 't2i.png')
    from PIL import Image
    Image.fromarray(visualize.captioned_grid(images, prompts)).save(path)
    written.append(path)
    written.append(write_captioned_folder(os.path.join(out, 't2i'), images, prompts))
    if _CYCLE.value:
      rows = sampler.cycle(prompts, _CYCLE.value, jax.random.fold_in(rng, 1))
      path = os.path.join(out, 'cycle.png')
      Image.fromarray(visualize.chain_figure(rows)).save(path)
      written.append(path)
  if _IMAGES.value:
    names, images = _folder_images(_IMAGES.value, sampler.vq_config.image_size)
    captions = sampler.captions_from_images(images)
    path = os.path.join(out, 'captions.jsonl')
    with open(path, 'w') as f:
      for name, caption in zip(names, captions):
        f.write(json.dumps({'image': name, 'caption': caption}) + '\n')
    written.append(path)
  print(f'Sampled from step {sampler.step} of {_WORKDIR.value}. Wrote: ' + ', '.join(written))


if __name__ == '__main__':
  errors.run_app(main, outputs=lambda: [_OUT.value or _WORKDIR.value and os.path.join(
      _WORKDIR.value, 'samples')])

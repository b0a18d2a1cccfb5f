"""Images for training the VQGAN tokenizer: the shapes world rendered on the fly, or a folder.

`data.source='shapes'` renders scenes (nothing is read from disk); `data.source='folder'` reads
every image below `data.dir`, holding out the last `data.num_eval` (sorted by path) for
evaluation. The training batch of a step is a pure function of (config.seed, step), which is what
makes a resumed run bitwise identical to an uninterrupted one.
"""
import os

import numpy as np

from itit.data import images as image_io
from itit.data import shapes
from itit.data import shapes_parse


def image_files(config):
  """Sorted image paths under data.dir -> (train files, held-out files)."""
  root = config.data.dir
  if not root or not os.path.isdir(root):
    raise ValueError(f"data.dir={root!r} is not a directory; pass --config.data.dir=/images "
                     f"(or use data.source='shapes').")
  files = sorted(os.path.join(d, f) for d, _, names in os.walk(root) for f in names
                 if f.lower().endswith(image_io.IMAGE_EXTENSIONS))
  if len(files) <= config.data.num_eval:
    raise ValueError(f'{root} has {len(files)} images, not more than data.num_eval='
                     f'{config.data.num_eval}; add images or lower data.num_eval.')
  return files[:-config.data.num_eval], files[-config.data.num_eval:]


def load_images(paths, size):
  """Decodes image files -> uint8 [N, size, size, 3], skipping bad ones (see itit/data/images)."""
  images = []
  for path in paths:
    with open(path, 'rb') as f:
      data = f.read()
    try:
      images.append(image_io.load_image(data, size=size))
    except image_io.BadInput:
      continue
  return np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)


def train_batch(config, step, train_files=None):
  """The training images of `step`: uint8 [batch_size, H, W, 3], a pure function of (seed, step)."""
  rng = np.random.default_rng([config.seed, step])
  size = config.model.image_size
  if config.data.source == 'shapes':
    return np.stack([shapes.render(shapes.sample_scene(rng, config.data.max_objects), size, rng)
                     for _ in range(config.batch_size)])
  images = np.zeros((0, size, size, 3), np.uint8)
  while len(images) < config.batch_size:  # bad files are skipped; draw more
    picks = rng.integers(0, len(train_files), config.batch_size - len(images))
    images = np.concatenate([images, load_images([train_files[i] for i in picks], size)])
  return images


def eval_set(config, eval_files=None):
  """Held-out images uint8 [N, H, W, 3] and, for the shapes world, its exact batch parser."""
  if config.data.source == 'shapes':
    scenes = shapes.make_splits(config.seed, num_test=config.data.num_eval)['test']
    images = np.stack([shapes.render(s, config.model.image_size) for s in scenes])
    return images, shapes_parse.parse_images
  if config.data.source != 'folder':
    raise ValueError(f"data.source must be 'shapes' or 'folder', got {config.data.source!r}.")
  return load_images(eval_files, config.model.image_size), None

"""Images for training the VQGAN tokenizer: the shapes world rendered on the fly, or a folder.

`data.source='shapes'` renders scenes (nothing is read from disk). `data.source='folder'` reads
the images below `data.dir` (recursively) and holds some out for evaluation, by the first of:
- `data.eval_dir`: every image below that folder (which must not lie inside `data.dir`);
- `data.heldout_fraction` > 0: the images whose relative path falls in the held-out split
  (`itit.data.records.is_heldout`: by file name, the split `itit.prepare` makes with the same
  folder and fraction, so the tokenizer never trains on the test images of the ITIT data);
- otherwise the last `data.num_eval` files, sorted by path (a folder that holds ONLY training
  images; a dataset root with a test folder inside would train on it).
`data.num_eval` > 0 caps the held-out images in the first two cases. Images whose short side is
below `data.min_size` are skipped ('too_small'); those between it and `model.image_size` are
upscaled. Unusable files are skipped and counted by reason (itit/data/images.py); a held-out
set or a training folder with no usable image is refused at start with those counts, and a
batch that cannot be filled after `MAX_DRAWS_PER_IMAGE` draws per image fails instead of
trying forever.

The training batch of a step is a pure function of (config.seed, step), which is what makes a
resumed run bitwise identical to an uninterrupted one.
"""
import os

import numpy as np

from itit import errors
from itit.data import images as image_io
from itit.data import records
from itit.data import shapes
from itit.data import shapes_splits
from itit.data import shapes_parse

# A training batch draws at most this many files per image it needs; a folder where fewer than
# about 1 in 16 files decode fails with the skip counts instead of looping.
MAX_DRAWS_PER_IMAGE = 16
# Training files decoded at start to refuse a folder with no usable image (evenly spaced).
NUM_PROBED = 256


def _list_images(root):
  """Relative POSIX paths of the image files below `root`, sorted (as itit.prepare lists them)."""
  found = []
  for directory, subdirectories, names in os.walk(root):
    subdirectories.sort()
    for name in names:
      if name.lower().endswith(image_io.IMAGE_EXTENSIONS):
        found.append(os.path.relpath(os.path.join(directory, name), root).replace(os.sep, '/'))
  return sorted(found)


def _require_dir(field, folder):
  if not folder or not os.path.isdir(folder):
    raise errors.UserError(f'data.{field}={folder!r} is not a directory; pass '
                           f"--config.data.{field}=/images (or use data.source='shapes').")


def image_files(config):
  """Image paths of `data.dir` -> (train files, held-out files), per the module docstring."""
  data = config.data
  _require_dir('dir', data.dir)
  relpaths = _list_images(data.dir)
  eval_dir = data.get('eval_dir', '')
  fraction = data.get('heldout_fraction', 0.0)
  if eval_dir:
    _require_dir('eval_dir', eval_dir)
    root, held = os.path.realpath(data.dir), os.path.realpath(eval_dir)
    if os.path.commonpath([root, held]) == root:
      raise errors.UserError(
          f'data.eval_dir={eval_dir!r} lies inside data.dir={data.dir!r}, which is read '
          'recursively: its images would be trained on too; point data.dir at the training '
          'images only')
    train, held_out = relpaths, _list_images(eval_dir)
    held_root, where = eval_dir, f'data.eval_dir={eval_dir!r}'
  elif fraction > 0:
    if not fraction < 1:
      raise errors.UserError(f'data.heldout_fraction={fraction} must be below 1')
    train = [r for r in relpaths if not records.is_heldout(r, fraction)]
    held_out = [r for r in relpaths if records.is_heldout(r, fraction)]
    held_root, where = data.dir, f'data.heldout_fraction={fraction} of data.dir={data.dir!r}'
  else:
    if data.num_eval < 1 or len(relpaths) <= data.num_eval:
      raise errors.UserError(
          f'{data.dir} has {len(relpaths)} images and data.num_eval={data.num_eval} of them '
          'are to be held out: add images, or set data.num_eval (0 < num_eval < the number '
          'of images), data.eval_dir or data.heldout_fraction')
    train, held_out = relpaths[:-data.num_eval], relpaths[-data.num_eval:]
    held_root, where = data.dir, f'the last data.num_eval={data.num_eval} files of data.dir'
  if data.num_eval > 0:
    held_out = held_out[:data.num_eval]
  if not train:
    raise errors.UserError(
        f'no training image file ({" ".join(image_io.IMAGE_EXTENSIONS)}) under '
        f'data.dir={data.dir!r} outside the held-out images')
  if not held_out:
    raise errors.UserError(f'no held-out image file in {where}: set data.eval_dir or '
                           'data.heldout_fraction')
  return ([os.path.join(data.dir, r) for r in train],
          [os.path.join(held_root, r) for r in held_out])


def load_images(paths, size, min_size=image_io.DEFAULT_MIN_SIZE, skips=None):
  """Decodes image files -> uint8 [N, size, size, 3], skipping bad ones (see itit/data/images).

  Skipped files are counted by reason in `skips` (a `records.SkipCounter`) when given.
  """
  images = []
  for path in paths:
    try:
      images.append(image_io.load_image(path, size=size, min_size=min_size))
    except image_io.BadInput as e:
      if skips is not None:
        skips.skip(e.reason, path)
  return np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)


def _hint(skips, config):
  if not skips.counts['too_small']:
    return ''
  return (f'; lower --config.data.min_size (now {config.data.min_size}) to upscale images '
          f'smaller than it to model.image_size={config.model.image_size}')


def check_train_files(config, train_files):
  """Decodes up to NUM_PROBED training files (evenly spaced); refuses a folder with none usable.

  Returns the probe's `SkipCounter`.
  """
  picks = np.unique(np.linspace(0, len(train_files) - 1, min(NUM_PROBED, len(train_files)))
                    .round().astype(int))
  skips = records.SkipCounter()
  usable = len(load_images([train_files[i] for i in picks], config.model.image_size,
                           config.data.min_size, skips))
  if not usable:
    raise errors.UserError(f'no usable training image under data.dir={config.data.dir!r}: '
                           f'{len(picks)} of its {len(train_files)} files checked, '
                           f'{skips.summary()}{_hint(skips, config)}')
  if skips.total:
    print(f'Training images: {usable} of {len(picks)} checked are usable ({skips.summary()}); '
          'the unusable ones are skipped when drawn.', flush=True)
  return skips


def train_batch(config, step, train_files=None):
  """The training images of `step`: uint8 [batch_size, H, W, 3], a pure function of (seed, step)."""
  rng = np.random.default_rng([config.seed, step])
  size = config.model.image_size
  if config.data.source == 'shapes':
    return np.stack([shapes.render(shapes.sample_scene(rng, config.data.max_objects), size, rng)
                     for _ in range(config.batch_size)])
  images = np.zeros((0, size, size, 3), np.uint8)
  skips = records.SkipCounter(log=False)  # counted for the error only: a step is no place to warn
  drawn = 0
  while len(images) < config.batch_size:  # bad files are skipped; draw more, a bounded number
    if drawn >= MAX_DRAWS_PER_IMAGE * config.batch_size:
      raise errors.UserError(
          f'step {step}: {drawn} files drawn from data.dir={config.data.dir!r} gave '
          f'{len(images)} of the {config.batch_size} usable images a batch needs '
          f'({skips.summary()}){_hint(skips, config)}')
    picks = rng.integers(0, len(train_files), config.batch_size - len(images))
    drawn += len(picks)
    images = np.concatenate([images, load_images([train_files[i] for i in picks], size,
                                                 config.data.min_size, skips)])
  return images


def eval_set(config, eval_files=None):
  """Held-out images uint8 [N, H, W, 3] and, for the shapes world, its exact batch parser.

  A folder's held-out files that cannot be used are skipped (one line says how many and why);
  when none is usable the run is refused with those counts.
  """
  if config.data.source == 'shapes':
    if config.data.max_objects == 1:  # the laptop level: every one-object scene, in order
      scenes = shapes.all_scenes()[:min(config.data.num_eval, shapes.NUM_ONE_OBJECT_SCENES)]
    else:
      scenes = shapes_splits.make_splits(config.seed, num_test=config.data.num_eval)['test']
    images = np.stack([shapes.render(s, config.model.image_size) for s in scenes])
    return images, shapes_parse.parse_images
  if config.data.source != 'folder':
    raise errors.UserError(
        f"data.source must be 'shapes' or 'folder', got {config.data.source!r}.")
  skips = records.SkipCounter()
  images = load_images(eval_files, config.model.image_size, config.data.min_size, skips)
  if not len(images):
    raise errors.UserError(f'no usable held-out image among {len(eval_files)} files: '
                           f'{skips.summary()}{_hint(skips, config)}')
  if skips.total:
    print(f'Held-out images: {len(images)} of {len(eval_files)} usable ({skips.summary()}).',
          flush=True)
  return images, None

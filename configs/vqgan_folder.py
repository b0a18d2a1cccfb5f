r"""VQGAN tokenizer for your own images: 32x32 images -> 8x8 = 64 tokens from 128 codes.

The shapes world's tokenizer (configs/vqgan_shapes.py: its model, losses and schedule) reading
an image folder instead, with the folder's settings as fields:

  python -m itit.train_tokenizer --config=configs/vqgan_folder.py --workdir=DIR \
      --config.data.dir=DATA/images --config.data.eval_dir=DATA/test

  data.dir               the training images, read recursively (.jpg .jpeg .png .webp .gif
                         .bmp .tif .tiff); must not contain the test images
  data.eval_dir          held-out images for the reconstruction metrics ('' = none: then
                         data.heldout_fraction of data.dir is held out)
  data.heldout_fraction  0.1: the images of data.dir held out by file name when eval_dir is
                         empty; configs/prepare_folder.py's `heldout_fraction` of the same folder
                         holds out exactly the same files
  data.num_eval          at most this many held-out images are evaluated (1000)
  data.min_size          32: images with a shorter side are skipped as 'too_small'; lower it to
                         upscale smaller images to model.image_size (a run whose images are all
                         too small is refused at start, with the counts)
  model.image_size       32; model.codebook_size 128 (the ITIT config's model.image_vocab_size
                         must match: configs/folder.py has 128)

Presets: '' (the full 1500 steps) or 'quick' (600 steps).
"""
from configs import common
from configs import vqgan_shapes


def get_config(arg=None):
  presets = common.presets(arg, 'configs/vqgan_folder.py', valid=('quick',))
  config = vqgan_shapes.get_config('quick' if 'quick' in presets else None)
  config.data.update(dict(source='folder', dir='', eval_dir='', heldout_fraction=0.1,
                          num_eval=1000, min_size=32))
  return config

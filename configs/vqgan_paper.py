"""The ITIT paper's tokenizer: a CNN VQGAN, 256x256 -> 16x16 tokens, 8192 codes.

MaskGIT's layout with a codebook 8x larger (the paper trains its own VQGAN, batch 256).

  python -m itit.train_tokenizer --config=configs/vqgan_paper.py --workdir=DIR \
      --config.data.dir=/path/to/images
"""
from configs import common
from configs import vqgan_maskgit


def get_config(arg=None):
  common.presets(arg, 'configs/vqgan_paper.py', valid=())
  config = vqgan_maskgit.get_config()
  config.model.codebook_size = 8192
  config.batch_size = 256
  return config

r"""ITIT on your own 32px images and captions: the shapes-world model, no shapes-world evaluator.

  python -m itit.train --config=configs/folder.py --config.data.dir=SHARDS --workdir=RUN

SHARDS is the output of `python -m itit.prepare --config=configs/prepare_folder.py:DATA` with a
VQGAN of configs/vqgan_folder.py (8x8 tokens from 128 codes, SentencePiece up to 1000 pieces,
32 text tokens). The model, CPU schedule and presets are configs/shapes.py's (`rowN`, `quick`;
no row = table 2 row 14, which needs the unpaired_image and unpaired_text streams; `:row3`
trains on the pairs alone). The shapes world's exact-scene evaluator is off: runs of the cycle
rows run the generic `cycle` evaluator at each evaluation. To also score a captioned test folder
while training (CIDEr, FID with eval.inception, round trips: itit/evaluation/folder.py):
`--config.eval.evaluators=cycle,folder --config.eval.folder.images=DATA/test`, or afterwards
`python -m itit.evaluate --workdir=RUN --eval=folder --config.folder.images=DATA/test`.
"""
from configs import shapes


def get_config(arg=None):
  config = shapes.itit_config(arg, 'configs/folder.py')
  config.eval.shapes = False
  config.eval.evaluators = 'cycle' if 'cycle' in config.eval.evaluators else ''
  return config

r"""How local a shapes-world VQGAN's tokens are: the codes its plain-background patches get.

  python scripts/token_stats.py --vqgan=VQGAN_WORKDIR [--num_scenes=500]

A tokenizer whose tokens describe their own patch gives every plain-background patch (about
three quarters of the shapes world's 4x4 patches) one code; one whose tokens depend on the whole
scene spreads them over many codes, and ITIT then has to learn a far harder token distribution.
Also prints the tokens of an empty corner for one circle of each colour at the opposite corner
(they should not change with the colour).
"""
import argparse
import os
import sys

import numpy as np

# Runnable as `python scripts/...` from a checkout without `pip install -e .`.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from itit.data import shapes
from itit.models import vqgan


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--vqgan', required=True, help='an itit.train_tokenizer workdir')
  parser.add_argument('--num_scenes', type=int, default=500)
  args = parser.parse_args()
  params, config = vqgan.load_tokenizer(args.vqgan)
  grid, size = vqgan.grid_size(config), config.image_size
  patch = size // grid
  tokenize = vqgan.tokenizer_fn(params, config, 100)
  splits = shapes.make_splits(0, paired_fraction=1.0, num_train=100, num_test=args.num_scenes)
  images = np.stack([image for image, _ in shapes.examples(splits['test'], 0, size)])
  tokens = np.asarray(tokenize(images)).reshape(len(images), -1)
  patches = images.reshape(-1, grid, patch, grid, patch, 3).transpose(0, 1, 3, 2, 4, 5)
  patches = patches.reshape(len(images), grid * grid, -1)
  background = np.all(patches == np.asarray(shapes.BACKGROUND, np.uint8).repeat(
      patch * patch)[None, None], axis=-1)
  codes, counts = np.unique(tokens[background], return_counts=True)
  print(f'{len(images)} scenes: {background.mean():.1%} of patches are plain background; they '
        f'use {len(codes)} codes, the most common {counts.max() / counts.sum():.1%} of them; '
        f'{np.mean([len(set(row)) for row in tokens]):.1f} distinct codes per image, '
        f'{len(np.unique(tokens))} codes in all')
  corner = []
  for color in shapes.COLORS:
    scene = shapes.Scene((shapes.Obj(color, 'circle', 'small', 'top left'),))
    corner.append(shapes.render(scene, size, np.random.default_rng(0)))
  corner_tokens = np.asarray(tokenize(np.stack(corner))).reshape(len(corner), grid, grid)
  print('bottom-right 2x2 tokens for a small circle at the top left, per colour:')
  for color, row in zip(shapes.COLORS, corner_tokens[:, -2:, -2:].reshape(len(corner), -1)):
    print(f'  {color:8s} {row.tolist()}')


if __name__ == '__main__':
  main()

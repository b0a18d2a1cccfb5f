"""Image grids with their text underneath, for samples, pseudo pairs and cycle chains."""
from __future__ import annotations

import textwrap
from typing import Sequence

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont


def _font():
  return ImageFont.load_default()


def captioned_grid(images: np.ndarray, captions: Sequence[str], *, columns: int = 8,
                   cell: int = 128) -> np.ndarray:
  """uint8 images [B, H, W, 3] and one caption each -> one uint8 grid image [H', W', 3].

  Small images are enlarged with nearest-neighbour sampling so pixels stay crisp. The grid has
  min(columns, B) columns, and every caption is shown whole, wrapped at spaces under its image
  (rows are as tall as their longest caption needs; a word wider than a cell is never split).
  """
  images = np.asarray(images)
  if images.ndim != 4 or len(images) != len(captions):
    raise ValueError(f'captioned_grid: {images.shape} images for {len(captions)} captions')
  font = _font()
  line_height = 11
  chars_per_line = max(8, cell // 6)
  columns = max(1, min(columns, len(images)))
  wrapped = [textwrap.wrap(text, chars_per_line, break_long_words=False, break_on_hyphens=False)
             for text in captions]
  longest_word = max((font.getlength(line) for lines in wrapped for line in lines), default=0)
  column_width = max(cell, int(np.ceil(longest_word))) + 4
  row_heights = [cell + 4 + max((len(w) for w in wrapped[r:r + columns]), default=0)
                 * line_height + 4 for r in range(0, len(images), columns)]
  canvas = Image.new('RGB', (columns * column_width, sum(row_heights)), (255, 255, 255))
  draw = ImageDraw.Draw(canvas)
  for index, (image, lines) in enumerate(zip(images, wrapped)):
    row, col = divmod(index, columns)
    x = col * column_width + 2
    y = sum(row_heights[:row]) + 2
    canvas.paste(Image.fromarray(image).resize((cell, cell), Image.NEAREST), (x, y))
    for k, line in enumerate(lines):
      draw.text((x, y + cell + 2 + k * line_height), line, fill=(0, 0, 0), font=font)
  return np.asarray(canvas)


def chain_figure(rows: Sequence[Sequence[tuple[np.ndarray, str]]], *, cell: int = 128) -> np.ndarray:
  """Cycle chains, one per row: [(image, caption made from it), ...] left to right."""
  columns = max(len(r) for r in rows)
  images, captions = [], []
  blank = None
  for row in rows:
    for image, text in row:
      images.append(image)
      captions.append(text)
      blank = np.full_like(image, 255)
    for _ in range(columns - len(row)):
      images.append(blank)
      captions.append('')
  return captioned_grid(np.stack(images), captions, columns=columns, cell=cell)

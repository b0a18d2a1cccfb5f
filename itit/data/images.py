"""Decoding untrusted image bytes into the paper's square RGB inputs.

`load_image` either returns a `uint8 [size, size, 3]` array or raises `BadInput(reason)`; no other
exception escapes it, whatever the bytes (the fuzz test in tests/test_sources.py holds it to that).

Decisions, each chosen so that a long `prepare` run keeps every image a user would call valid and
counts everything else:
- Formats: only JPEG (camera MPO files included), PNG, WebP, GIF, BMP and TIFF are opened; PIL's
  other plugins (EPS runs Ghostscript, for one) are never reached with untrusted bytes.
- Modes converted to RGB: 1, L, P, CMYK (naive, without ICC profiles), YCbCr, RGBX, HSV; modes with
  alpha (RGBA, LA, PA, P with a transparency key, RGBa, La) are composited onto WHITE, the
  background a viewer shows; 16-bit greyscale (I;16*, and I holding values above 255) is scaled to
  8 bits. Anything else (F, LAB, ...) is skipped as 'unsupported_mode'.
- EXIF orientation is applied, so the pixels are the picture a person (and its caption) saw.
- Animated images: the first frame.
- Decompression bombs: the header's width * height is checked against `max_pixels` before any pixel
  is decoded ('too_large'); PIL's own bomb error maps to the same reason.
- Tiny images: a short side below `min_size` is 'too_small' (upscaling them gives blur, not data);
  from `min_size` up to `size` an image is upscaled. Every command that reads raw images has it
  as a config field: prepare's `min_image_size`, the tokenizer's `data.min_size`.
- Large JPEGs are decoded at a reduced DCT scale (`draft`) that leaves the short side at least
  2 * `size`, so the bicubic antialiased downscale still does the final (>= 2x) step: about 2x
  faster on a 2048x1536 photo, pixels within 4/255 (mean 0.2) of a full-resolution decode.
"""
import io
import os
import warnings

import numpy as np
from PIL import Image
from PIL import ImageOps
from PIL import UnidentifiedImageError

# Largest accepted width * height: 8192 x 8192. Above this a scraped "image" is a poster or a bomb.
DEFAULT_MAX_PIXELS = 8192 * 8192
# Largest accepted encoded file; a 64 MiB image is not a photo anyone captioned.
DEFAULT_MAX_BYTES = 64 * 2**20
DEFAULT_MIN_SIZE = 64
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.webp', '.gif', '.bmp', '.tif', '.tiff')

_FORMATS = ('JPEG', 'PNG', 'WEBP', 'GIF', 'BMP', 'TIFF')
_ALPHA_MODES = ('RGBA', 'LA', 'PA', 'RGBa', 'La')
_RGB_CONVERTIBLE_MODES = ('1', 'L', 'P', 'CMYK', 'YCbCr', 'RGBX', 'HSV')
_SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')


class BadInput(ValueError):
  """An input that is skipped and counted: `reason` is a short stable string, e.g. 'too_small'."""

  def __init__(self, reason, detail=''):
    super().__init__(f'{reason}: {detail}' if detail else reason)
    self.reason = reason
    self.detail = detail


def to_rgb(image):
  """Returns `image` in mode RGB (see the module docstring for which modes convert and how)."""
  mode = image.mode
  if mode == 'RGB':
    return image
  if mode in _ALPHA_MODES or (mode == 'P' and 'transparency' in image.info):
    rgba = image.convert('RGBA')
    white = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert('RGB')
  if mode in _RGB_CONVERTIBLE_MODES:
    return image.convert('RGB')
  if mode in _SIXTEEN_BIT_MODES:
    values = np.asarray(image).astype(np.int64)
    if mode != 'I' or values.max(initial=0) > 255:
      values = np.round(values / 257.0)
    grey = np.clip(values, 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode='L').convert('RGB')
  raise BadInput('unsupported_mode', f'image mode {mode}')


def center_crop_resize(image, size):
  """The paper's preprocessing: the central square, resized (bicubic, antialiased) to `size`.

  Args:
    image: a PIL image, any mode `to_rgb` accepts.
    size: output side in pixels.

  Returns:
    uint8 `[size, size, 3]` RGB array.
  """
  image = to_rgb(image)
  width, height = image.size
  side = min(width, height)
  left, top = (width - side) // 2, (height - side) // 2
  # Crop first, then resize: resizing with a `box` would let pixels outside the square bleed in
  # through the bicubic kernel.
  square = image.crop((left, top, left + side, top + side))
  if side != size:
    square = square.resize((size, size), Image.Resampling.BICUBIC)
  return np.asarray(square, dtype=np.uint8)


def _read_bytes(data, max_bytes):
  """The encoded image, after the checks that need no decoding."""
  if isinstance(data, (str, os.PathLike)):
    try:
      if not os.path.isfile(data):
        raise BadInput('missing_file', os.fspath(data))
      if os.path.getsize(data) > max_bytes:
        raise BadInput('too_large', f'{os.path.getsize(data)} bytes')
      with open(data, 'rb') as f:
        data = f.read()
    except BadInput:
      raise
    except (OSError, ValueError) as e:
      raise BadInput('unreadable_file', str(e)) from None
  if not isinstance(data, (bytes, bytearray, memoryview)):
    raise TypeError(f'load_image takes bytes or a path, not {type(data).__name__}')
  if len(data) == 0:
    raise BadInput('empty_file')
  if len(data) > max_bytes:
    raise BadInput('too_large', f'{len(data)} bytes')
  return data


def load_image(data, size=256, min_size=DEFAULT_MIN_SIZE, max_pixels=DEFAULT_MAX_PIXELS,
               max_bytes=DEFAULT_MAX_BYTES):
  """Decodes, orients, converts to RGB, centre-crops and resizes one image.

  Args:
    data: encoded bytes, or a path to an image file.
    size: side of the returned square.
    min_size: smallest accepted short side of the decoded image, in pixels.
    max_pixels: largest accepted width * height, read from the header before decoding.
    max_bytes: largest accepted encoded size.

  Returns:
    uint8 `[size, size, 3]` RGB array, read-only.

  Raises:
    BadInput: with `reason` one of 'empty_file', 'missing_file', 'unreadable_file', 'too_large',
      'not_image', 'corrupt_image', 'too_small', 'unsupported_mode'.
  """
  encoded = io.BytesIO(_read_bytes(data, max_bytes))
  with warnings.catch_warnings():
    # The pixel cap below decides on size, and the decode either succeeds or raises: PIL's
    # warnings (large image, corrupt EXIF, short TIFF tag) would only be noise in a long run.
    warnings.simplefilter('ignore')
    try:
      image = Image.open(encoded, formats=_FORMATS)
    except Image.DecompressionBombError as e:
      raise BadInput('too_large', str(e)) from None
    except UnidentifiedImageError:
      raise BadInput('not_image') from None
    except Exception as e:  # pylint: disable=broad-except
      # PIL's parsers raise many kinds of error on crafted headers; all mean the same here.
      raise BadInput('corrupt_image', f'{type(e).__name__}: {e}') from None
    with image:
      return _decode(image, size, min_size, max_pixels)


def _apply_orientation(image):
  """Applies the EXIF orientation; an unreadable EXIF block leaves the pixels as stored."""
  try:
    return ImageOps.exif_transpose(image)
  except Exception:  # pylint: disable=broad-except
    return image


def _decode(image, size, min_size, max_pixels):
  """The part of `load_image` after the header was read."""
  width, height = image.size
  if width * height > max_pixels:
    raise BadInput('too_large', f'{width}x{height} pixels')
  if min(width, height) < max(min_size, 1):
    raise BadInput('too_small', f'{width}x{height} pixels')
  try:
    if image.format in ('JPEG', 'MPO'):
      image.draft(None, (2 * size, 2 * size))
    image.load()
    image = _apply_orientation(image)
    array = center_crop_resize(image, size)
  except BadInput:
    raise
  except Image.DecompressionBombError as e:
    raise BadInput('too_large', str(e)) from None
  except Exception as e:  # pylint: disable=broad-except
    # Truncated data (OSError), broken chunks (SyntaxError, ValueError), bad EXIF, ...
    raise BadInput('corrupt_image', f'{type(e).__name__}: {e}') from None
  if array.shape != (size, size, 3):
    raise BadInput('corrupt_image', f'decoded to shape {array.shape}')
  array.setflags(write=False)
  return array

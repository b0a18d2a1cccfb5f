"""Reading shapes-world scenes back from captions and pixels.

`parse_caption` inverts `shapes.all_captions` exactly. `parse_image` reads any image (ground
truth, a VQGAN reconstruction, a generated sample) and returns its best guess, never raising:

1. Each pixel is explained as background + strength * (palette colour - background): the colour
   is the palette line through the background that passes closest to the pixel, so a blurred edge
   (a mix of a colour and the background) keeps its colour; the strength is the projection.
   ("Background by distance": a pixel within 5% of the dimmest colour's distance is background.)
2. Pixels with strength >= 0.5 form objects: 4-connected components (objects never touch).
3. Per component: colour by strength-weighted vote; shape by the nearest template: the
   strengths resampled to an 8x8 grid over the component's box, compared with the four shapes
   rendered (sharp and blurred) the same way; size by its soft area (summed strength), the nearer
   of that shape's small and large areas on a log scale; region from its strength-weighted
   centroid, less that shape's centroid offset from its box centre. Blur conserves area and
   centroid, which is why they beat a thresholded box. Components under a quarter of the
   smallest shape's area are noise.
"""
import functools
import itertools
import re

import numpy as np
from scipy import ndimage

from itit.data import shapes

_GRID = 8  # shape descriptor: strengths sampled on a _GRID x _GRID grid over a component's box
_STRENGTH_THRESHOLD = 0.5
_QUIET = 0.05  # background: pixels nearer it than this fraction of the dimmest colour's distance
_TEMPLATE_BLURS = (0.0, 0.5, 0.8, 1.1)  # Gaussian sigmas in reference pixels
_MAX_OBJECTS = 4  # a garbage image yields at most this many (largest) objects
_CHUNK = 512  # images per vectorised step, bounding memory to ~_CHUNK * H * W * 40 bytes
# 4-connectivity inside each image, never across the batch axis.
_STRUCTURE = np.zeros((3, 3, 3), bool)
_STRUCTURE[1] = ndimage.generate_binary_structure(2, 1)


def _alternation(words) -> str:
  return '|'.join(re.escape(w) for w in sorted(words, key=len, reverse=True))


def _object_pattern(tag: str) -> str:
  sizes = _alternation(itertools.chain(*shapes.SIZE_WORDS.values()))
  return (f'a (?P<{tag}_size>{sizes}) (?P<{tag}_color>{_alternation(shapes.COLORS)}) '
          f'(?P<{tag}_shape>{_alternation(shapes.SHAPES)})')


@functools.cache
def _caption_patterns() -> tuple[tuple[re.Pattern, int], ...]:
  regions = _alternation(itertools.chain(*shapes.REGION_PHRASES.values()))
  relations = _alternation(itertools.chain(*shapes.RELATION_PHRASES.values()))
  slots = dict(a=_object_pattern('a'), b=_object_pattern('b'), ra=f'(?P<a_region>{regions})',
               rb=f'(?P<b_region>{regions})', rel=f'(?P<rel>{relations})')
  return tuple((re.compile(t.format(**slots)), count)
               for count, templates in ((1, shapes.ONE_OBJECT_TEMPLATES),
                                        (2, shapes.TWO_OBJECT_TEMPLATES)) for t in templates)


@functools.cache
def _inverse(table: str) -> dict[str, str]:
  return {phrase: value for value, phrases in getattr(shapes, table).items() for phrase in phrases}


def parse_caption(text: str) -> shapes.Scene | None:
  """The scene a caption describes, or None for text that is not one of its captions.

  Case, surrounding whitespace, repeated spaces and a final period are forgiven; anything else
  (a missing attribute, a relation that contradicts the regions, a layout that cannot exist)
  gives None.
  """
  if not isinstance(text, str):
    return None
  text = ' '.join(text.lower().strip().removesuffix('.').split())
  for pattern, count in _caption_patterns():
    match = pattern.fullmatch(text)
    if match is None:
      continue
    objects = [shapes.Obj(match[f'{tag}_color'], match[f'{tag}_shape'],
                          _inverse('SIZE_WORDS')[match[f'{tag}_size']],
                          _inverse('REGION_PHRASES')[match[f'{tag}_region']])
               for tag in 'ab'[:count]]
    scene = shapes.Scene(tuple(objects))
    # The final membership test makes the parser exact by construction: it accepts precisely
    # the strings that all_captions produces.
    if shapes.is_valid(scene) and text in _caption_set(scene):
      return scene
  return None


@functools.lru_cache(maxsize=8192)
def _caption_set(scene: shapes.Scene) -> frozenset[str]:
  return frozenset(shapes.all_captions(scene))


def _as_batch(images) -> np.ndarray:
  """Any image batch -> float32 [N, H, W, 3] in [0, 255].

  Floats (and bools) in [0, 1] are scaled, floats beyond 1.5 are taken as 0..255; grey is
  repeated, alpha dropped, NaN zeroed.
  """
  x = np.asarray(images)
  kind = x.dtype.kind
  if kind not in 'buif' or x.ndim not in (3, 4):
    return np.zeros((len(x) if x.ndim == 4 else 0, 0, 0, 3), np.float32)
  if x.ndim == 3:  # [N, H, W] grey
    x = x[..., None]
  if x.shape[-1] == 0:
    x = np.zeros(x.shape[:3] + (3,), np.float32)
  x = (x[..., :3] if x.shape[-1] >= 3 else np.repeat(x[..., :1], 3, axis=-1)).astype(np.float32)
  if kind in 'bf':
    x = np.nan_to_num(x, nan=0.0, posinf=255.0, neginf=0.0)
    if x.size and x.max() <= 1.5:
      x *= 255.0
  return np.clip(x, 0.0, 255.0)


def _classify_pixels(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """[N, H, W, 3] -> strength float32 [N, H, W] and palette index int [N, H, W].

  Only pixels visibly off the background are classified (most of an image is background).
  """
  background = np.asarray(shapes.BACKGROUND, np.float32)
  directions = np.asarray(list(shapes.COLORS.values()), np.float32) - background  # [K, 3]
  norms = (directions**2).sum(-1)  # [K]
  offset = (x - background).reshape(-1, 3)
  strength = np.zeros(len(offset), np.float32)
  color_index = np.zeros(len(offset), np.int64)
  active = np.flatnonzero((offset**2).sum(-1) > _QUIET**2 * norms.min())
  dots = offset[active] @ directions.T  # [P, K]
  # The nearest colour line: largest squared projection, among colours the pixel leans toward.
  best = np.where(dots > 0, dots**2 / norms, 0.0).argmax(-1)
  strength[active] = np.clip(dots[np.arange(len(active)), best] / norms[best], 0.0, 1.5)
  color_index[active] = best
  return strength.reshape(x.shape[:3]), color_index.reshape(x.shape[:3])


def _sample(maps: np.ndarray, image_index: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """Bilinear samples of `maps` float [N, H, W] on a _GRID x _GRID grid over each box.

  image_index int [C]; boxes int [C, 4] (y0, y1, x0, x1), ends exclusive. Returns [C, G * G].
  """
  steps = (np.arange(_GRID) + 0.5) / _GRID
  coords = []
  for lo, hi, limit in ((boxes[:, 0], boxes[:, 1], maps.shape[1]),
                        (boxes[:, 2], boxes[:, 3], maps.shape[2])):
    c = lo[:, None] + steps[None] * (hi - lo)[:, None] - 0.5  # pixel-centre coordinates [C, G]
    base = np.floor(c)
    coords.append([(np.clip(base + d, 0, limit - 1).astype(np.int64),
                    np.where(d, c - base, 1.0 - (c - base))) for d in (0, 1)])
  samples = np.zeros((len(boxes), _GRID, _GRID), np.float32)
  n = image_index[:, None, None]
  for (ys, wy), (xs, wx) in itertools.product(*coords):
    samples += maps[n, ys[:, :, None], xs[:, None, :]] * wy[:, :, None] * wx[:, None, :]
  return samples.reshape(len(boxes), -1)


@functools.lru_cache(maxsize=16)
def _templates(side: int) -> tuple[np.ndarray, np.ndarray]:
  """Descriptors float32 [T, _GRID * _GRID] of every (shape, size, blur) at this image size,
  and the shape index [T] of each. Blurred variants keep small shapes recognisable in blurred
  or re-compressed images, whose soft edges the descriptor sees."""
  scale = side / shapes.REFERENCE_SIZE
  descriptors, shape_index = [], []
  for k, shape in enumerate(shapes.SHAPES):
    for size in shapes.SIZES:
      mask = shapes.shape_mask(shape, shapes.size_pixels(size, side))
      mask = np.pad(mask, int(3 * scale) + 2).astype(np.float32)
      for sigma in _TEMPLATE_BLURS:
        soft = ndimage.gaussian_filter(mask, sigma * scale) if sigma else mask
        ys, xs = np.nonzero(soft >= _STRENGTH_THRESHOLD)
        box = np.array([[ys.min(), ys.max() + 1, xs.min(), xs.max() + 1]])
        descriptors.append(np.clip(_sample(soft[None], np.zeros(1, int), box)[0], 0.0, 1.0))
        shape_index.append(k)
  return np.stack(descriptors), np.array(shape_index)


@functools.lru_cache(maxsize=16)
def _geometry(side: int) -> tuple[np.ndarray, np.ndarray]:
  """Area float [S, 2] and centroid minus box centre (dy, dx) float [S, 2, 2] of every
  (shape, size) at this image size: blur conserves both, unlike a thresholded box."""
  area, offset = np.zeros((len(shapes.SHAPES), 2)), np.zeros((len(shapes.SHAPES), 2, 2))
  for k, shape in enumerate(shapes.SHAPES):
    for j, size in enumerate(shapes.SIZES):
      n = shapes.size_pixels(size, side)
      mask = shapes.shape_mask(shape, n)
      ys, xs = np.nonzero(mask)
      area[k, j] = mask.sum()
      offset[k, j] = ys.mean() + 0.5 - n / 2, xs.mean() + 0.5 - n / 2
  return area, offset


def _measure(strength: np.ndarray, color_index: np.ndarray, labels: np.ndarray,
             num_labels: int) -> dict[str, np.ndarray]:
  """Per component (label 1..num_labels): pixel count, colour votes [C, K], soft mass, soft
  centroid [C, 2] in pixels, peak strength, image index and box [C, 4] (y0, y1, x0, x1)."""
  height, width = labels.shape[1:]
  weight = np.minimum(strength, 1.0).ravel()
  flat = labels.ravel()
  size = num_labels + 1
  num_colors = len(shapes.COLORS)
  votes = np.bincount(flat * num_colors + color_index.ravel(), weights=weight,
                      minlength=size * num_colors).reshape(size, num_colors)
  # Mass and centroid include the soft rim just outside each component (objects are >= 3 px
  # apart, so a 1 px rim never reaches another object).
  rim = ndimage.grey_dilation(labels, footprint=_STRUCTURE).ravel()
  ys, xs = (np.broadcast_to(c + 0.5, labels.shape).ravel() for c in np.indices((height, width)))
  mass = np.bincount(rim, weights=weight, minlength=size)
  centroid = np.stack([np.bincount(rim, weights=weight * c, minlength=size) for c in (ys, xs)], -1)
  inside = np.flatnonzero(flat)
  peak = np.zeros(size, np.float32)
  np.maximum.at(peak, flat[inside], weight[inside])
  bounds = np.array([(n.start, y.start, y.stop, x.start, x.stop)
                     for n, y, x in ndimage.find_objects(labels)])
  return dict(count=np.bincount(flat, minlength=size)[1:], votes=votes[1:], mass=mass[1:],
              centroid=centroid[1:] / np.maximum(mass[1:], 1e-6)[:, None], peak=peak[1:],
              image_index=bounds[:, 0], boxes=bounds[:, 1:])


def _parse_chunk(x: np.ndarray) -> list[shapes.Scene]:
  """float32 [N, H, W, 3] in [0, 255] -> N scenes."""
  num_images, height, width, _ = x.shape
  if num_images == 0 or height == 0 or width == 0:
    return [shapes.Scene(()) for _ in range(num_images)]
  strength, color_index = _classify_pixels(x)
  labels, num_labels = ndimage.label(strength >= _STRENGTH_THRESHOLD, structure=_STRUCTURE)
  if num_labels == 0:
    return [shapes.Scene(()) for _ in range(num_images)]
  c = _measure(strength, color_index, labels, num_labels)
  side = min(height, width)
  pixel_scale = height * width / side**2  # template areas are for side x side images
  area, offset = _geometry(side)
  keep = np.flatnonzero(c['count'] >= 0.25 * area.min() * pixel_scale)
  image_index = c['image_index'][keep]
  # An object drawn dimmer than its palette colour (a generated image) keeps its shape and
  # size: strengths are divided by the component's peak (1 in renders, even blurred ones).
  level = np.clip(c['peak'][keep], _STRENGTH_THRESHOLD, 1.0)
  descriptors = np.clip(_sample(strength, image_index, c['boxes'][keep]) / level[:, None], 0, 1)
  templates, template_shape = _templates(side)
  shape_of = template_shape[((descriptors[:, None] - templates[None])**2).sum(-1).argmin(-1)]
  size_of = np.abs(np.log(np.maximum(c['mass'][keep] / level, 1.0))[:, None] -
                   np.log(area[shape_of] * pixel_scale)).argmin(-1)
  centre = c['centroid'][keep] - offset[shape_of, size_of]
  row = np.clip(centre[:, 0] / height * 3, 0, 2).astype(int)
  col = np.clip(centre[:, 1] / width * 3, 0, 2).astype(int)
  color_of = c['votes'][keep].argmax(-1)
  colors = tuple(shapes.COLORS)
  found = [[] for _ in range(num_images)]
  for j, k in enumerate(keep):
    found[image_index[j]].append((-c['count'][k], j, shapes.Obj(
        colors[color_of[j]], shapes.SHAPES[shape_of[j]], shapes.SIZES[size_of[j]],
        shapes.REGIONS[3 * row[j] + col[j]])))
  return [shapes.Scene(tuple(o for *_, o in sorted(f)[:_MAX_OBJECTS])) for f in found]


def parse_images(images) -> list[shapes.Scene]:
  """Best-guess scenes of a batch: uint8 or float [N, H, W, 3] (floats in [0, 1]).

  Never raises: an unreadable input yields empty scenes (`Scene(())`), as does an image with
  no object; extra blobs give extra objects (at most 4), which
  `itit.evaluation.scenes.scene_metrics` counts as wrong.
  """
  try:
    x = _as_batch(images)
    return [scene for start in range(0, len(x), _CHUNK)
            for scene in _parse_chunk(x[start:start + _CHUNK])]
  except Exception:  # pylint: disable=broad-except  (scoring loops need a guess, not an error)
    try:
      return [shapes.Scene(()) for _ in range(len(images))]
    except TypeError:
      return []


def parse_image(pixels) -> shapes.Scene:
  """Best-guess scene of one image, uint8 or float [H, W, 3] (also [H, W] grey or RGBA)."""
  try:
    x = np.asarray(pixels)
  except Exception:  # pylint: disable=broad-except
    return shapes.Scene(())
  if x.ndim not in (2, 3):
    return shapes.Scene(())
  scenes = parse_images(x[None])
  return scenes[0] if scenes else shapes.Scene(())


"""The shapes world: the built-in, procedurally generated dataset (no download, exact metrics).

A scene is 1 or 2 objects on a plain dark background; each object has a colour, a shape, a size
and a region of a 3x3 grid. Two-object scenes also have a spatial relation, which follows from
the two regions (the grid offset must be larger on one axis, so 'left of' / 'above' is never
ambiguous). Captions come from several templates and paraphrases, every one of which names every
attribute of every object, so a caption parses back to its scene exactly. The caption and pixel
parsers live in the parsing module next to this one (it imports this module, never the reverse).
docs/SHAPES.md describes the world.

Geometry is defined at a 32x32 reference and scaled with `image_size`: objects are 9 (small) or
13 (large) reference pixels wide; an object's centre (the centre of its box) lies at least
`REGION_MARGIN` inside its region; two objects are `GAP` reference pixels apart along the axis of
their relation, so they never overlap or touch.

Below the reference size (`CELL_SIZES`: 21 to 30 pixels, a multiple of 3) the world is the
laptop level's: one object, centred in its grid cell and sized to fit it, with no jitter, so a
VQGAN with cell-sized patches gives each region exactly one token (docs/SHAPES.md).
"""
import dataclasses
import functools
import itertools
import zlib
from typing import Iterator, Sequence

import numpy as np

REFERENCE_SIZE = 32
BACKGROUND = (20, 20, 20)
COLORS = {
    'red': (220, 40, 40),
    'green': (40, 190, 60),
    'blue': (40, 90, 230),
    'yellow': (235, 215, 40),
    'purple': (150, 60, 210),
    'cyan': (40, 210, 220),
    'orange': (250, 130, 20),
    'white': (235, 235, 235),
}
SHAPES = ('circle', 'square', 'triangle', 'cross')
SIZES = ('small', 'large')
SIZE_PIXELS = {'small': 9, 'large': 13}  # box width at the 32x32 reference
# Row-major 3x3 grid: REGIONS[3 * row + col].
REGIONS = ('top left', 'top', 'top right', 'left', 'center', 'right', 'bottom left', 'bottom',
           'bottom right')
RELATIONS = ('left of', 'right of', 'above', 'below')
ATTRIBUTES = ('color', 'shape', 'size', 'region')
BORDER = 1.0  # reference pixels kept free at the image border
CELL_SIZES = (21, 24, 27, 30)  # image sizes with one object per scene, centred in its cell
REGION_MARGIN = 0.5  # reference pixels between an object's centre and its region's edge
GAP = 3.0  # reference pixels between two objects along their relation's axis

ATTRIBUTE_VALUES = {'color': tuple(COLORS), 'shape': SHAPES, 'size': SIZES, 'region': REGIONS}
ATTRIBUTE_OF_VALUE = {v: a for a, values in ATTRIBUTE_VALUES.items() for v in values}
NUM_ONE_OBJECT_SCENES = len(COLORS) * len(SHAPES) * len(SIZES) * len(REGIONS)  # listed first
assert len(ATTRIBUTE_OF_VALUE) == sum(map(len, ATTRIBUTE_VALUES.values())), (
    'attribute values collide')


@dataclasses.dataclass(frozen=True, order=True)
class Obj:
  """One object; fields compare in this order, which defines a scene's canonical order."""
  color: str
  shape: str
  size: str
  region: str

  def __post_init__(self):
    for name in ATTRIBUTES:
      if getattr(self, name) not in ATTRIBUTE_VALUES[name]:
        raise ValueError(
            f'Obj.{name}={getattr(self, name)!r} is not one of {ATTRIBUTE_VALUES[name]}.')


@dataclasses.dataclass(frozen=True)
class Scene:
  """Objects in canonical (sorted) order, so equal scenes compare and hash equal.

  Any number of objects is representable (`parse_image` may see 0 or 3 blobs in a generated
  image); the world itself only has the scenes for which `is_valid` holds.
  """
  objects: tuple[Obj, ...]

  def __post_init__(self):
    object.__setattr__(self, 'objects', tuple(sorted(self.objects)))

  @property
  def relation(self) -> str | None:
    """Where objects[0] is relative to objects[1] ('left of', ...); None unless two objects."""
    if len(self.objects) != 2:
      return None
    return relation_of(*self.objects)


def _cell(region: str) -> tuple[int, int]:
  return divmod(REGIONS.index(region), 3)


def relation_of(a: Obj, b: Obj) -> str | None:
  """The relation of `a` to `b` from their grid cells; None where both offsets are equal."""
  (row_a, col_a), (row_b, col_b) = _cell(a.region), _cell(b.region)
  d_row, d_col = row_b - row_a, col_b - col_a
  if abs(d_col) > abs(d_row):
    return 'left of' if d_col > 0 else 'right of'
  if abs(d_row) > abs(d_col):
    return 'above' if d_row > 0 else 'below'
  return None


def size_pixels(size: str, image_size: int) -> int:
  """Box width in pixels of an object of `size` in an image_size x image_size image.

  From 32 pixels up: rounded down, as are BORDER and GAP in pixels, so that every valid scene has
  a layout at every image_size >= 32 (tests check 32..299). Below: fitted to a grid cell of
  `image_size // 3` pixels (large: one pixel less than the cell; small: ~0.65 of it).
  """
  if image_size < REFERENCE_SIZE:
    cell = cell_pixels(image_size)
    return cell - 1 if size == 'large' else int(0.65 * cell + 0.5)
  return max(3, int(SIZE_PIXELS[size] * image_size / REFERENCE_SIZE))


def cell_pixels(image_size: int) -> int:
  """The grid cell's width in pixels of a cell-placed (below-reference) image size, or one error."""
  if image_size not in CELL_SIZES:
    raise ValueError(f'shapes: image_size={image_size} is not supported (use {REFERENCE_SIZE} or '
                     f'more, or one of the cell-placed sizes {CELL_SIZES})')
  return image_size // 3


@functools.lru_cache(maxsize=None)
def shape_mask(shape: str, n: int) -> np.ndarray:
  """bool [n, n]: the shape rasterised at pixel centres; every shape touches all 4 box sides.

  Integer arithmetic (2x pixel-centre offsets from the box centre) keeps masks exactly symmetric.
  """
  d = np.abs(2 * np.arange(n) + 1 - n)
  dy, dx = d[:, None], d[None, :]
  if shape == 'circle':
    mask = dx**2 + dy**2 <= n**2
  elif shape == 'square':
    mask = np.ones((n, n), bool)
  elif shape == 'triangle':  # apex up: row j (from the top) reaches out to (j + 1) / 2 pixels
    mask = dx <= np.arange(1, n + 1)[:, None]
  elif shape == 'cross':  # arms one third of the box thick
    mask = (3 * dx <= n) | (3 * dy <= n)
  else:
    raise ValueError(f'shape {shape!r} is not one of {SHAPES}.')
  mask.setflags(write=False)
  return mask


@functools.lru_cache(maxsize=None)
def _positions(cell: int, n: int, image_size: int) -> np.ndarray:
  """Top-left coordinates (one axis) of an n-pixel box whose centre lies in grid `cell`."""
  s = image_size / REFERENCE_SIZE
  p = np.arange(image_size - n + 1)
  centre = p + n / 2
  lo = cell * image_size / 3 + REGION_MARGIN * s
  hi = (cell + 1) * image_size / 3 - REGION_MARGIN * s
  border = int(BORDER * s)
  keep = (p >= border) & (p + n <= image_size - border) & (centre >= lo) & (centre <= hi)
  return p[keep]


def _axis_pairs(first: np.ndarray, first_n: int, second: np.ndarray,
                image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """All (first, second) positions on one axis with the second box GAP beyond the first."""
  a, b = np.meshgrid(first, second, indexing='ij')
  keep = b >= a + first_n + int(GAP * image_size / REFERENCE_SIZE)
  return a[keep], b[keep]


def _layout(objects: Sequence[Obj], image_size: int,
            rng: np.random.Generator) -> list[tuple[int, int, int]]:
  """(top, left, n) per object, drawn uniformly from the placements that keep the rules (below the
  reference size: centred in its cell, no jitter, one object only)."""
  cells = [_cell(o.region) for o in objects]
  if image_size < REFERENCE_SIZE:
    if len(objects) != 1:
      raise ValueError(f'{len(objects)} objects at image_size={image_size}: below '
                       f'{REFERENCE_SIZE} pixels a scene has one object (use >= 32 for two).')
    cell, n = cell_pixels(image_size), size_pixels(objects[0].size, image_size)
    (row, col), offset = cells[0], (cell - n) // 2
    return [(row * cell + offset, col * cell + offset, n)]
  ns = [size_pixels(o.size, image_size) for o in objects]
  options = [(_positions(r, n, image_size), _positions(c, n, image_size))
             for (r, c), n in zip(cells, ns)]
  chosen = [[None, None] for _ in objects]
  if len(objects) == 2:
    relation = relation_of(*objects)
    axis = 1 if relation in ('left of', 'right of') else 0
    first = 0 if relation in ('left of', 'above') else 1
    a, b = _axis_pairs(options[first][axis], ns[first], options[1 - first][axis], image_size)
    if not a.size:
      raise ValueError(f'no layout for {objects} at image_size={image_size}; use >= 32.')
    k = rng.integers(a.size)
    chosen[first][axis], chosen[1 - first][axis] = int(a[k]), int(b[k])
  for i, o in enumerate(objects):
    for axis in (0, 1):
      if chosen[i][axis] is None:
        if not options[i][axis].size:
          raise ValueError(f'no layout for {o} at image_size={image_size}.')
        chosen[i][axis] = int(rng.choice(options[i][axis]))
  return [(top, left, n) for (top, left), n in zip(chosen, ns)]


@functools.lru_cache(maxsize=None)
def _pair_feasible(cell_a: tuple[str, str], cell_b: tuple[str, str]) -> bool:
  """Whether objects with these (region, size) fit together at the reference size."""
  objects = [Obj('red', 'square', size, region) for region, size in (cell_a, cell_b)]
  if relation_of(*objects) is None:
    return False
  try:
    _layout(objects, REFERENCE_SIZE, np.random.default_rng(0))
  except ValueError:
    return False
  return True


def is_valid(scene: Scene) -> bool:
  """Whether `scene` belongs to the world: 1 object, or 2 with a relation and a layout."""
  if len(scene.objects) == 1:
    return True
  if len(scene.objects) != 2:
    return False
  a, b = scene.objects
  return _pair_feasible((a.region, a.size), (b.region, b.size))


@functools.cache
def _pair_layouts() -> tuple[tuple[tuple[str, str], tuple[str, str]], ...]:
  """Unordered feasible ((region, size), (region, size)) pairs of two-object scenes."""
  cells = list(itertools.product(REGIONS, SIZES))
  return tuple((a, b) for a, b in itertools.combinations(cells, 2) if _pair_feasible(a, b))


@functools.cache
def all_scenes() -> tuple[Scene, ...]:
  """Every valid scene, single objects first, in a fixed order."""
  looks = list(itertools.product(COLORS, SHAPES))
  objs = {(look, cell): Obj(*look, cell[1], cell[0])
          for look in looks for cell in itertools.product(REGIONS, SIZES)}
  singles = [Scene((o,)) for o in objs.values()]
  pairs = [Scene((objs[la, a], objs[lb, b]))
           for a, b in _pair_layouts() for la in looks for lb in looks]
  return tuple(singles + pairs)


def sample_scene(rng: np.random.Generator, max_objects: int = 2) -> Scene:
  """A random valid scene: the object count is uniform in [1, max_objects], then uniform."""
  if max_objects not in (1, 2):
    raise ValueError(f'max_objects must be 1 or 2, got {max_objects}.')
  colors, count = tuple(COLORS), int(rng.integers(1, max_objects + 1))
  if count == 1:
    cells = [(REGIONS[rng.integers(len(REGIONS))], SIZES[rng.integers(len(SIZES))])]
  else:
    layouts = _pair_layouts()
    cells = layouts[rng.integers(len(layouts))]
  return Scene(tuple(Obj(colors[rng.integers(len(colors))], SHAPES[rng.integers(len(SHAPES))],
                         size, region) for region, size in cells))


def render(scene: Scene, image_size: int = REFERENCE_SIZE,
           rng: np.random.Generator | None = None) -> np.ndarray:
  """uint8 [image_size, image_size, 3] image of a valid scene.

  The placement inside each region is jittered by `rng`; without one it is drawn from a
  generator seeded by the scene itself, so `render(scene)` is always the same image.
  """
  if not is_valid(scene):
    raise ValueError(f'render: {scene} is not a scene of the shapes world (see is_valid).')
  if rng is None:
    rng = np.random.default_rng(zlib.crc32(repr(scene).encode()))
  image = np.empty((image_size, image_size, 3), np.uint8)
  image[:] = BACKGROUND
  for obj, (top, left, n) in zip(scene.objects, _layout(scene.objects, image_size, rng)):
    image[top:top + n, left:left + n][shape_mask(obj.shape, n)] = COLORS[obj.color]
  return image


# Caption phrases: every phrase names its attribute exactly, so captions invert exactly.
SIZE_WORDS = {'small': ('small', 'little'), 'large': ('large', 'big')}
REGION_PHRASES = {
    'top left': ('at the top left', 'in the top left corner'),
    'top': ('at the top', 'at the top center'),
    'top right': ('at the top right', 'in the top right corner'),
    'left': ('on the left', 'on the left side'),
    'center': ('in the center', 'in the middle'),
    'right': ('on the right', 'on the right side'),
    'bottom left': ('at the bottom left', 'in the bottom left corner'),
    'bottom': ('at the bottom', 'at the bottom center'),
    'bottom right': ('at the bottom right', 'in the bottom right corner'),
}
RELATION_PHRASES = {'left of': ('to the left of',), 'right of': ('to the right of',),
                    'above': ('above', 'over'), 'below': ('below', 'under')}
# {a}, {b}: object phrases ('a small red circle'); {ra}, {rb}: their regions; {rel}: where a is
# relative to b. Two-object templates are used with either object as `a`.
ONE_OBJECT_TEMPLATES = ('{a} {ra}', 'there is {a} {ra}', '{ra} there is {a}',
                        'an image of {a} {ra}', '{a} is {ra}')
TWO_OBJECT_TEMPLATES = ('{a} {ra} {rel} {b} {rb}', 'there is {a} {ra} {rel} {b} {rb}',
                        '{a} {ra} is {rel} {b} {rb}', '{b} {rb} and {a} {ra} {rel} it')
VOCABULARY = tuple(sorted(
    set(' '.join([*COLORS, *SHAPES, 'a', *itertools.chain(
        *SIZE_WORDS.values(), *REGION_PHRASES.values(), *RELATION_PHRASES.values())]).split()) |
    {w for t in ONE_OBJECT_TEMPLATES + TWO_OBJECT_TEMPLATES for w in t.split() if w[0] != '{'}))


def _object_phrases(obj: Obj) -> list[tuple[str, str]]:
  return [(f'a {word} {obj.color} {obj.shape}', region)
          for word in SIZE_WORDS[obj.size] for region in REGION_PHRASES[obj.region]]


@functools.lru_cache(maxsize=8192)
def _captions(scene: Scene) -> tuple[str, ...]:
  if not is_valid(scene):
    raise ValueError(f'{scene} is not a scene of the shapes world (see is_valid).')
  if len(scene.objects) == 1:
    return tuple(t.format(a=a, ra=ra) for t in ONE_OBJECT_TEMPLATES
                 for a, ra in _object_phrases(scene.objects[0]))
  captions = []
  for first, second in itertools.permutations(scene.objects):
    for t, (a, ra), (b, rb), rel in itertools.product(
        TWO_OBJECT_TEMPLATES, _object_phrases(first), _object_phrases(second),
        RELATION_PHRASES[relation_of(first, second)]):
      captions.append(t.format(a=a, ra=ra, b=b, rb=rb, rel=rel))
  return tuple(captions)


def all_captions(scene: Scene) -> list[str]:
  """Every caption of a valid scene (all templates and paraphrases); each names everything."""
  return list(_captions(scene))


def caption(scene: Scene, rng: np.random.Generator) -> str:
  """One of `all_captions(scene)`, uniformly chosen by `rng`."""
  captions = _captions(scene)
  return captions[rng.integers(len(captions))]


def caption_corpus(seed: int = 0, num_scenes: int = 4000,
                   captions_per_scene: int = 16) -> list[str]:
  """Captions of random scenes (up to `captions_per_scene` each), to train a SentencePiece model.

  The defaults give 64,000 lines that use every word of VOCABULARY (a test checks it).
  """
  rng = np.random.default_rng(seed)
  corpus = []
  for _ in range(num_scenes):
    captions = _captions(sample_scene(rng))
    take = rng.permutation(len(captions))[:captions_per_scene]
    corpus.extend(captions[i] for i in take)
  return corpus


def examples(scenes: Sequence[Scene], seed: int,
             image_size: int = REFERENCE_SIZE) -> Iterator[tuple[np.ndarray, str]]:
  """(uint8 [image_size, image_size, 3] image, caption) per scene; see `example`."""
  for index, scene in enumerate(scenes):
    yield example(scene, seed, index, image_size)


def example(scene: Scene, seed: int, index: int,
            image_size: int = REFERENCE_SIZE) -> tuple[np.ndarray, str]:
  """The `index`-th (image, caption) of a seeded stream.

  Caption and layout depend on (seed, index) only, so a stream can be read in any order or
  sharded.
  """
  rng = np.random.default_rng((seed, index))
  text = caption(scene, rng)
  return render(scene, image_size, rng), text

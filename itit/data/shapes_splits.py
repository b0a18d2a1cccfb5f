"""Train and test splits of the shapes world: which scenes are paired, unpaired and tested.

Two ways to keep information from the pairs, each scored on its own test split:
- held-out combinations (`heldout_combinations`): no training scene shows them at all;
  'heldout_test' asks whether the model composes attributes it saw apart.
- paired looks (`paired_looks` < 1): the pairs show only some (colour, shape) combinations while
  the unpaired images and texts show them all; 'novel_test' holds the test scenes with a look no
  pair shows, where only the unpaired data (through ITIT's cycles) can teach the words for the
  pictures.
"""
from typing import Sequence

import numpy as np

from itit.data import shapes
from itit.data.shapes import Scene

# Held out by default: one (colour, shape) pair per shape and per colour, so every colour and
# every shape is still seen in training, but never in these combinations.
DEFAULT_HELDOUT = (('red', 'triangle'), ('green', 'cross'), ('blue', 'circle'),
                   ('yellow', 'square'))
PAIRED_LOOKS = (0.25, 0.5, 0.75, 1.0)  # fractions of the (colour, shape) looks pairs may show


def contains_combination(scene: Scene, combinations: Sequence[Sequence[str]]) -> bool:
  """Whether one object of `scene` has all values of one combination, e.g. ('red', 'cross')."""
  return any(set(c) <= {o.color, o.shape, o.size, o.region}
             for o in scene.objects for c in combinations)


def paired_looks(fraction: float) -> frozenset[tuple[str, str]]:
  """The (colour, shape) looks pairs may show: colour i with shape j where (i + j) mod 4 is below
  4 * fraction, so every colour keeps the same number of shapes and every shape of colours (at
  0.5: each colour with 2 of the 4 shapes, each shape with 4 of the 8 colours).
  """
  if fraction not in PAIRED_LOOKS:
    raise ValueError(f'make_splits: paired_looks must be one of {PAIRED_LOOKS}, got {fraction}.')
  count = round(fraction * len(shapes.SHAPES))
  return frozenset((color, shape) for i, color in enumerate(shapes.COLORS)
                   for j, shape in enumerate(shapes.SHAPES) if (i + j) % len(shapes.SHAPES) < count)


def _weighted_sample(scenes: Sequence[Scene], k: int, rng: np.random.Generator) -> list[Scene]:
  """k scenes without replacement; a 1-object scene is as likely as a 2-object one at first.

  There are far fewer 1-object scenes, so weighting them up keeps them in the data as
  `sample_scene` would (Efraimidis-Spirakis keys: exponential noise over weight).
  """
  single = np.array([len(s.objects) == 1 for s in scenes], bool)
  weight = np.where(single, max(1, (~single).sum()) / max(1, single.sum()), 1.0)
  order = np.argsort(rng.exponential(size=len(scenes)) / weight, kind='stable')[:k]
  return [scenes[i] for i in rng.permutation(order)]


def _check_arguments(paired_fraction, num_train, num_test, heldout_combinations, max_objects):
  if not 0.0 <= paired_fraction <= 1.0:
    raise ValueError(f'make_splits: paired_fraction must be in [0, 1], got {paired_fraction}.')
  if num_train < 0 or num_test < 0:
    raise ValueError(f'make_splits: num_train={num_train}, num_test={num_test} must be >= 0.')
  if max_objects not in (1, 2):
    raise ValueError(f'make_splits: max_objects must be 1 or 2, got {max_objects}.')
  for combination in heldout_combinations:
    unknown = [v for v in combination if v not in shapes.ATTRIBUTE_OF_VALUE]
    if isinstance(combination, str) or unknown or not combination:
      raise ValueError(f'make_splits: held-out combination {combination!r} must be a tuple of '
                       f'attribute values such as ("red", "triangle").')


def make_splits(seed: int, *, paired_fraction: float = 0.02, num_train: int = 20000,
                num_test: int = 1000,
                heldout_combinations: Sequence[Sequence[str]] = DEFAULT_HELDOUT,
                max_objects: int = 2, paired_looks_fraction: float = 1.0,
                ) -> dict[str, list[Scene]]:
  """Disjoint sets of distinct scenes, deterministic given `seed`.

  The world has 82,496 scenes (576 with one object, 81,920 with two); the default held-out
  combinations leave 63,224 for training and test, the other 19,272 for 'heldout_test'.
  `max_objects=1` keeps the 576 one-object scenes only (the laptop level).

  Returns 'paired' (round(paired_fraction * num_train) scenes), 'unpaired_image' and
  'unpaired_text' (the other training scenes, halved, so unpaired images and texts never show
  the same scene), 'test' (num_test scenes from the training distribution) and 'heldout_test'
  (up to num_test scenes with an object matching a held-out combination of attribute values,
  e.g. ('red', 'triangle'); no other split has such an object). With paired_looks_fraction < 1
  the paired scenes are the first training scenes whose every object has a look of
  `paired_looks(paired_looks_fraction)`, and 'novel_test' holds the test scenes with a look no
  pair shows.
  """
  _check_arguments(paired_fraction, num_train, num_test, heldout_combinations, max_objects)
  looks = paired_looks(paired_looks_fraction)
  held_objects = {o for s in shapes.all_scenes()[:shapes.NUM_ONE_OBJECT_SCENES]
                  for o in s.objects if contains_combination(s, heldout_combinations)}
  heldout, pool = [], []
  for scene in shapes.all_scenes():
    if len(scene.objects) <= max_objects:
      (heldout if any(o in held_objects for o in scene.objects) else pool).append(scene)
  if num_train + num_test > len(pool):
    raise ValueError(f'make_splits: num_train + num_test = {num_train + num_test} exceeds the '
                     f'{len(pool)} scenes without held-out combinations; lower them or hold out '
                     f'fewer combinations.')
  rng = np.random.default_rng(seed)
  chosen = _weighted_sample(pool, num_train + num_test, rng)
  test, train = chosen[:num_test], chosen[num_test:]
  num_paired = round(paired_fraction * num_train)
  shows_paired_looks = [all((o.color, o.shape) in looks for o in s.objects) for s in train]
  if sum(shows_paired_looks) < num_paired:
    raise ValueError(f'make_splits: {num_paired} pairs asked for, but only '
                     f'{sum(shows_paired_looks)} training scenes show paired looks only; lower '
                     'paired_fraction or raise paired_looks_fraction.')
  paired_indices = set(np.flatnonzero(shows_paired_looks)[:num_paired].tolist())
  paired = [s for i, s in enumerate(train) if i in paired_indices]
  unpaired = [s for i, s in enumerate(train) if i not in paired_indices]
  half = (len(unpaired) + 1) // 2
  splits = {
      'paired': paired,
      'unpaired_image': unpaired[:half],
      'unpaired_text': unpaired[half:],
      'test': test,
      'heldout_test': _weighted_sample(heldout, min(num_test, len(heldout)), rng),
  }
  if paired_looks_fraction < 1.0:
    splits['novel_test'] = [s for s in test
                            if any((o.color, o.shape) not in looks for o in s.objects)]
  return splits

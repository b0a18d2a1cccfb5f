"""The laptop level of the shapes world: cell-placed 24x24 scenes, their splits and configs."""
import collections
import textwrap

import numpy as np
import pytest

from configs import prepare_shapes
from configs import shapes as shapes_config
from configs import vqgan_shapes
from itit.data import shapes
from itit.data import shapes_parse
from itit.data import shapes_splits
from itit.data.shapes import Obj, Scene

ONE_OBJECT = shapes.all_scenes()[:shapes.NUM_ONE_OBJECT_SCENES]


def test_one_object_scenes_come_first_and_number_576():
  assert len(ONE_OBJECT) == 576 == shapes.NUM_ONE_OBJECT_SCENES
  assert all(len(s.objects) == 1 for s in ONE_OBJECT)
  assert len(shapes.all_scenes()[shapes.NUM_ONE_OBJECT_SCENES].objects) == 2


@pytest.mark.parametrize('image_size', shapes.CELL_SIZES)
def test_cell_placed_scenes_parse_back_exactly(image_size):
  images = np.stack([shapes.render(s, image_size) for s in ONE_OBJECT])
  assert images.shape == (576, image_size, image_size, 3)
  assert shapes_parse.parse_images(images) == list(ONE_OBJECT)


def test_cell_placement_puts_each_object_inside_its_cell_without_jitter():
  cell = 8
  for scene in ONE_OBJECT:
    obj = scene.objects[0]
    image = shapes.render(scene, 24, np.random.default_rng(1))
    np.testing.assert_array_equal(image, shapes.render(scene, 24, np.random.default_rng(2)))
    ys, xs = np.nonzero((image != shapes.BACKGROUND).any(-1))
    row, col = divmod(shapes.REGIONS.index(obj.region), 3)
    assert ys.min() >= row * cell and ys.max() < (row + 1) * cell
    assert xs.min() >= col * cell and xs.max() < (col + 1) * cell
    n = shapes.size_pixels(obj.size, 24)
    assert (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) == (n, n)
  assert (shapes.size_pixels('small', 24), shapes.size_pixels('large', 24)) == (5, 7)


def test_24px_scenes_have_one_distinct_patch_per_look_and_size():
  """A VQGAN with 8x8-pixel patches sees 65 distinct patches: the background and one per
  (colour, shape, size), wherever the object is."""
  images = np.stack([shapes.render(s, 24) for s in ONE_OBJECT])
  patches = images.reshape(-1, 3, 8, 3, 8, 3).transpose(0, 1, 3, 2, 4, 5).reshape(-1, 192)
  by_content = collections.defaultdict(set)
  for scene, image_patches in zip(ONE_OBJECT, patches.reshape(576, 9, 192)):
    obj = scene.objects[0]
    for k, patch in enumerate(image_patches):
      inside = k == shapes.REGIONS.index(obj.region)
      by_content[patch.tobytes()].add((obj.color, obj.shape, obj.size) if inside else 'background')
  assert len(by_content) == 65
  assert all(len(owners) == 1 for owners in by_content.values())


def test_below_reference_sizes_refuse_two_objects_and_odd_sizes():
  two = Scene((Obj('red', 'square', 'small', 'left'), Obj('blue', 'circle', 'small', 'right')))
  assert shapes.render(two, 32).shape == (32, 32, 3)
  with pytest.raises(ValueError, match='one object'):
    shapes.render(two, 24)
  for size in (16, 20, 25):
    with pytest.raises(ValueError, match='not supported'):
      shapes.render(ONE_OBJECT[0], size)


# Splits.


def laptop_splits(**kwargs):
  kwargs = dict(dict(num_train=480, num_test=96, max_objects=1, heldout_combinations=()),
                **kwargs)
  return shapes_splits.make_splits(0, **kwargs)


def test_one_object_splits_use_every_scene_once():
  splits = laptop_splits(paired_fraction=0.1)
  assert {k: len(v) for k, v in splits.items()} == {
      'paired': 48, 'unpaired_image': 216, 'unpaired_text': 216, 'test': 96, 'heldout_test': 0}
  everything = [s for split in splits.values() for s in split]
  assert len(everything) == 576 and set(everything) == set(ONE_OBJECT)


def test_paired_looks_are_balanced_over_colours_and_shapes():
  looks = shapes_splits.paired_looks(0.5)
  assert len(looks) == 16
  assert collections.Counter(c for c, _ in looks) == {c: 2 for c in shapes.COLORS}
  assert collections.Counter(s for _, s in looks) == {s: 4 for s in shapes.SHAPES}
  assert shapes_splits.paired_looks(0.25) < looks < shapes_splits.paired_looks(0.75)
  assert len(shapes_splits.paired_looks(1.0)) == 32
  with pytest.raises(ValueError, match='paired_looks'):
    shapes_splits.paired_looks(0.3)


def test_compositional_splits_keep_half_the_looks_out_of_the_pairs():
  splits = laptop_splits(paired_fraction=0.2, paired_looks_fraction=0.5)
  looks = shapes_splits.paired_looks(0.5)
  look = lambda s: (s.objects[0].color, s.objects[0].shape)
  assert len(splits['paired']) == 96
  assert all(look(s) in looks for s in splits['paired'])
  unpaired = splits['unpaired_image'] + splits['unpaired_text']
  novel_looks = {look(s) for s in ONE_OBJECT} - looks
  assert len(novel_looks) == 16
  assert novel_looks <= {look(s) for s in splits['unpaired_image']}
  assert novel_looks <= {look(s) for s in splits['unpaired_text']}
  assert set(splits["paired"] + unpaired + splits["test"]) == set(ONE_OBJECT)
  novel = splits['novel_test']
  assert novel == [s for s in splits['test'] if look(s) not in looks]
  assert 30 <= len(novel) <= 66
  # The test scenes are those of the all-looks split of the same seed: only the pairs move.
  assert splits['test'] == laptop_splits(paired_fraction=0.2)['test']
  assert 'novel_test' not in laptop_splits(paired_fraction=0.2)


def test_default_splits_are_unchanged_by_the_new_arguments():
  before = shapes_splits.make_splits(4, num_train=300, num_test=40)
  assert shapes_splits.make_splits(4, num_train=300, num_test=40, max_objects=2,
                                   paired_looks_fraction=1.0) == before


@pytest.mark.parametrize('kwargs, message', [
    (dict(max_objects=3), 'max_objects'),
    (dict(paired_looks_fraction=0.4), 'paired_looks'),
    (dict(paired_fraction=0.9, paired_looks_fraction=0.5), 'paired looks only'),
])
def test_laptop_split_arguments_are_checked(kwargs, message):
  with pytest.raises(ValueError, match=message):
    laptop_splits(**kwargs)


# Configs.


def test_prepare_presets():
  config = prepare_shapes.get_config('laptop,0.1,compositional')
  assert config.image_size == 24 and config.max_text_len == 16
  assert config.shapes.paired_fraction == 0.1 and config.shapes.paired_looks == 0.5
  assert (config.shapes.num_train, config.shapes.num_test, config.shapes.max_objects) == (
      480, 96, 1)
  assert sorted(config.streams) == ['novel_test', 'paired', 'test', 'unpaired_image',
                                    'unpaired_text']
  assert sorted(prepare_shapes.get_config('1.0,laptop').streams) == ['paired', 'test']
  assert prepare_shapes.get_config(None).shapes.paired_fraction == 0.02
  for bad, message in (('laptop,bogus', 'unknown preset'), ('0.1,0.2', 'not a paired fraction'),
                       ('1.0,compositional', 'cannot pair every scene'),
                       ('1.5', 'not a paired fraction')):
    with pytest.raises(ValueError, match=message):
      prepare_shapes.get_config(bad)


def test_laptop_model_and_tokenizer_presets_agree():
  model = shapes_config.get_config('laptop').model
  vq = vqgan_shapes.get_config('laptop')
  prepared = prepare_shapes.get_config('laptop')
  grid = vq.model.image_size // 2**(len(vq.model.channel_multipliers) - 1)
  assert grid == model.image_grid == 3
  assert vq.model.image_size == prepared.image_size == 24
  assert model.max_text_len == prepared.max_text_len
  assert vq.model.codebook_size == model.image_vocab_size
  assert vq.data.max_objects == 1


# Sample sheets.


def test_captioned_grid_fits_its_content_and_never_cuts_a_caption():
  from itit.evaluation import visualize  # pylint: disable=g-import-not-at-top
  images = np.stack([shapes.render(s, 24) for s in ONE_OBJECT[:3]])
  long_caption = 'in the bottom right corner there is a large purple triangle ' * 3
  grid = visualize.captioned_grid(images, ['a red circle', long_caption, 'x'], cell=64)
  assert grid.shape[1] == 3 * (64 + 4)  # three columns, not eight
  short = visualize.captioned_grid(images, ['a', 'b', 'c'], cell=64)
  lines = len(textwrap.wrap(long_caption, max(8, 64 // 6)))
  assert grid.shape[0] - short.shape[0] == (lines - 1) * 11  # every line of the long caption
  # The caption rows hold dark text pixels down to the last line.
  text_rows = np.flatnonzero((grid[64 + 4:, 68:136] < 128).all(-1).any(-1))
  assert text_rows.max() > (lines - 1) * 11
  unbreakable = visualize.captioned_grid(images[:1], ['a' * 60], cell=64)
  assert unbreakable.shape[1] > 64 + 4  # the column widens instead of splitting the word
  assert visualize.captioned_grid(images[:1], [''], cell=64).shape == (64 + 8, 68, 3)

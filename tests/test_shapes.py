"""Tests of the shapes world: generator, renderer, caption and image parsers, metrics, splits."""
import io
import itertools
import pickle

import numpy as np
import pytest
from PIL import Image, ImageFilter
from scipy import ndimage

from itit.data import shapes
from itit.data import shapes_splits
from itit.data.shapes import Obj, Scene
from itit.data import shapes_parse
from itit.evaluation.scenes import MISSING, attribute_confusion, match_objects, scene_metrics


def _scenes(n, seed):
  rng = np.random.default_rng(seed)
  return [shapes.sample_scene(rng) for _ in range(n)]


def _renders(scenes, image_size, seed):
  rng = np.random.default_rng(seed)
  return np.stack([shapes.render(s, image_size, rng) for s in scenes])


def _blur_jpeg(image, radius, quality=75):
  blurred = Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius))
  buffer = io.BytesIO()
  blurred.save(buffer, format='JPEG', quality=quality)
  return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert('RGB'))


@pytest.fixture(scope='module')
def scenes_2000():
  return _scenes(2000, seed=1)


@pytest.fixture(scope='module')
def renders_2000(scenes_2000):
  return _renders(scenes_2000, 32, seed=2)


# The world.


def test_attributes_are_rich_enough_and_the_palette_separated():
  assert len(shapes.COLORS) >= 6 and len(shapes.SHAPES) >= 4 and len(shapes.REGIONS) >= 5
  assert shapes.SIZES == ('small', 'large')
  palette = np.array([shapes.BACKGROUND, *shapes.COLORS.values()], float)
  distances = np.linalg.norm(palette[:, None] - palette[None], axis=-1)
  assert distances[~np.eye(len(palette), dtype=bool)].min() > 80


def test_world_size_and_validity():
  scenes = shapes.all_scenes()
  singles = len(shapes.COLORS) * len(shapes.SHAPES) * len(shapes.SIZES) * len(shapes.REGIONS)
  assert len(scenes) == singles + 80 * (len(shapes.COLORS) * len(shapes.SHAPES))**2 == 82496
  assert len(set(scenes)) == len(scenes)
  assert all(shapes.is_valid(s) for s in scenes[::50])


def test_scene_is_canonical_and_has_a_relation():
  a, b = Obj('red', 'circle', 'small', 'left'), Obj('blue', 'square', 'large', 'right')
  assert Scene((a, b)) == Scene((b, a)) and hash(Scene((a, b))) == hash(Scene([b, a]))
  assert Scene((a, b)).objects == (b, a)
  assert pickle.loads(pickle.dumps(Scene((a, b)))) == Scene((a, b))  # for data workers
  assert Scene((a, b)).relation == 'right of'  # blue (objects[0]) is right of red
  assert Scene((a,)).relation is None
  assert shapes.relation_of(Obj('red', 'circle', 'small', 'top left'),
                            Obj('red', 'circle', 'small', 'bottom')) == 'above'
  diagonal = Scene((Obj('red', 'circle', 'small', 'top left'),
                    Obj('red', 'circle', 'small', 'center')))
  assert diagonal.relation is None and not shapes.is_valid(diagonal)
  assert not shapes.is_valid(Scene((Obj('red', 'circle', 'large', 'left'),
                                    Obj('red', 'circle', 'large', 'center'))))  # cannot fit
  with pytest.raises(ValueError, match='Obj.color'):
    Obj('magenta', 'circle', 'small', 'left')


def test_sample_scene_gives_valid_scenes_of_both_counts():
  rng = np.random.default_rng(0)
  scenes = [shapes.sample_scene(rng) for _ in range(400)]
  assert all(shapes.is_valid(s) for s in scenes)
  assert {len(s.objects) for s in scenes} == {1, 2}
  assert all(len(shapes.sample_scene(rng, max_objects=1).objects) == 1 for _ in range(20))
  with pytest.raises(ValueError, match='max_objects'):
    shapes.sample_scene(rng, max_objects=3)


# Rendering.


def test_render_is_deterministic_and_uses_only_the_palette():
  scene = _scenes(1, seed=3)[0]
  image = shapes.render(scene)
  assert image.dtype == np.uint8 and image.shape == (32, 32, 3)
  np.testing.assert_array_equal(image, shapes.render(scene))
  np.testing.assert_array_equal(shapes.render(scene, 32, np.random.default_rng(5)),
                                shapes.render(scene, 32, np.random.default_rng(5)))
  jittered = {shapes.render(scene, 32, np.random.default_rng(i)).tobytes() for i in range(20)}
  assert len(jittered) > 1  # the same scene has several layouts
  colors = {tuple(c) for c in image.reshape(-1, 3)}
  assert colors <= {shapes.BACKGROUND, *shapes.COLORS.values()}
  with pytest.raises(ValueError, match='not a scene'):
    shapes.render(Scene(()))


def test_objects_never_touch_and_keep_their_relation(scenes_2000, renders_2000):
  for scene, image in itertools.islice(
      ((s, i) for s, i in zip(scenes_2000, renders_2000) if len(s.objects) == 2), 300):
    foreground = (image != shapes.BACKGROUND).any(-1)
    # Dilating by 1 px leaves them apart under 8-connectivity: a gap of >= 3 px.
    grown = ndimage.binary_dilation(foreground, np.ones((3, 3)))
    labels, count = ndimage.label(grown, np.ones((3, 3)))
    assert count == 2
    axis = 1 if scene.relation in ('left of', 'right of') else 0
    a_box, b_box = sorted(ndimage.find_objects(labels), key=lambda b: b[axis].start)
    assert a_box[axis].stop <= b_box[axis].start  # apart on the relation's axis


@pytest.mark.parametrize('image_size', [32, 33, 35, 37, 40, 48, 50, 64, 96, 128, 256])
def test_every_layout_fits_at_many_image_sizes(image_size):
  for (ra, sa), (rb, sb) in shapes._pair_layouts():  # pylint: disable=protected-access
    scene = Scene((Obj('red', 'square', sa, ra), Obj('blue', 'cross', sb, rb)))
    assert shapes.render(scene, image_size).shape == (image_size, image_size, 3)


# Image parsing.


def test_parse_image_is_exact_on_2000_renders(scenes_2000, renders_2000):
  parsed = shapes_parse.parse_images(renders_2000)
  assert scene_metrics(parsed, scenes_2000)['exact'] == 1.0
  assert all(shapes_parse.parse_image(i) == s for i, s in zip(renders_2000[:50], scenes_2000))


@pytest.mark.parametrize('radius', [0.5, 0.7])
def test_parse_image_survives_blur_and_jpeg(scenes_2000, renders_2000, radius):
  degraded = np.stack([_blur_jpeg(image, radius) for image in renders_2000])
  metrics = scene_metrics(shapes_parse.parse_images(degraded), scenes_2000)
  assert metrics['exact'] >= 0.99, metrics


def test_parse_image_at_64x64_clean_and_degraded():
  scenes = _scenes(500, seed=4)
  images = _renders(scenes, 64, seed=5)
  assert scene_metrics(shapes_parse.parse_images(images), scenes)['exact'] == 1.0
  degraded = np.stack([_blur_jpeg(image, 0.7) for image in images])
  assert scene_metrics(shapes_parse.parse_images(degraded), scenes)['exact'] >= 0.99


@pytest.mark.parametrize('distortion', ['dim', 'noise', 'down_up'])
def test_parse_image_degrades_gracefully(distortion):
  """Generated images are dimmer, noisier or blurrier than renders; the parser still reads them."""
  scenes = _scenes(300, seed=10)
  images = _renders(scenes, 32, seed=11)
  if distortion == 'dim':
    images = (images * 0.7).astype(np.uint8)
  elif distortion == 'noise':
    noise = np.random.default_rng(12).normal(0, 20, images.shape)
    images = np.clip(images + noise, 0, 255).astype(np.uint8)
  else:
    images = np.stack([np.asarray(Image.fromarray(i).resize((16, 16), Image.BILINEAR).resize(
        (32, 32), Image.BILINEAR)) for i in images])
  assert scene_metrics(shapes_parse.parse_images(images), scenes)['exact'] >= 0.95


def test_parse_image_reads_floats_and_odd_sizes():
  scene = _scenes(1, seed=6)[0]
  image = shapes.render(scene, 48)
  assert shapes_parse.parse_image(image.astype(np.float32) / 255) == scene
  assert shapes_parse.parse_image(image.astype(np.float64)) == scene  # floats above 1.5: 0..255
  rgba = np.concatenate([image, np.full_like(image[..., :1], 255)], -1)
  assert shapes_parse.parse_image(rgba) == scene


@pytest.mark.parametrize('pixels', [
    np.zeros((32, 32, 3), np.uint8), np.full((32, 32, 3), np.nan), np.full((16, 16, 3), np.inf),
    np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8),
    np.random.default_rng(1).random((32, 32)), np.random.default_rng(2).random((32, 32, 2)),
    -np.ones((32, 32, 3)), np.zeros((1, 1, 3)), np.zeros((0, 0, 3)), np.zeros(5), np.array(3),
    np.zeros((8, 8, 3), np.complex64), 'not an image', None, [[1, 2], [3]],
])
def test_parse_image_never_raises(pixels):
  scene = shapes_parse.parse_image(pixels)
  assert isinstance(scene, Scene) and len(scene.objects) <= 4


def test_parse_image_empty_image_has_no_objects():
  assert shapes_parse.parse_image(np.full((32, 32, 3), shapes.BACKGROUND, np.uint8)) == Scene(())
  assert shapes_parse.parse_images(np.zeros((3, 0, 4, 3))) == [Scene(())] * 3


# Captions.


def _caption_scenes():
  """Every single-object scene, and every two-object layout with three random looks."""
  rng = np.random.default_rng(7)
  looks = list(itertools.product(shapes.COLORS, shapes.SHAPES))
  pairs = []
  for (ra, sa), (rb, sb) in shapes._pair_layouts():  # pylint: disable=protected-access
    for _ in range(3):
      (ca, ha), (cb, hb) = (looks[i] for i in rng.integers(len(looks), size=2))
      pairs.append(Scene((Obj(ca, ha, sa, ra), Obj(cb, hb, sb, rb))))
  return list(shapes.all_scenes()[:576]) + pairs


def test_parse_caption_inverts_every_template_and_paraphrase():
  seen = {}
  for scene in _caption_scenes():
    captions = shapes.all_captions(scene)
    assert len(captions) >= 20 and len(set(captions)) == len(captions)
    for text in captions:
      assert shapes_parse.parse_caption(text) == scene, text
      assert len(text.split()) <= 24, text
      assert seen.setdefault(text, scene) == scene  # no caption describes two scenes


def test_two_object_captions_name_the_relation_both_ways():
  scene = Scene((Obj('blue', 'square', 'small', 'bottom right'),
                 Obj('green', 'triangle', 'large', 'top right')))
  captions = shapes.all_captions(scene)
  assert ('there is a small blue square at the bottom right below a large green triangle at the '
          'top right') in captions
  assert ('a large green triangle in the top right corner and a little blue square at the bottom '
          'right under it') in captions
  assert 'a large green triangle at the top right above a small blue square at the bottom right' \
      in captions


def test_parse_caption_forgives_case_and_period_only():
  scene = Scene((Obj('red', 'circle', 'large', 'top left'),))
  assert shapes_parse.parse_caption('  A Large RED circle at the   top left. ') == scene
  assert shapes_parse.parse_caption('a large red circle at the top left!') is None


@pytest.mark.parametrize('text', [
    '', 'hello world', 'a red circle at the top left', 'a large red circle',
    'a large red hexagon at the top left', 'a large red circle at the top left and more',
    'a large red circle at the top left a large red circle at the top left',
    # The relation contradicts the regions.
    'a small red circle on the left to the right of a large blue square on the right',
    # Two large objects side by side in adjacent cells cannot be drawn apart.
    'a large red circle on the left to the left of a large blue square in the center',
    # A diagonal pair has no unambiguous relation.
    'a small red circle at the top left above a small blue square in the center',
    'there is there is a large red circle at the top left', 42, None,
])
def test_parse_caption_rejects_what_is_not_a_caption(text):
  assert shapes_parse.parse_caption(text) is None


def test_caption_is_seeded_and_all_captions_rejects_invalid_scenes():
  scene = _scenes(1, seed=8)[0]
  picks = [shapes.caption(scene, np.random.default_rng(i)) for i in range(30)]
  assert picks == [shapes.caption(scene, np.random.default_rng(i)) for i in range(30)]
  assert set(picks) <= set(shapes.all_captions(scene)) and len(set(picks)) > 1
  with pytest.raises(ValueError, match='not a scene'):
    shapes.all_captions(Scene(()))


def test_caption_corpus_covers_the_vocabulary():
  corpus = shapes.caption_corpus()
  assert corpus == shapes.caption_corpus()
  assert {w for line in corpus for w in line.split()} == set(shapes.VOCABULARY)
  assert all(shapes_parse.parse_caption(line) is not None for line in corpus[:500])


def test_examples_are_deterministic_and_parse_back():
  scenes = _scenes(50, seed=9)
  first = list(shapes.examples(scenes, seed=3))
  again = list(shapes.examples(scenes, seed=3))
  other = list(shapes.examples(scenes, seed=4))
  assert all(np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(first, again))
  assert any(a[1] != b[1] or not np.array_equal(a[0], b[0]) for a, b in zip(first, other))
  for scene, (image, text) in zip(scenes, first):
    assert shapes_parse.parse_caption(text) == scene and shapes_parse.parse_image(image) == scene
  image, text = shapes.example(scenes[7], seed=3, index=7)
  assert np.array_equal(image, first[7][0]) and text == first[7][1]


# Metrics.


def _hand_made_example():
  """(predicted, targets): 6 scenes, 8 target objects, each kind of miss once."""
  red = Obj('red', 'circle', 'small', 'top left')
  blue, green = Obj('blue', 'square', 'large', 'center'), Obj('green', 'triangle', 'small', 'right')
  white = Obj('white', 'cross', 'large', 'bottom')
  targets = [Scene((red,)), Scene((blue, green)), Scene((white,)), Scene((red,)),
             Scene((blue, green)), Scene((red,))]
  predicted = [
      Scene((red,)),  # exact
      Scene((Obj('green', 'cross', 'small', 'right'), blue)),  # one shape wrong
      Scene(()),  # nothing found
      None,  # unparseable
      Scene((green,)),  # one of two objects found
      Scene((red, white)),  # an extra object
  ]
  return predicted, targets


def test_scene_metrics_on_a_hand_made_example():
  predicted, targets = _hand_made_example()
  metrics = scene_metrics(predicted, targets)
  # 8 target objects; right per attribute: red, blue + green (shape wrong), -, -, green, red.
  assert metrics['color'] == pytest.approx(5 / 8)
  assert metrics['shape'] == pytest.approx(4 / 8)
  assert metrics['size'] == metrics['region'] == pytest.approx(5 / 8)
  # Per scene: the relation holds in scenes 1 and 2; the count in 1 and 2; exact only 1.
  assert metrics['relation'] == pytest.approx(2 / 6)
  assert metrics['count'] == pytest.approx(2 / 6)
  assert metrics['exact'] == pytest.approx(1 / 6)
  with pytest.raises(ValueError, match='predictions'):
    scene_metrics([None], targets)


def test_attribute_confusion_on_the_hand_made_example():
  predicted, targets = _hand_made_example()
  counts = attribute_confusion(predicted, targets, 'shape', by='size')
  nonzero = {size: {(t, p): n for t, row in table.items() for p, n in row.items() if n}
             for size, table in counts.items()}
  # Small: the red circle right twice and unparsed once; the green triangle drawn as a cross
  # once and right once. Large: the blue square right once and missed once; the cross missed.
  assert nonzero == {
      'small': {('circle', 'circle'): 2, ('circle', MISSING): 1, ('triangle', 'cross'): 1,
                ('triangle', 'triangle'): 1},
      'large': {('square', 'square'): 1, ('square', MISSING): 1, ('cross', MISSING): 1}}
  assert list(counts) == list(shapes.SIZES)
  assert list(counts['small']) == list(shapes.SHAPES)
  assert list(counts['small']['cross']) == list(shapes.SHAPES) + [MISSING]
  # Without `by`: the diagonal is scene_metrics' accuracy, and every target object is counted.
  for attribute in shapes.ATTRIBUTES:
    table = attribute_confusion(predicted, targets, attribute)
    assert sum(sum(row.values()) for row in table.values()) == 8
    right = sum(row[value] for value, row in table.items())
    assert right / 8 == pytest.approx(scene_metrics(predicted, targets)[attribute])
  with pytest.raises(ValueError, match='two different'):
    attribute_confusion(predicted, targets, 'shape', by='shape')
  with pytest.raises(ValueError, match='two different'):
    attribute_confusion(predicted, targets, 'relation')
  with pytest.raises(ValueError, match='predictions'):
    attribute_confusion(predicted[:2], targets, 'shape')


def test_match_objects_pairs_by_agreement():
  a, b = Obj('red', 'circle', 'small', 'left'), Obj('blue', 'square', 'large', 'right')
  guess = Scene((Obj('blue', 'square', 'large', 'left'), Obj('red', 'circle', 'small', 'right')))
  # Each predicted object agrees with one target on 3 attributes, the other on 1.
  matched = match_objects(guess, Scene((a, b)))
  assert matched == (Obj('blue', 'square', 'large', 'left'), Obj('red', 'circle', 'small', 'right'))
  assert match_objects(Scene(()), Scene((a,))) == (None,)


# Splits.


@pytest.fixture(scope='module')
def default_splits():
  return shapes_splits.make_splits(0)


def test_splits_are_disjoint_and_sized(default_splits):
  sizes = {k: len(v) for k, v in default_splits.items()}
  assert sizes == {'paired': 400, 'unpaired_image': 9800, 'unpaired_text': 9800, 'test': 1000,
                   'heldout_test': 1000}
  everything = [s for split in default_splits.values() for s in split]
  assert len(set(everything)) == len(everything)  # scene identities disjoint across all splits
  assert all(shapes.is_valid(s) for s in everything[::20])


def test_documented_pool_sizes():
  held = sum(shapes_splits.contains_combination(s, shapes_splits.DEFAULT_HELDOUT) for s in shapes.all_scenes())
  assert (len(shapes.all_scenes()) - held, held) == (63224, 19272)


def test_heldout_combinations_never_appear_outside_heldout_test(default_splits):
  held = shapes_splits.DEFAULT_HELDOUT
  for name in ('paired', 'unpaired_image', 'unpaired_text', 'test'):
    assert not any(shapes_splits.contains_combination(s, held) for s in default_splits[name]), name
  assert all(shapes_splits.contains_combination(s, held) for s in default_splits['heldout_test'])
  looks = {(o.color, o.shape) for s in default_splits['paired'] for o in s.objects}
  assert not looks & set(held)
  assert {c for c, _ in looks} == set(shapes.COLORS)  # every colour is still seen in training


def test_splits_are_deterministic_from_the_seed(default_splits):
  assert shapes_splits.make_splits(0) == default_splits
  assert shapes_splits.make_splits(1)['paired'] != default_splits['paired']


@pytest.mark.parametrize('fraction', [0.01, 0.02, 0.1, 1.0])
def test_paired_fraction(fraction):
  splits = shapes_splits.make_splits(3, paired_fraction=fraction, num_train=2000, num_test=100)
  assert len(splits['paired']) == round(fraction * 2000)
  rest = 2000 - len(splits['paired'])
  assert len(splits['unpaired_image']) + len(splits['unpaired_text']) == rest
  assert abs(len(splits['unpaired_image']) - len(splits['unpaired_text'])) <= 1
  if fraction == 1.0:
    assert not splits['unpaired_image'] and not splits['unpaired_text']


def test_custom_and_empty_heldout_combinations():
  splits = shapes_splits.make_splits(0, num_train=500, num_test=50,
                              heldout_combinations=(('large', 'top left'),))
  assert all(any(o.size == 'large' and o.region == 'top left' for o in s.objects)
             for s in splits['heldout_test'])
  assert not any(o.size == 'large' and o.region == 'top left'
                 for s in splits['paired'] + splits['test'] for o in s.objects)
  assert shapes_splits.make_splits(0, num_train=10, num_test=5, heldout_combinations=())[
      'heldout_test'] == []


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_train=100_000), 'exceeds'),
    (dict(paired_fraction=1.5), 'paired_fraction'),
    (dict(heldout_combinations=(('red', 'hexagon'),)), 'held-out combination'),
    (dict(heldout_combinations=('red',)), 'held-out combination'),
])
def test_make_splits_rejects_bad_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    shapes_splits.make_splits(0, **kwargs)

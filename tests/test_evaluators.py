"""The evaluators' parts that need no model: FID on few images, FID-30K pairs, settings, output."""
import functools
import json
import os
import types

import jax
import ml_collections
import numpy as np
from PIL import Image
import pytest
import scipy.linalg

from itit.data import shards
from itit.data.sources import Record
from itit.data.text_tokenizer import TextTokenizer
from itit import evaluation
from itit.evaluation import coco_captions
from itit.evaluation import coco_fid
from itit.evaluation import common
from itit.evaluation import folder
from itit.evaluation.metrics import fid
from itit.evaluation import report


def _reference_fid(features, mu_ref, sigma_ref):
  """Tr sqrtm(S_ref S) through the symmetric form sqrt(S_ref) S sqrt(S_ref): exact and stable."""
  mu, sigma = fid.statistics(features)
  root = scipy.linalg.sqrtm(sigma_ref).real
  eigenvalues = np.clip(np.linalg.eigvalsh(root @ sigma @ root), 0, None)
  diff = mu - mu_ref
  return diff @ diff + np.trace(sigma) + np.trace(sigma_ref) - 2 * np.sqrt(eigenvalues).sum()


@pytest.mark.parametrize('num_images', [2, 8, 15])
def test_low_rank_frechet_distance_is_exact(num_images):
  rng = np.random.default_rng(num_images)
  reference = rng.normal(size=(200, 16)) @ rng.normal(size=(16, 16))
  mu_ref, sigma_ref = fid.statistics(reference)
  features = rng.normal(1.0, 2.0, size=(num_images, 16))
  ours = common.frechet_distance_to_features(features, mu_ref, sigma_ref)
  # The reference sums square roots of rounding-noise eigenvalues: about 1e-8 relative.
  np.testing.assert_allclose(ours, _reference_fid(features, mu_ref, sigma_ref), rtol=1e-7)


def test_many_images_take_pytorch_fid_path():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(40, 8))
  mu_ref, sigma_ref = fid.statistics(rng.normal(size=(50, 8)))
  assert common.frechet_distance_to_features(features, mu_ref, sigma_ref) == (
      fid.frechet_distance(*fid.statistics(features), mu_ref, sigma_ref))
  # Same value as the identity, here where both apply.
  np.testing.assert_allclose(_reference_fid(features, mu_ref, sigma_ref),
                             fid.frechet_distance(*fid.statistics(features), mu_ref, sigma_ref),
                             rtol=1e-8)


def test_batched_pads_the_last_batch_and_passes_indices():
  calls = []

  def fn(batch, index):
    calls.append((batch.shape, index))
    return batch * 10

  out = common.batched(fn, np.arange(7)[:, None], 3)
  np.testing.assert_array_equal(out[:, 0], np.arange(7) * 10)
  assert calls == [((3, 1), 0), ((3, 1), 1), ((3, 1), 2)]


def test_keys_for_are_fold_ins():
  key = jax.random.PRNGKey(5)
  keys = common.keys_for(key, range(3, 6))
  for row, index in zip(keys, range(3, 6)):
    np.testing.assert_array_equal(row, jax.random.fold_in(key, index))


def _coco_files(root):
  """The same 5 images as COCO captions JSON (ids out of order) and as Karpathy JSON."""
  captions = {7: ['seven a', 'seven b'], 3: ['three a'], 11: ['eleven a', 'eleven b', 'eleven c'],
              5: ['five a', 'five b'], 9: ['nine a']}
  coco = {'images': [{'id': i, 'file_name': f'{i}.jpg'} for i in captions],
          'annotations': [{'image_id': i, 'caption': c} for i, cs in captions.items()
                          for c in cs]}
  karpathy = {'images': [
      {'cocoid': i, 'filepath': 'val2014', 'filename': f'{i}.jpg',
       'split': 'restval' if i == 3 else 'val', 'sentences': [{'raw': c} for c in cs]}
      for i, cs in captions.items()]}
  (root / 'coco.json').write_text(json.dumps(coco))
  (root / 'karpathy.json').write_text(json.dumps(karpathy))
  return captions


def test_fid_pairs_follow_the_protocol(tmp_path):
  captions = _coco_files(tmp_path)
  pairs = coco_fid.draw_pairs(str(tmp_path / 'coco.json'), 'IMG', num_pairs=3, seed=4)
  ids = sorted(captions)
  rng = np.random.default_rng(4)
  expected = []
  for index in rng.choice(5, 3, replace=False):
    image_id = ids[index]
    expected.append((captions[image_id][rng.integers(len(captions[image_id]))],
                     os.path.join('IMG', f'{image_id}.jpg')))
  assert pairs == expected
  # Karpathy's file (val + test + restval = val2014) gives the same pairs.
  karpathy = coco_fid.draw_pairs(str(tmp_path / 'karpathy.json'), 'ROOT', num_pairs=3, seed=4)
  assert [c for c, _ in karpathy] == [c for c, _ in pairs]
  assert karpathy[0][1].startswith(os.path.join('ROOT', 'val2014'))
  assert len(coco_fid.caption_index(str(tmp_path / 'karpathy.json'), 'R', split='val')) == 4
  with pytest.raises(ValueError, match='num_pairs=6 but .* has 5 captioned images'):
    coco_fid.draw_pairs(str(tmp_path / 'coco.json'), 'IMG', num_pairs=6)
  (tmp_path / 'bad.json').write_text('{')
  with pytest.raises(ValueError, match='bad.json.*cannot be read'):
    coco_fid.draw_pairs(str(tmp_path / 'bad.json'), 'IMG', num_pairs=1)


def test_shard_records_of_one_image_are_grouped(tmp_path):
  texts = ['a red thing', 'a red object', 'a blue thing', 'a green thing', 'green object']
  tokenizer = TextTokenizer.train(texts * 20, tmp_path / 'sp.model', vocab_size=30)
  images = [np.full((4, 4, 3), v, np.uint8) for v in (10, 10, 20, 30, 30)]
  records = [Record(str(i), image, text) for i, (image, text) in enumerate(zip(images, texts))]
  shards.write_shards(tmp_path / 'test', records,
                      image_tokenizer=lambda x: x.reshape(len(x), -1)[:, :4].astype(np.int32),
                      text_tokenizer=tokenizer, max_text_len=24,
                      identities={'image_tokenizer': {'kind': 'test'}}, config={})
  ids, tokens, references = coco_captions.from_shards(str(tmp_path / 'test'), tokenizer)
  assert ids == [0, 1, 2]
  np.testing.assert_array_equal(tokens[:, 0], [10, 20, 30])
  assert references == {0: texts[:2], 1: texts[2:3], 2: texts[3:]}
  assert coco_captions.from_shards(str(tmp_path / 'test'), tokenizer, num_images=2)[0] == [0, 1]


def test_settings_merge_in_order_and_check_types():
  run_block = {'shapes': True, 'num_examples': 64, 'coco': {'beam_size': 2}}
  config = evaluation.merged_config(run_block, {'coco': {'split': 'val'}, 'guidance_scale': 1})
  assert (config.num_examples, config.coco.beam_size, config.coco.split) == (64, 2, 'val')
  assert config.guidance_scale == 1.0 and config.coco_fid.num_pairs == 30000
  # The T2I sampler's distribution settings default to MaskGIT's plain sampling.
  assert (config.sample_temperature, config.top_k, config.train_matched_drop) == (1.0, 0, False)
  sampler = evaluation.merged_config(None, {'top_k': 3, 'train_matched_drop': True})
  assert (sampler.top_k, sampler.train_matched_drop) == (3, True)
  assert evaluation.training_names(config) == ['shapes']
  assert evaluation.training_names(evaluation.merged_config({'evaluators': 'cycle, shapes'})) == [
      'cycle', 'shapes']
  assert evaluation.training_names(evaluation.default_config()) == []
  with pytest.raises(ValueError, match=r'eval.coco.beam_size=.four.: expected a int'):
    evaluation.merged_config({'coco': {'beam_size': 'four'}})
  with pytest.raises(ValueError, match=r"unknown evaluator\(s\) \['fid'\]: choose from"):
    evaluation.parse_names('shapes,fid')


def test_results_are_merged_per_step_and_tabled(tmp_path):
  out = str(tmp_path / 'eval')
  report.write_results(out, 'RUN', 7, {'coco/CIDEr': 0.5, 'coco/num_images': 5000.0},
                         ['note a'], {'seed': 0})
  json_path, md_path = report.write_results(out, 'RUN', 7, {'coco_fid/fid': 12.25},
                                              ['note b'], {'seed': 0})
  with open(json_path) as f:
    written = json.load(f)
  assert written['metrics'] == {'coco/CIDEr': 0.5, 'coco/num_images': 5000.0,
                                'coco_fid/fid': 12.25}
  assert written['notes'] == ['note a', 'note b'] and written['step'] == 7
  table = open(md_path).read()
  assert '| coco | CIDEr | 0.5000 |' in table
  assert '| coco | num_images | 5000 |' in table
  assert '| coco_fid | fid | 12.2500 |' in table
  assert table.endswith('- note b\n')


PALETTE = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 40]], np.uint8)
COLOURS = ['red', 'green', 'blue', 'yellow']


def _folder_context(tmp_path, inception):
  """A captioned folder of 4 colours and a stand-in model that captions and draws them exactly."""
  images = tmp_path / 'test'
  (images / 'sub').mkdir(parents=True)
  lines = []
  for index, name in enumerate(COLOURS):
    relpath = f'sub/{name}.png' if index == 3 else f'{name}.png'
    Image.new('RGB', (20, 20), tuple(int(v) for v in PALETTE[index])).save(images / relpath)
    lines.append({'image': relpath, 'caption': f'a {name} square'})
  lines.append({'file': 'red.png', 'text': 'a square that is red'})
  (images / 'captions.jsonl').write_text(''.join(json.dumps(line) + '\n' for line in lines))
  captions = [f'a {name} square' for name in COLOURS]
  tokenizer = TextTokenizer.train(captions * 10, tmp_path / 'sp.model', vocab_size=30)
  caption_ids = tokenizer.encode(captions, 8)
  colour_of = lambda pixels: np.abs(pixels.reshape(len(pixels), -1, 3).mean(1)[:, None]
                                    - PALETTE[None]).sum(-1).argmin(-1)
  tokens_to_images = lambda tokens: PALETTE[np.asarray(tokens)[:, 0]][:, None, None].repeat(
      32, 1).repeat(32, 2)
  text_to_colour = lambda ids: np.array([COLOURS.index(t.split()[1]) for t in tokenizer.decode(
      np.asarray(ids))])
  eval_config = evaluation.merged_config(None, dict(
      batch_size=2, use_java=False,
      folder=dict(images=str(images), beam_size=1, metrics='CIDEr,BLEU-4')))
  extractor = None
  if inception:
    extractor = lambda x: np.concatenate([x.mean((1, 2)), x.std((1, 2))[:, :1]], 1)
  context = types.SimpleNamespace(
      eval_config=eval_config, config=ml_collections.ConfigDict(dict(model=dict(max_text_len=8))),
      vq_config=types.SimpleNamespace(image_size=32), text_tokenizer=tokenizer,
      tokenize_images=lambda x: np.repeat(colour_of(np.asarray(x, np.float32))[:, None], 4, 1),
      detokenize=tokens_to_images,
      captioner=lambda beam: lambda params, tokens: (caption_ids[np.asarray(tokens)[:, 0]], None),
      image_sampler=lambda: lambda params, ids, rng: np.repeat(text_to_colour(ids)[:, None], 4, 1),
      extractor=lambda: extractor)
  # The real context's batching, over the stand-in captioner and sampler.
  context.caption_ids = functools.partial(common.EvalContext.caption_ids, context)
  context.sampled_image_tokens = functools.partial(common.EvalContext.sampled_image_tokens,
                                                   context)
  return context


def test_folder_evaluator_scores_a_captioned_folder_in_both_directions(tmp_path):
  context = _folder_context(tmp_path, inception=True)
  evaluator = folder.FolderEval(context)
  assert evaluator.names == ['blue.png', 'green.png', 'red.png', 'sub/yellow.png']
  assert evaluator.references[2] == ['a red square', 'a square that is red']
  results = evaluator.run(None)
  assert results['folder/num_images'] == 4.0
  assert results['folder/i2t2i_token_accuracy'] == 1.0
  assert results['folder/CIDEr'] > 1.0 and results['folder/t2i2t_cider'] > 1.0
  assert 0.0 < results['folder/BLEU-4'] <= 1.0
  # The stand-in model draws the folder's own colours: FID against them is 0.
  assert abs(results['folder/fid']) < 1e-2 and abs(results['folder/i2t2i_fid']) < 1e-2
  assert evaluator.predictions['sub/yellow.png'] == 'a yellow square'
  assert set(evaluator.images) == {'folder_t2i', 'folder_i2t'}

  # Without eval.inception: CIDEr still, and the notes say FID was skipped.
  evaluator = folder.FolderEval(_folder_context(tmp_path / 'no_fid', inception=False))
  results = evaluator.run(None)
  assert 'folder/CIDEr' in results and not any('fid' in name for name in results)
  assert any(n.startswith('folder: FID skipped: eval.inception is empty') for n in evaluator.notes)
  assert 'folder' in evaluation.NAMES


def test_folder_evaluator_refuses_a_folder_it_cannot_score(tmp_path):
  with pytest.raises(ValueError, match='eval.folder.images=.* is not a directory'):
    folder.read_folder(str(tmp_path / 'missing'), size=32)
  Image.new('RGB', (8, 8)).save(tmp_path / 'a.png')
  with pytest.raises(ValueError, match='holds no captions.jsonl or captions.tsv'):
    folder.read_folder(str(tmp_path), size=32)
  (tmp_path / 'captions.jsonl').write_text(json.dumps({'path': 'a.png', 'caption': 'x'}) + '\n')
  with pytest.raises(ValueError, match=r'no usable captioned image \(skipped 2 inputs: '
                     r'bad_line 1 .*missing_caption 1'):
    folder.read_folder(str(tmp_path), size=32)

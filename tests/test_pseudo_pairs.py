"""tools.pseudo_pairs: the truth of unpaired data, the scores of pseudo pairs against it, and the
training code's synthesis wired in."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from configs import tiny
from itit import errors
from itit.data import shapes
from itit.data.text_tokenizer import TextTokenizer
from itit.models import itit
from tools import pseudo_pairs

NUM_TOKENS = 9
MAX_TEXT_LEN = 24  # the captions take 15-17 pieces of a 64-piece SentencePiece model


@pytest.fixture(scope='module')
def world(shapes_spiece):
  """Four one-object scenes drawn at 24 px, a blank image after them, and a stand-in image
  tokenizer: token row [i] * 9 decodes to image i."""
  tokenizer = TextTokenizer.load(shapes_spiece(64))
  scenes = [s for s in shapes.all_scenes() if len(s.objects) == 1][::37][:4]
  images = np.stack([shapes.render(s, image_size=24) for s in scenes]
                    + [np.zeros((24, 24, 3), np.uint8)])
  detokenize = lambda tokens: images[np.asarray(tokens)[:, 0]]
  return tokenizer, scenes, detokenize


def captions_of(tokenizer, scenes):
  return tokenizer.encode([shapes.all_captions(s)[0] for s in scenes], MAX_TEXT_LEN)


def truth_of(world, texts):
  tokenizer, scenes, detokenize = world
  image_tokens = np.repeat(np.arange(5)[:, None], NUM_TOKENS, axis=1)  # row 4: the blank image
  return pseudo_pairs.unpaired_truth(image_tokens, tokenizer.encode(texts, MAX_TEXT_LEN),
                                     tokenizer, detokenize)


def test_truth_leaves_out_blank_images_and_other_worlds_texts(world):
  tokenizer, scenes, _ = world
  texts = [shapes.all_captions(s)[0] for s in scenes[:3]] + ['a dog sleeps on the sofa']
  truth = truth_of(world, texts)
  assert truth.image_scenes == scenes and truth.unreadable_images == 1
  np.testing.assert_array_equal(truth.image_tokens[:, 0], [0, 1, 2, 3])
  assert truth.text_scenes == scenes[:3] and truth.unparseable_texts == 1
  assert truth.text_ids.shape == (3, MAX_TEXT_LEN)
  with pytest.raises(errors.UserError, match='none of the 2 unpaired texts reads as a shapes'):
    truth_of(world, ['a dog sleeps on the sofa', 'two cups of coffee'])


def test_scores_count_the_right_pseudo_pairs(world):
  tokenizer, scenes, _ = world
  truth = truth_of(world, [shapes.all_captions(s)[0] for s in scenes[:3]])
  # Captions: images 0-2 right, image 3 captioned as image 0 (another colour and shape).
  answers = captions_of(tokenizer, scenes[:3] + scenes[:1])
  caption_fn = lambda params, tokens: answers[np.asarray(tokens)[:, 0]]
  # Images: text 1 drawn right, texts 0 and 2 drawn blank (no object: wrong everywhere).
  keys = []

  def image_fn(params, text_ids, rng):
    keys.append(np.asarray(jax.random.key_data(rng)))
    drawn = [1 if np.array_equal(row, truth.text_ids[1]) else 4 for row in np.asarray(text_ids)]
    return np.repeat(np.array(drawn)[:, None], NUM_TOKENS, axis=1)

  scores, same_captioner, _ = pseudo_pairs.pseudo_pair_scores(
      None, None, None, truth, seed=0, batch_size=2, caption_fn=caption_fn, image_fn=image_fn)
  assert same_captioner is caption_fn
  wrong = sum(getattr(scenes[3].objects[0], k) != getattr(scenes[0].objects[0], k)
              for k in ('color', 'shape', 'size', 'region'))
  assert wrong >= 2  # the scenes differ in at least two attributes, so the test can tell
  for attribute in ('color', 'shape', 'size', 'region'):
    differs = getattr(scenes[3].objects[0], attribute) != getattr(scenes[0].objects[0], attribute)
    assert scores[f'pseudo_caption/{attribute}'] == (0.75 if differs else 1.0), attribute
    assert scores[f'pseudo_image/{attribute}'] == pytest.approx(1 / 3), attribute
  assert scores['pseudo_caption/exact'] == 0.75
  assert scores['pseudo_image/exact'] == pytest.approx(1 / 3)
  # Three texts in batches of 2: two calls, each with its own key, the same on a second call.
  assert len(keys) == 2 and not np.array_equal(keys[0], keys[1])
  pseudo_pairs.pseudo_pair_scores(None, None, None, truth, seed=0, batch_size=2,
                                  caption_fn=caption_fn, image_fn=image_fn)
  np.testing.assert_array_equal(keys[2], keys[0])
  table = pseudo_pairs.format_table([dict(step=400, **scores)]).splitlines()
  assert len(table) == 3 and table[2].startswith('| 400 | 75.0 |')


def test_steps_must_be_kept_checkpoints():
  assert pseudo_pairs.parse_steps(None, [400, 800], 'run') == [400, 800]
  assert pseudo_pairs.parse_steps('800, 400', [400, 800], 'run') == [400, 800]
  with pytest.raises(errors.UserError, match=r'run has no checkpoint at step\(s\) \[5\]; it '
                                             r'keeps \[400, 800\]'):
    pseudo_pairs.parse_steps('400,5', [400, 800], 'run')
  with pytest.raises(errors.UserError, match='comma-separated checkpoint steps'):
    pseudo_pairs.parse_steps('last', [400, 800], 'run')


@pytest.mark.slow  # compiles the tiny model's caption and image synthesis (~15 s)
def test_the_training_synthesis_makes_the_pairs(world):
  """With caption_fn / image_fn left out, the pairs come from itit.losses.cycles' synthesis
  (the run's cycle.* settings): deterministic for a seed, and scored in [0, 1]."""
  config = tiny.get_config('row14')
  config.model.max_text_len = MAX_TEXT_LEN  # whole shapes captions
  tiny_params = nn.unbox(jax.jit(lambda rng: itit.init_params(config.model, rng))(
      jax.random.PRNGKey(0)))
  tokenizer, scenes, detokenize = world
  image_tokens = np.repeat(np.arange(4)[:, None], config.model.image_grid ** 2, axis=1)
  text_ids = tokenizer.encode([shapes.all_captions(s)[0] for s in scenes],
                              config.model.max_text_len)
  truth = pseudo_pairs.unpaired_truth(image_tokens, text_ids, tokenizer,
                                      lambda tokens: detokenize(np.minimum(tokens, 4)))
  model = itit.ITIT(config.model)
  first, caption_fn, image_fn = pseudo_pairs.pseudo_pair_scores(
      config, model, tiny_params, truth, seed=3, batch_size=4)
  again, _, _ = pseudo_pairs.pseudo_pair_scores(
      config, model, tiny_params, truth, seed=3, batch_size=4, caption_fn=caption_fn,
      image_fn=image_fn)
  assert first == again and sorted(first) == sorted(
      f'{kind}/{k}' for kind in ('pseudo_caption', 'pseudo_image')
      for k in pseudo_pairs.METRICS)
  assert all(0.0 <= v <= 1.0 for v in first.values())
  captions = caption_fn(tiny_params, image_tokens)
  assert captions.shape == (4, config.model.max_text_len)
  drawn = image_fn(tiny_params, text_ids, jax.random.PRNGKey(0))
  assert drawn.shape == (4, config.model.image_grid ** 2)
  assert int(np.max(drawn)) < config.model.image_vocab_size

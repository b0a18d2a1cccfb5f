"""Teacher-forced captioning scores against every caption of a scene (itit.evaluation.shapes)."""
import collections

import numpy as np
import pytest

from itit.data import shapes
from itit.data import shapes_splits
from itit.data import shapes_parse
from itit.data.text_tokenizer import TextTokenizer
from itit.evaluation import shapes as shapes_evaluation


@pytest.fixture(scope='module')
def tokenizer(shapes_spiece):
  return TextTokenizer.load(shapes_spiece(128))


def _scene():
  return shapes.Scene((shapes.Obj('red', 'circle', 'small', 'top left'),))


def test_continuations_count_every_caption_of_the_scene(tokenizer):
  scene = _scene()
  captions = shapes.all_captions(scene)
  table = shapes_evaluation.scene_continuations(scene, tokenizer, 32)
  # The empty prefix is followed by each caption's first token once per caption.
  assert sum(table[()].values()) == len(captions)
  first_tokens = collections.Counter(int(ids[0]) for ids in tokenizer.encode(captions, 32))
  assert table[()] == first_tokens
  # Every full caption ends with EOS (id 1) after its last token.
  for ids in tokenizer.encode(captions, 32):
    length = int(np.sum(ids != 0))
    assert table[tuple(ids[:length - 1])][1] >= 1


def test_scores_against_hand_computed_values(tokenizer):
  scene = _scene()
  table = shapes_evaluation.scene_continuations(scene, tokenizer, 32)
  target = tokenizer.encode([shapes.all_captions(scene)[0]], 32)
  length = int(np.sum(target != 0))
  # Exactly the target: plain and valid accuracy 1.
  scores = shapes_evaluation.teacher_forced_scores(target, target, [table])
  assert scores['tf_token_accuracy'] == 1.0 and scores['tf_valid_accuracy'] == 1.0
  # The ceiling: the mean over positions of (most frequent continuation / all continuations).
  expected = np.mean([max(table[tuple(target[0, :p])].values())
                      / sum(table[tuple(target[0, :p])].values()) for p in range(length)])
  assert scores['tf_bayes_ceiling'] == pytest.approx(expected)
  assert 0 < expected < 1  # templates and paraphrases make some positions ambiguous
  # Replace the first token by another caption's valid first token: plain accuracy drops by one
  # position, valid accuracy stays 1. Then by a token no caption starts with: both drop.
  other_first = next(t for t in table[()] if t != target[0, 0])
  predicted = target.copy()
  predicted[0, 0] = other_first
  scores = shapes_evaluation.teacher_forced_scores(predicted, target, [table])
  assert scores['tf_token_accuracy'] == pytest.approx((length - 1) / length)
  assert scores['tf_valid_accuracy'] == 1.0
  invalid = next(t for t in range(2, tokenizer.vocab_size) if t not in table[()])
  predicted[0, 0] = invalid
  scores = shapes_evaluation.teacher_forced_scores(predicted, target, [table])
  assert scores['tf_valid_accuracy'] == pytest.approx((length - 1) / length)


def test_reference_captions_are_fixed_distinct_captions_of_the_scene():
  scenes = shapes_splits.make_splits(0, num_train=20, num_test=6)['test']
  for scene in scenes:
    references = shapes_evaluation.reference_captions(scene)
    assert references == shapes_evaluation.reference_captions(scene)  # deterministic
    assert len(set(references)) == min(5, len(shapes.all_captions(scene)))
    assert all(shapes_parse.parse_caption(r) == scene for r in references)
  one_caption_world = shapes_evaluation.reference_captions(scenes[0], count=1)
  assert one_caption_world == [shapes.all_captions(scenes[0])[0]]


def test_caption_cider_rewards_captions_of_the_right_scene():
  scenes = shapes_splits.make_splits(0, num_train=20, num_test=6)['test']
  exact = [shapes_evaluation.reference_captions(s)[0] for s in scenes]
  # Another caption of the same scene (not a reference) still shares most n-grams.
  paraphrases = [shapes.all_captions(s)[1] for s in scenes]
  shuffled = exact[1:] + exact[:1]  # each caption describes another scene
  scores = {name: shapes_evaluation.caption_cider(captions, scenes) for name, captions in
            dict(exact=exact, paraphrases=paraphrases, shuffled=shuffled,
                 empty=[''] * len(scenes)).items()}
  assert scores['exact'] > scores['paraphrases'] > scores['shuffled'] > scores['empty'] == 0.0
  assert scores['exact'] > 3.0

"""Captioning metrics: equal to pycocoevalcap's scorers; the Python PTB fallback; hand values."""
import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider

from itit.metrics import cider

needs_java = pytest.mark.skipif(not cider.java_available(),
                                reason='no `java` on the PATH: Stanford PTBTokenizer and METEOR '
                                       'need a JRE (apt-get install openjdk-17-jre-headless)')

# Stanford PTBTokenizer 3.4.1 (-lowerCase -preserveLines) + pycocoevalcap's punctuation removal,
# recorded from pycocoevalcap's PTBTokenizer.
PTB_CASES = {
    'A man riding a wave on top of a surfboard.': 'a man riding a wave on top of a surfboard',
    'Two dogs, one black and one white, play in the snow!':
        'two dogs one black and one white play in the snow',
    "A woman's hand holding a cell-phone.": "a woman 's hand holding a cell-phone",
    "The cat doesn't like the dog; it's angry: really.":
        "the cat does n't like the dog it 's angry really",
    'A sign that says "STOP" near the road.': 'a sign that says stop near the road',
    'A (small) bird sits on a branch...': 'a -lrb- small -rrb- bird sits on a branch',
    'People at the U.S. open -- tennis match?': 'people at the u.s. open tennis match',
    'A plate with 3.5 pounds of food and 1,000 beans':
        'a plate with 3.5 pounds of food and 1,000 beans',
    "kids can't won't I'm they're we've he'd you'll":
        "kids ca n't wo n't i 'm they 're we 've he 'd you 'll",
    'A black & white photo of a train at 5:30 pm': 'a black & white photo of a train at 5:30 pm',
    'A T-shirt / hat combo on a bed .': 'a t-shirt / hat combo on a bed',
    '  Extra   spaces here  ': 'extra spaces here',
    "A man's and a woman's bikes' wheels": "a man 's and a woman 's bikes wheels",
    "'quoted' words and `tick` marks": 'quoted words and tick marks',
    'e-mail x-ray 1990s 50% $20 #1 @home': 'e-mail x-ray 1990s 50 % $ 20 # 1 @home',
    "Mr. Smith and Dr. Who at St. Paul's": "mr. smith and dr. who at st. paul 's",
    'wow!!! Is this a cat?!': 'wow !!! is this a cat ?!',
    'one-- two -three four-': 'one two three four',
    'A bus {with} [brackets]': 'a bus -lcb- with -rcb- -lsb- brackets -rsb-',
    'cannot gonna wanna': 'can not gon na wan na',
    'cars, trucks, and buses; all parked.': 'cars trucks and buses all parked',
}

_WORDS = {
    'det': ['a', 'the', 'one', 'some'],
    'adj': ['small', 'large', 'red', 'white', 'black', 'young', 'old', 'wooden', 'striped'],
    'noun': ['dog', 'cat', 'man', 'woman', 'train', 'bus', 'horse', 'bird', 'boy', 'girl',
             'pizza', 'table', 'kite', 'surfboard', 'giraffe', 'elephant', 'clock', 'bench'],
    'verb': ['sitting on', 'standing near', 'riding', 'looking at', 'walking past', 'next to',
             'holding', 'under', 'in front of'],
}


def _random_caption(rng):
  pick = lambda kind: _WORDS[kind][rng.integers(len(_WORDS[kind]))]
  words = [pick('det'), pick('adj'), pick('noun'), pick('verb'), pick('det'), pick('noun')]
  if rng.random() < 0.5:
    words[4:4] = [pick('adj')]
  text = ' '.join(words)
  text = text[0].upper() + text[1:]
  return text + rng.choice(['.', '', ' .', '!'])


@pytest.fixture(scope='module')
def corpus():
  """60 images with 5 references each; predictions share some n-grams with their references."""
  rng = np.random.default_rng(0)
  references = {i: [_random_caption(rng) for _ in range(5)] for i in range(60)}
  predictions = {i: (references[i][0] if i % 3 == 0 else _random_caption(rng)) for i in range(60)}
  return predictions, references


def test_fallback_tokenizer_matches_recorded_ptb():
  for caption, expected in PTB_CASES.items():
    assert cider.simple_ptb_tokenize(caption) == expected, caption


@needs_java
def test_fallback_tokenizer_matches_stanford_on_captions(corpus):
  _, references = corpus
  captions = {i: refs for i, refs in references.items()}
  captions['cases'] = list(PTB_CASES)
  stanford, name = cider.tokenize(captions, use_java=True)
  assert name == 'ptb'
  assert stanford['cases'] == list(PTB_CASES.values())
  fallback, name = cider.tokenize(captions, use_java=False)
  assert name == 'python-fallback'
  assert fallback == stanford


@needs_java
def test_cider_equals_pycocoevalcap_with_ptb(corpus):
  predictions, references = corpus
  result = cider.caption_metrics(predictions, references)
  gts, _ = cider.tokenize(references, use_java=True)
  res, _ = cider.tokenize({k: [v] for k, v in predictions.items()}, use_java=True)
  expected, _ = Cider().compute_score(gts, res)
  assert result['CIDEr'] == expected
  assert result['tokenizer'] == 'ptb'
  assert set(cider.METRICS) <= set(result) and 'notes' not in result
  # A third of the predictions copy a reference: scores well above chance, below perfect.
  assert 0.5 < result['CIDEr'] < 10 and 0 < result['METEOR'] < 1
  assert 0 < result['BLEU-4'] < 1 and 0 < result['ROUGE-L'] < 1


def test_cider_equals_pycocoevalcap_with_fallback(corpus):
  predictions, references = corpus
  result = cider.caption_metrics(predictions, references, use_java=False)
  gts = {k: [cider.simple_ptb_tokenize(c) for c in refs] for k, refs in references.items()}
  res = {k: [cider.simple_ptb_tokenize(c)] for k, c in predictions.items()}
  assert result['CIDEr'] == Cider().compute_score(gts, res)[0]
  assert 'METEOR' not in result and result['tokenizer'] == 'python-fallback'
  assert any('METEOR skipped' in note for note in result['notes'])


def test_missing_java_skips_meteor(monkeypatch, corpus):
  monkeypatch.setattr(cider, 'java_available', lambda: False)
  predictions, references = corpus
  result = cider.caption_metrics(predictions, references)
  assert 'METEOR' not in result and result['tokenizer'] == 'python-fallback'
  with pytest.raises(RuntimeError, match='java'):
    cider.tokenize({0: ['a dog']}, use_java=True)


@pytest.mark.parametrize('use_java', [False, pytest.param(True, marks=needs_java)])
def test_hand_checked_values(use_java):
  # Every image's five references are one distinct caption; predicting it exactly gives cosine
  # similarity 1 for n = 1..4 and no length penalty: CIDEr-D = 10 * mean(1, 1, 1, 1) = 10.
  # METEOR (a JVM start, 10-20 s) is checked on the corpus test only.
  without_meteor = ('CIDEr', 'BLEU-4', 'ROUGE-L')
  nouns = ['dog', 'cat', 'horse', 'train', 'kite', 'clock']
  references = {i: [f'a {n} standing on the green grass'] * 5 for i, n in enumerate(nouns)}
  exact = cider.caption_metrics({i: refs[0] for i, refs in references.items()}, references,
                                use_java=use_java, metrics=without_meteor)
  assert exact['CIDEr'] == pytest.approx(10.0, abs=1e-9)
  assert exact['BLEU-4'] == pytest.approx(1.0, abs=1e-6)
  assert exact['ROUGE-L'] == pytest.approx(1.0, abs=1e-12)
  unrelated_caption = 'purple elephants juggle seven violins'
  unrelated = cider.caption_metrics({i: unrelated_caption for i in references}, references,
                                    use_java=use_java, metrics=without_meteor)
  assert unrelated['CIDEr'] == 0.0 and unrelated['ROUGE-L'] == 0.0
  assert unrelated['BLEU-4'] < 1e-6
  # One word differs out of five: n-gram precisions 4/5, 3/4, 2/3, 1/2, equal lengths (no brevity
  # penalty), so BLEU-4 = (0.2) ** (1/4); LCS 4 of 5 gives ROUGE-L P = R = F = 0.8.
  near = cider.caption_metrics({0: 'A dog runs on grass.'}, {0: ['a dog runs on sand']},
                               use_java=use_java, metrics=without_meteor)
  assert set(near) == {*without_meteor, 'tokenizer', *(() if use_java else ('notes',))}
  assert near['BLEU-4'] == pytest.approx(0.2 ** 0.25, rel=1e-6)
  assert near['ROUGE-L'] == pytest.approx(0.8, rel=1e-12)
  # With a single image every n-gram has document frequency 1 = N: IDF is 0 and so is CIDEr-D.
  assert near['CIDEr'] == 0.0


def test_bad_inputs_are_named():
  with pytest.raises(ValueError, match='1 ids lack a prediction'):
    cider.caption_metrics({0: 'a dog'}, {0: ['a dog'], 1: ['a cat']}, use_java=False)
  with pytest.raises(ValueError, match="prediction for id 0 must be one str"):
    cider.caption_metrics({0: ['a dog']}, {0: ['a dog']}, use_java=False)
  with pytest.raises(ValueError, match='non-empty list'):
    cider.caption_metrics({0: 'a dog'}, {0: []}, use_java=False)
  with pytest.raises(ValueError, match='non-empty list'):
    cider.caption_metrics({0: 'a dog'}, {0: 'a dog'}, use_java=False)
  with pytest.raises(ValueError, match='unknown metrics'):
    cider.caption_metrics({0: 'a dog'}, {0: ['a dog']}, use_java=False, metrics=('SPICE',))

"""Captioning metrics: equal to pycocoevalcap's scorers; the Python PTB fallback; hand values."""
import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider

from itit.evaluation.metrics import cider

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


# Captions with non-ASCII punctuation, symbols and letters (and some ASCII corners near them), and
# every character the fallback handles specially, in five positions each.
UNICODE_CAPTIONS = [
    'A “café” with a naïve dog… and crème brûlée.',
    'The dog’s bone isn’t here; they’re at the ’90s diner, we’ve seen ’em.',
    'It’s 5 o’clock and O’Brien’s rock’n’roll band plays – loudly — for y’all.',
    '‘Quoted’ words, «guillemets», ‹single› and „German“ or ‚low‘ quotes.',
    'He said “‘hi’” twice and ““doubled”” once.',
    'A 1½ inch pipe, 1 1/2 cups, 1⁄2 cup and ¼ of a 50°C oven at €5 or £3 (¢50, ¥100).',
    'mc² and H₂O at 10⁻³ m',
    'Emoji 😀 and ❤️ and 👍🏽 next to a dog😀',
    'Zero\u200bwidth and non\xa0breaking and thin\u2009spaces\ufeff here',
    'A x‐ray of a well‑known dog ‐ and a photo\xadgraph',
    'Line\u2028separator and carriage\rreturn',
    'Symbols © ® ™ • · × ÷ → ′ ″ ¡hola! ¿qué? 日本。東京、',
    'ΟΔΟΣ street in Москва with a cafe\u0301',
    "'Tis y'all's gov't, lemme see 'em 'cause in '99 dogs,2 cats at :30",
    'Plan B. A dog ate vitamin c. tablets.',
    'Windows \x93quotes\x94 and \x91single\x92 and a \x96 dash \x85 and \x80 5',
    'Control\x01char and\x7fdelete',
    'a dog’s’ toy and the boys’. bikes',
]
UNICODE_CHARS = ('‘’‛“”„‚‟‹›«»\x91\x92\x93\x94–—―‒−‐‑\x96\x97…\x85\xad\xa0\u2009\u202f\u3000\u200b'
                 '\u200d\ufeff\u200e\r\u2028\x01\x7f€£¢¥¤\x80½¼¾⅓⅔⅕²³₂⁻°×÷©®™•·´¨′″→¡¿。、！（⁄😀❤'
                 '\ufe0f𝐀éïëüçñ\u0301ΣЖ日')
UNICODE_POSITIONS = ('a {} b', 'a{}b', '{}dog', 'dog{}', 'a {0}{0} b')


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


def test_fallback_tokenizer_on_unicode_recorded_ptb():
  # Recorded from pycocoevalcap's PTBTokenizer: curly quotes, dashes and ellipses are dropped, ’
  # acts as ' (but stays inside "o’clock" and "rock ’n’ roll"), „ ‚ are kept, € £ ¢ ½ are
  # rewritten, symbols stand alone, emoji and invisible characters separate words, "1 1/2" is one
  # token.
  expected = {
      0: 'a café with a naïve dog and crème brûlée',
      2: "it 's 5 o’clock and o’brien 's rock ’n’ roll band plays loudly for y’ all",
      3: 'quoted words guillemets single and „ german or ‚ low quotes',
      4: "he said ``` hi ''' twice and ```` doubled '''' once",
      5: ('a 1 1/2 inch pipe 1\xa01/2 cups 1⁄2 cup and 1/4 of a 50 ° c oven at $ 5 or # 3 -lrb- '
          'cents 50 ¥ 100 -rrb-'),
      7: 'emoji and ❤ and next to a dog',
      8: 'zero width and non breaking and thin spaces here',
      9: 'a x‐ray of a well‑known dog and a photograph',
      11: 'symbols © ® ™ • · × ÷ → ′ ″ ¡ hola ¿ qué 日本 。 東京 、',
      13: "'t is y' all 's gov t lem me see 'em 'cause in '99 dogs ,2 cats at :30",
  }
  for index, tokens in expected.items():
    assert cider.simple_ptb_tokenize(UNICODE_CAPTIONS[index]) == tokens, UNICODE_CAPTIONS[index]


@needs_java
def test_fallback_tokenizer_matches_stanford_on_unicode():
  captions = UNICODE_CAPTIONS + [p.format(c) for c in UNICODE_CHARS for p in UNICODE_POSITIONS]
  stanford, _ = cider.tokenize({i: [c] for i, c in enumerate(captions)}, use_java=True)
  for i, caption in enumerate(captions):
    expected = stanford[i][0].split(' ')
    assert cider.simple_ptb_tokenize(caption).split(' ') == expected, repr(caption)
  # A line separator in a caption would end the line for Stanford and shift every later caption.
  stanford, _ = cider.tokenize({0: ['a\u2028dog\rran'], 1: ['next caption']}, use_java=True)
  assert stanford == {0: ['a dog ran'], 1: ['next caption']}


@needs_java
def test_cider_fallback_equals_ptb_on_unicode_captions():
  references = {
      0: ['A “café” with a naïve dog… and crème brûlée.', 'A dog’s café — with crème brûlée',
          'the naïve dog at a café'],
      1: ['It’s 5 o’clock; the dog isn’t asleep.', 'A clock shows 5 o’clock – a dog waits',
          'the dog’s clock at five'],
      2: ['A ½ pizza at 50°C for €5…', 'Half a pizza – €5 – on a table', 'a pizza on a table'],
      3: ['‘Rock’n’roll’ sign «on» a wall 😀', 'A sign says “rock’n’roll” on the wall',
          'a wall with a sign'],
      4: ['A x‐ray of a dog’s paw', 'an x‐ray image of a paw', 'X‐ray of the dog’s paw'],
      5: ['Two dogs\xa0play in the snow', 'two dogs playing in snow ❤️', 'dogs play in the snow'],
  }
  predictions = {0: 'A naïve dog at a café with crème brûlée…', 1: 'A clock at 5 o’clock',
                 2: 'a ½ pizza on a table', 3: 'a “rock’n’roll” sign on a wall',
                 4: 'an x‐ray of a dog’s paw', 5: 'two dogs play in the snow'}
  without_meteor = ('CIDEr', 'BLEU-4', 'ROUGE-L')
  fallback = cider.caption_metrics(predictions, references, use_java=False, metrics=without_meteor)
  stanford = cider.caption_metrics(predictions, references, use_java=True, metrics=without_meteor)
  assert fallback['CIDEr'] == pytest.approx(stanford['CIDEr'], abs=1e-9)
  assert fallback['BLEU-4'] == pytest.approx(stanford['BLEU-4'], abs=1e-9)
  assert fallback['ROUGE-L'] == pytest.approx(stanford['ROUGE-L'], abs=1e-9)
  # Predictions share many n-grams with their references, not all.
  assert 1 < stanford['CIDEr'] < 10


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

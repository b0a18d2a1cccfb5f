"""Captioning metrics (CIDEr-D, BLEU-4, METEOR, ROUGE-L) through pycocoevalcap's own scorers.

The numbers are the COCO caption evaluation's: captions are PTB-tokenized, lowercased and
stripped of punctuation, then scored by pycocoevalcap's `Cider` (which is CIDEr-D: clipped n-gram
counts, a Gaussian length penalty with sigma 6, and IDF from the evaluated references, times 10),
`Bleu(4)` ('closest' reference length), `Meteor` (1.5, English, normalised) and `Rouge` (ROUGE-L,
beta 1.2). Papers usually print CIDEr times 100; `caption_metrics` returns pycocoevalcap's scale.

Tokenization: with Java on the PATH, pycocoevalcap's `PTBTokenizer` (Stanford CoreNLP 3.4.1) does
it, exactly as in the COCO evaluation server. Without Java, `simple_ptb_tokenize` is a pure-Python
imitation that gives the same tokens on ordinary captions (see its docstring for where it can
differ); the result then says so under 'tokenizer'. METEOR is a Java program: without Java it is
left out and the result carries a note. SPICE is never computed (it downloads Stanford models).
"""
from __future__ import annotations

import re
import shutil
from typing import Hashable, Mapping, Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

METRICS = ('CIDEr', 'BLEU-4', 'METEOR', 'ROUGE-L')

_PUNCTUATIONS = frozenset(PUNCTUATIONS)
# Stanford's tokenizer keeps the period of these (and of dotted acronyms such as "u.s.").
_ABBREVIATIONS = frozenset(
    ('mr.', 'mrs.', 'ms.', 'dr.', 'st.', 'jr.', 'sr.', 'vs.', 'etc.', 'mt.', 'ave.', 'no.', 'co.',
     'inc.', 'ltd.', 'jan.', 'feb.', 'mar.', 'apr.', 'aug.', 'sept.', 'oct.', 'nov.', 'dec.'))
_BRACKETS = {'(': '-lrb-', ')': '-rrb-', '[': '-lsb-', ']': '-rsb-', '{': '-lcb-', '}': '-rcb-'}
# Stanford splits these fused words in two ("cannot" -> "can not").
_SPLIT_WORDS = {'cannot': 'can not', 'gonna': 'gon na', 'wanna': 'wan na', 'gotta': 'got ta'}
_BRACKET_NAMES = frozenset(_BRACKETS.values())
_CLITIC_ONLY = re.compile(r"^'(s|m|d|ll|re|ve)$")
_CLITIC = re.compile(r"^(.+?)('s|'m|'d|'ll|'re|'ve)$")
_NEGATION = re.compile(r"^(.+?)(n't)$")
# Leading characters split off a word, trailing ones likewise (runs such as "..." or "!!!" stay one
# token, as in Stanford's tokenizer).
_LEADING = re.compile(r"^(\.\.\.|--+|[-'$#])")
_TRAILING = re.compile(r"(\.\.\.|--+|[!?]+|[-'.,;:%])$")


def java_available() -> bool:
  """True when a `java` executable is on the PATH (PTB tokenizer and METEOR need it)."""
  return shutil.which('java') is not None


def _split_word(word):
  """Splits one whitespace-free chunk the way Stanford's PTBTokenizer does on caption text."""
  if word in _BRACKET_NAMES or _CLITIC_ONLY.match(word):
    return [word]
  leading, trailing = [], []
  while word:
    match = _LEADING.match(word)
    if not match or match.end() == len(word):
      break
    leading.append(match.group(0))
    word = word[match.end():]
  while word:
    if word in _ABBREVIATIONS or re.fullmatch(r'(?:[a-z]\.){2,}', word):
      break
    match = _TRAILING.search(word)
    if not match or match.start() == 0:
      break
    trailing.insert(0, match.group(0))
    word = word[:match.start()]
  middle = []
  if word in _SPLIT_WORDS:
    middle = _SPLIT_WORDS[word].split()
  elif word in ("can't", "won't"):
    middle = [word[:2], "n't"]
  elif _NEGATION.match(word):
    middle = list(_NEGATION.match(word).groups())
  elif _CLITIC.match(word):
    middle = list(_CLITIC.match(word).groups())
  elif word:
    middle = [word]
  return leading + middle + trailing


def simple_ptb_tokenize(caption: str) -> str:
  """Pure-Python stand-in for pycocoevalcap's PTB tokenization of one caption.

  Mimics Stanford PTBTokenizer with `-lowerCase -preserveLines` followed by pycocoevalcap's
  punctuation removal: lowercases; splits off sentence punctuation, quotes, `$ # %`, leading and
  trailing hyphens, clitics ("woman's" -> "woman 's", "doesn't" -> "does n't", "can't" ->
  "ca n't") and "cannot"/"gonna"/"wanna"/"gotta"; brackets become "-lrb-", "-rsb-", ... (kept, as
  pycocoevalcap only removes the upper-case forms); then drops the tokens pycocoevalcap removes
  (. , ? ! : ; - -- ... and the quote tokens). Numbers ("3.5", "1,000", "5:30"), hyphenated words,
  dotted acronyms ("u.s.") and common abbreviations ("mr.", "st.") stay whole.

  Where it can differ from Stanford's tokenizer: rare abbreviations outside the short list above,
  URLs and e-mail addresses, emoticons, and punctuation glued inside a word ("dog,cat"); on COCO
  captions such cases are rare, but scores from the two tokenizers are not interchangeable.
  """
  text = caption.replace('\n', ' ').lower()
  for bracket, name in _BRACKETS.items():
    text = text.replace(bracket, f' {name} ')
  # Stanford splits every semicolon and every comma or colon that is not inside a number.
  text = text.replace(';', ' ; ')
  text = re.sub(r'(?<!\d)([,:])|([,:])(?!\d)', r' \1\2 ', text)
  # Stanford turns double quotes and backticks into `` and '', which pycocoevalcap removes.
  text = text.replace('"', ' ').replace('`', ' ')
  tokens = [t for word in text.split() for t in _split_word(word)]
  return ' '.join(t for t in tokens if t not in _PUNCTUATIONS)


def tokenize(captions: Mapping[Hashable, Sequence[str]], *, use_java: bool | None = None):
  """PTB-tokenizes `{id: [caption, ...]}`; returns `({id: [tokenized, ...]}, tokenizer_name)`.

  `use_java=None` uses Stanford's tokenizer when Java is present, else the Python fallback;
  `tokenizer_name` is 'ptb' or 'python-fallback'.
  """
  if use_java is None:
    use_java = java_available()
  if use_java:
    if not java_available():
      raise RuntimeError('use_java=True but no `java` is on the PATH: install a JRE (e.g. '
                         'openjdk-17-jre-headless) or pass use_java=None for the fallback.')
    payload = {key: [{'caption': c} for c in caps] for key, caps in captions.items()}
    return PTBTokenizer().tokenize(payload), 'ptb'
  return {key: [simple_ptb_tokenize(c) for c in caps]
          for key, caps in captions.items()}, 'python-fallback'


def _check_inputs(predictions, references):
  missing = [k for k in references if k not in predictions]
  extra = [k for k in predictions if k not in references]
  if missing or extra:
    raise ValueError(f'caption_metrics: predictions and references must have the same ids; '
                     f'{len(missing)} ids lack a prediction (e.g. {missing[:3]}), {len(extra)} '
                     f'predictions have no references (e.g. {extra[:3]}).')
  for key, caption in predictions.items():
    if not isinstance(caption, str):
      raise ValueError(f'caption_metrics: prediction for id {key!r} must be one str, got '
                       f'{type(caption).__name__}.')
  for key, refs in references.items():
    if isinstance(refs, str) or not refs or not all(isinstance(r, str) for r in refs):
      raise ValueError(f'caption_metrics: references for id {key!r} must be a non-empty list of '
                       f'str, got {refs!r:.80}.')


def _meteor(gts, res):
  # Imported here: the module itself starts nothing, the scorer starts a JVM when constructed.
  from pycocoevalcap.meteor.meteor import Meteor
  scorer = Meteor()
  try:
    score, _ = scorer.compute_score(gts, res)
  finally:
    del scorer  # its __del__ stops the JVM now rather than at interpreter exit
  return float(score)


def caption_metrics(predictions: Mapping[Hashable, str],
                    references: Mapping[Hashable, Sequence[str]],
                    *, use_java: bool | None = None, metrics: Sequence[str] = METRICS) -> dict:
  """Corpus-level captioning metrics, as the COCO caption evaluation computes them.

  Args:
    predictions: `{id: caption}`, one generated caption per image.
    references: `{id: [caption, ...]}`, the human captions of the same ids (COCO has 5).
    use_java: None = Stanford PTB tokenizer and METEOR when Java is present; False forces the
      Python tokenizer and skips METEOR; True requires Java.
    metrics: which of `METRICS` to compute (METEOR starts a JVM, about 10 s: an evaluator run
      every few thousand steps may leave it out).

  Returns:
    `{'CIDEr': float, 'BLEU-4': float, 'METEOR': float, 'ROUGE-L': float, 'tokenizer': str}`
    (the requested metrics), pycocoevalcap's scale (CIDEr 1.0 = "100" in papers). Without Java,
    'METEOR' is absent and 'notes' (a list of str) says so and names the fallback tokenizer.
  """
  _check_inputs(predictions, references)
  unknown = sorted(set(metrics) - set(METRICS))
  if unknown:
    raise ValueError(f'caption_metrics: unknown metrics {unknown}; choose from {METRICS}.')
  if not predictions:
    raise ValueError('caption_metrics: no predictions to score.')
  if use_java is None:
    use_java = java_available()
  gts, tokenizer = tokenize(references, use_java=use_java)
  res, _ = tokenize({key: [caption] for key, caption in predictions.items()}, use_java=use_java)
  result = {}
  if 'CIDEr' in metrics:
    result['CIDEr'] = float(Cider().compute_score(gts, res)[0])
  if 'BLEU-4' in metrics:
    result['BLEU-4'] = float(Bleu(4).compute_score(gts, res, verbose=0)[0][3])
  if 'METEOR' in metrics and use_java:
    result['METEOR'] = _meteor(gts, res)
  if 'ROUGE-L' in metrics:
    result['ROUGE-L'] = float(Rouge().compute_score(gts, res)[0])
  if not use_java:
    result['notes'] = ['PTB tokenization by the Python fallback, not Stanford PTBTokenizer']
    if 'METEOR' in metrics:
      result['notes'].insert(0, 'METEOR skipped: it needs Java (install a JRE, e.g. '
                                'openjdk-17-jre-headless)')
  result['tokenizer'] = tokenizer
  return result

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
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from itit.evaluation.metrics.ptb_tokenize import simple_ptb_tokenize

METRICS = ('CIDEr', 'BLEU-4', 'METEOR', 'ROUGE-L')

_LINE_BREAKS = re.compile('[\r\x0b\x0c\u2028\u2029]')


def java_available() -> bool:
  """True when a `java` executable is on the PATH (PTB tokenizer and METEOR need it)."""
  return shutil.which('java') is not None


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
    # Stanford ends a line at these as at '\n' (which pycocoevalcap replaces): one in a caption
    # would shift every later caption onto the wrong image.
    payload = {key: [{'caption': _LINE_BREAKS.sub(' ', c)} for c in caps]
               for key, caps in captions.items()}
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

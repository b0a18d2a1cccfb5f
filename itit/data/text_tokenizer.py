"""SentencePiece text tokenizer with T5's id conventions.

Ids: pad = 0, eos = 1, unk = 2 (T5's `spiece.model` layout, no SentencePiece BOS). The text
decoder starts from the pad id, as T5 does (`decoder_start_token_id = pad_token_id = 0` in
Hugging Face's T5 config), so `bos_id` is 0.

Any SentencePiece `.model` loads (e.g. T5's `spiece.model`, which `load_t5_tokenizer` reads from
a Hugging Face T5 directory and checks against the embedding size); `TextTokenizer.train` makes a
small one from a corpus, deterministically, for runs without a download (the shapes world trains
its own). The SHA-256 of the model file is the tokenizer's identity: token shards and checkpoints
record it, and readers refuse a mismatch.
"""
from __future__ import annotations

import hashlib
import io
import os
from typing import Iterable, Sequence

import numpy as np
import sentencepiece as spm

from itit import errors

# The SentencePiece model's file name inside a Hugging Face T5 directory.
T5_TOKENIZER_FILE = 'spiece.model'


class TextTokenizer:
  """Batched encode / decode to fixed-length int32 id arrays."""

  pad_id = 0
  eos_id = 1
  # The decoder's start token: the pad id, as T5's decoder_start_token_id.
  bos_id = 0

  def __init__(self, model_bytes: bytes):
    self._processor = spm.SentencePieceProcessor(model_proto=model_bytes)
    self.sha256 = hashlib.sha256(model_bytes).hexdigest()
    self.model_bytes = model_bytes
    if self._processor.pad_id() != self.pad_id or self._processor.eos_id() != self.eos_id:
      raise ValueError(
          f'SentencePiece model has pad_id={self._processor.pad_id()}, '
          f'eos_id={self._processor.eos_id()}; ITIT needs T5 conventions pad_id=0, eos_id=1: '
          'use a T5 spiece.model or TextTokenizer.train.')

  @classmethod
  def load(cls, path: str | os.PathLike) -> TextTokenizer:
    """Loads a SentencePiece `.model` file."""
    try:
      with open(path, 'rb') as f:
        model_bytes = f.read()
    except FileNotFoundError:
      raise errors.MissingFileError(
          f'text tokenizer model {path} not found: pass a SentencePiece .model file '
          '(e.g. T5 spiece.model) or train one with TextTokenizer.train') from None
    except IsADirectoryError:
      raise errors.MissingFileError(
          f'text tokenizer model {path} is a folder: pass a SentencePiece .model file '
          '(e.g. T5 spiece.model)') from None
    try:
      return cls(model_bytes)
    except RuntimeError:  # SentencePiece's parse error, a multi-line C++ message
      raise errors.CorruptFileError(
          f'text tokenizer model {path} is not a SentencePiece model (its bytes do not parse): '
          'pass a SentencePiece .model file (e.g. T5 spiece.model)') from None

  @classmethod
  def train(cls, texts: Iterable[str], model_path: str | os.PathLike, vocab_size: int, *,
            model_type: str = 'bpe', character_coverage: float = 1.0,
            max_sentence_length: int = 4192) -> TextTokenizer:
    """Trains a SentencePiece model on `texts` and writes it to `model_path`.

    `vocab_size` is an upper bound: a small corpus (the shapes world has a few dozen words)
    gets the vocabulary it supports. BPE by default: on small closed-vocabulary corpora
    SentencePiece's unigram trainer stops at a few dozen near-character pieces, while BPE merges
    up to whole words (short sequences); `model_type='unigram'` is T5's choice for large corpora.
    Training is single-threaded with a fixed random seed, so the same corpus gives the same model
    bytes (and sha256).
    """
    # Empty lines carry no pieces and make the trainer warn; drop them.
    sentences = (text for text in texts if text and text.strip())
    model_writer = io.BytesIO()
    spm.set_random_generator_seed(0)
    spm.SentencePieceTrainer.train(
        sentence_iterator=sentences,
        model_writer=model_writer,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        max_sentence_length=max_sentence_length,
        pad_id=cls.pad_id, eos_id=cls.eos_id, unk_id=2, bos_id=-1,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    model_bytes = model_writer.getvalue()
    tmp_path = f'{os.fspath(model_path)}.tmp'
    with open(tmp_path, 'wb') as f:
      f.write(model_bytes)
    os.replace(tmp_path, model_path)
    return cls(model_bytes)

  @property
  def vocab_size(self) -> int:
    return self._processor.get_piece_size()

  @property
  def identity(self) -> dict:
    """What token shards and checkpoints record about this tokenizer."""
    return {'kind': 'sentencepiece', 'sha256': self.sha256, 'vocab_size': self.vocab_size}

  def encode(self, texts: Sequence[str], max_len: int) -> np.ndarray:
    """Encodes texts to ids + EOS, truncated to `max_len` (EOS kept last), right-padded with 0.

    Returns int32 [batch, max_len].
    """
    if isinstance(texts, str):
      raise TypeError('TextTokenizer.encode takes a sequence of strings; wrap one text in a list')
    if max_len < 1:
      raise ValueError(f'max_len must be >= 1 (room for EOS), got {max_len}')
    pieces = self._processor.encode(list(texts))
    ids = np.full((len(pieces), max_len), self.pad_id, np.int32)
    for row, text_ids in enumerate(pieces):
      text_ids = text_ids[:max_len - 1]
      ids[row, :len(text_ids)] = text_ids
      ids[row, len(text_ids)] = self.eos_id
    return ids

  def decode(self, ids: np.ndarray) -> list[str] | str:
    """Decodes [batch, length] ids to a list of texts, or [length] ids to one text.

    Each row stops at its first EOS; pad ids and ids outside the SentencePiece vocabulary
    (T5's sentinel / padding rows of a 32128-way decoder) are dropped.
    """
    ids = np.asarray(ids)
    if ids.ndim not in (1, 2):
      raise ValueError(f'decode takes ids of shape [length] or [batch, length], got {ids.shape}')
    rows = ids[None] if ids.ndim == 1 else ids
    texts = []
    for row in rows.tolist():
      if self.eos_id in row:
        row = row[:row.index(self.eos_id)]
      row = [i for i in row if i != self.pad_id and 0 <= i < self.vocab_size]
      texts.append(self._processor.decode(row))
    return texts[0] if ids.ndim == 1 else texts


def load_t5_tokenizer(path: str | os.PathLike, vocab_size: int) -> TextTokenizer:
  """The `spiece.model` of a T5 directory, checked to fit an embedding of `vocab_size` rows.

  T5's 32000 SentencePiece pieces (32100 with the sentinels) fit its 32128 padded rows; a
  tokenizer with more pieces than rows would index past the table.

  Args:
    path: a Hugging Face T5 directory.
    vocab_size: rows of the T5 embedding the ids index (`text_encoder.t5.vocab_size`).

  Returns:
    The directory's tokenizer.

  Raises:
    FileNotFoundError: the directory has no spiece.model.
    ValueError: the tokenizer has more pieces than the embedding has rows.
  """
  model_file = os.path.join(path, T5_TOKENIZER_FILE)
  if not os.path.exists(model_file):
    raise FileNotFoundError(f'{model_file} not found: a T5 directory carries its SentencePiece '
                            'model as spiece.model')
  tokenizer = TextTokenizer.load(model_file)
  if tokenizer.vocab_size > vocab_size:
    raise ValueError(f'{model_file} has {tokenizer.vocab_size} pieces but the T5 embedding has '
                     f'{vocab_size} rows: the tokenizer does not belong to this checkpoint')
  return tokenizer

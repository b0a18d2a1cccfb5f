"""Tests for itit.data.text_tokenizer: T5 ids, truncation, padding, training, load_t5_tokenizer."""
import hashlib
import io

import numpy as np
import pytest
import sentencepiece as spm

from itit.data.text_tokenizer import load_t5_tokenizer
from itit.data.text_tokenizer import TextTokenizer

COLORS = ['red', 'green', 'blue', 'yellow', 'purple', 'orange']
SHAPES = ['circle', 'square', 'triangle', 'cross']
CORPUS = (
    [f'a {size} {color} {shape} at the {place}' for size in ['small', 'large']
     for color in COLORS for shape in SHAPES for place in ['top left', 'bottom right']]
    + [f'there is a small {color} square below a green {shape}'
       for color in COLORS for shape in SHAPES])


@pytest.fixture(scope='module')
def model_path(tmp_path_factory):
  path = tmp_path_factory.mktemp('tok') / 'shapes.model'
  TextTokenizer.train(CORPUS, path, vocab_size=200)
  return path


@pytest.fixture(scope='module')
def tokenizer(model_path):
  return TextTokenizer.load(model_path)


def test_t5_conventions(tokenizer):
  assert (tokenizer.pad_id, tokenizer.eos_id, tokenizer.bos_id) == (0, 1, 0)
  pieces = [tokenizer._processor.id_to_piece(i) for i in range(3)]
  assert pieces == ['<pad>', '</s>', '<unk>']
  # The shapes corpus has few words: BPE merges them whole, and vocab_size is an upper bound.
  assert 40 < tokenizer.vocab_size <= 200
  assert tokenizer.encode(['there is a small blue square below a green triangle'], 16)[0, 10] == 1


def test_round_trip(tokenizer):
  ids = tokenizer.encode(CORPUS, max_len=32)
  assert ids.dtype == np.int32 and ids.shape == (len(CORPUS), 32)
  assert tokenizer.decode(ids) == CORPUS
  assert tokenizer.decode(ids[3]) == CORPUS[3]


def test_eos_and_padding(tokenizer):
  text = 'a large red circle at the top left'
  full = tokenizer._processor.encode(text)
  ids = tokenizer.encode([text, ''], max_len=20)
  np.testing.assert_array_equal(ids[0, :len(full)], full)
  assert ids[0, len(full)] == tokenizer.eos_id
  assert (ids[0, len(full) + 1:] == 0).all()
  # The empty text is EOS alone.
  np.testing.assert_array_equal(ids[1], [1] + [0] * 19)


def test_truncation_keeps_eos(tokenizer):
  text = 'there is a small blue square below a green triangle'
  full = tokenizer._processor.encode(text)
  ids = tokenizer.encode([text], max_len=4)
  np.testing.assert_array_equal(ids[0], full[:3] + [1])
  assert tokenizer.decode(ids[0]) == tokenizer._processor.decode(full[:3])
  np.testing.assert_array_equal(tokenizer.encode([text], max_len=1), [[1]])


def test_decode_stops_at_eos_and_skips_pad(tokenizer):
  texts = ['a small red cross at the top left', 'a large blue circle at the top left']
  ids = tokenizer.encode(texts, max_len=16)
  noisy = ids.copy()
  eos_at = int(np.argmax(noisy[0] == 1))
  noisy[0, eos_at + 1:] = 5  # anything after EOS is ignored
  noisy[1] = np.concatenate([[0, 0], ids[1, :-2]])  # leading pads (a decoder start) are dropped
  noisy[1, -1] = 40000  # out-of-vocabulary ids (a padded decoder vocabulary) are dropped
  assert tokenizer.decode(noisy) == texts


def test_training_is_deterministic(tmp_path, tokenizer):
  again = TextTokenizer.train(CORPUS, tmp_path / 'again.model', vocab_size=200)
  assert again.sha256 == tokenizer.sha256
  other = TextTokenizer.train(CORPUS[:40], tmp_path / 'other.model', vocab_size=200)
  assert other.sha256 != tokenizer.sha256


def test_load_saved_model(model_path, tokenizer):
  loaded = TextTokenizer.load(model_path)
  assert loaded.sha256 == tokenizer.sha256 == _file_sha256(model_path)
  assert loaded.identity == {'kind': 'sentencepiece', 'sha256': tokenizer.sha256,
                             'vocab_size': tokenizer.vocab_size}
  np.testing.assert_array_equal(loaded.encode(CORPUS[:5], 24), tokenizer.encode(CORPUS[:5], 24))


def _file_sha256(path):
  return hashlib.sha256(path.read_bytes()).hexdigest()


def test_rejects_other_id_conventions(tmp_path):
  # SentencePiece's defaults are unk=0, bos=1, eos=2: not T5's layout.
  writer = io.BytesIO()
  spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=writer,
                                 vocab_size=40, minloglevel=2)
  path = tmp_path / 'default.model'
  path.write_bytes(writer.getvalue())
  with pytest.raises(ValueError, match='pad_id=0, eos_id=1'):
    TextTokenizer.load(path)


def test_bad_input(tokenizer, tmp_path):
  with pytest.raises(FileNotFoundError, match='missing.model'):
    TextTokenizer.load(tmp_path / 'missing.model')
  with pytest.raises(TypeError, match='sequence of strings'):
    tokenizer.encode('a red circle', 8)
  with pytest.raises(ValueError, match='max_len'):
    tokenizer.encode(['a red circle'], 0)


def test_load_t5_tokenizer_checks_the_embedding_size(model_path, tokenizer, tmp_path):
  directory = tmp_path / 't5'
  directory.mkdir()
  (directory / 'spiece.model').write_bytes(model_path.read_bytes())
  loaded = load_t5_tokenizer(str(directory), tokenizer.vocab_size + 28)  # T5 pads its rows
  assert loaded.sha256 == tokenizer.sha256
  assert loaded.encode(['a red circle'], 8).max() < tokenizer.vocab_size
  with pytest.raises(ValueError, match=f'{tokenizer.vocab_size} pieces but the T5 embedding has'):
    load_t5_tokenizer(str(directory), tokenizer.vocab_size - 1)
  with pytest.raises(FileNotFoundError, match='spiece.model'):
    load_t5_tokenizer(str(tmp_path), tokenizer.vocab_size)

r"""Token shards from your own images and texts: a few captioned images, unpaired images and texts.

  python -m itit.prepare --config=configs/prepare_folder.py:DATA --out_dir=DIR \
      --config.image_tokenizer=VQGAN_DIR

DATA holds (only pairs/ is required; every folder is read recursively):

  DATA/pairs/             captioned training images, with their captions in
  DATA/pairs/captions.jsonl   one line per caption: {"file": "a/b.png", "caption": "..."}
                          ("image" may replace "file", "text" may replace "caption": what
                          itit.sample writes), or captions.tsv: a/b.png<TAB>caption; paths are
                          relative to pairs/, an image may have several lines
  DATA/images/            unpaired images (no captions)                  -> unpaired_image
  DATA/texts.txt          unpaired texts, one a line (or texts.jsonl with {"text": ...}, or
                          texts.tsv like the captions)                   -> unpaired_text
  DATA/test/              captioned test images (captions.jsonl / .tsv inside, as pairs/);
                          absent: `heldout_fraction` of pairs/ is held out as the test stream,
                          chosen by file name (the same files configs/vqgan_folder.py holds out
                          of pairs/ with the same fraction)

Streams: paired, unpaired_image, unpaired_text, test: the names itit.train reads. Without
images/ or texts.*, train the paired baseline (`--config=configs/folder.py:row3`) or another
table-2 row whose streams exist. Fields:

  image_size        32, the VQGAN's (configs/vqgan_folder.py)
  min_image_size    32: images with a shorter side are skipped as 'too_small'; lower it to
                    upscale smaller ones (a stream left with no record is refused, with the
                    counts of what was skipped and why)
  heldout_fraction  0.1: the share of pairs/ held out as the test stream when test/ is absent
  text_corpus       what the SentencePiece model trains on (when text_tokenizer is empty):
                    the captions and texts, as globs joined by ','
  text_vocab_size   1000 (an upper bound: a small corpus gets what it supports)
  max_text_len      32
Every stream's own fields (`--config.streams.paired.images=...`) can be overridden too.
"""
import glob
import os

import ml_collections

CAPTION_FILES = ('captions.jsonl', 'captions.tsv')


def _captions(folder):
  """The captions file inside `folder`, or a clear error naming the accepted names."""
  for name in CAPTION_FILES:
    path = os.path.join(folder, name)
    if os.path.isfile(path):
      return path
  raise ValueError(f'configs/prepare_folder.py: {folder} has no captions file (valid: '
                   f'{" or ".join(CAPTION_FILES)} inside it)')


def get_config(arg=None):
  root = arg or ''
  pairs = os.path.join(root, 'pairs')
  if not os.path.isdir(pairs):
    raise ValueError(f'configs/prepare_folder.py: {root!r} has no pairs/ folder (valid: a data '
                     'folder with pairs/ + captions and optionally images/, texts.txt, test/, '
                     'as --config=configs/prepare_folder.py:DATA)')
  config = ml_collections.ConfigDict()
  config.image_tokenizer = ''  # workdir of itit.train_tokenizer
  config.text_tokenizer = ''  # a SentencePiece .model; empty: train one on text_corpus
  config.text_vocab_size = 1000
  config.max_text_len = 32
  config.image_size = 32
  config.min_image_size = 32  # shorter sides are skipped ('too_small'); smaller: upscaled
  config.heldout_fraction = 0.1  # of pairs/, as the test stream, when there is no test/
  config.records_per_shard = 10000
  config.batch_size = 256
  config.shapes = ml_collections.ConfigDict(dict(
      seed=0, paired_fraction=0.0, num_train=0, num_test=0))  # unused: no shapes stream
  pair_captions = _captions(pairs)
  streams = {}
  test = os.path.join(root, 'test')
  if os.path.isdir(test):
    streams['paired'] = dict(source='image_folder', kind='paired', images=pairs,
                             captions=pair_captions)
    streams['test'] = dict(source='image_folder', kind='paired', images=test,
                           captions=_captions(test))
  else:
    fraction = config.get_ref('heldout_fraction')
    streams['paired'] = dict(source='image_folder', kind='paired', images=pairs,
                             captions=pair_captions, heldout_fraction=fraction, part='train')
    streams['test'] = dict(source='image_folder', kind='paired', images=pairs,
                           captions=pair_captions, heldout_fraction=fraction, part='heldout')
  if os.path.isdir(os.path.join(root, 'images')):
    streams['unpaired_image'] = dict(source='image_folder', kind='image',
                                     images=os.path.join(root, 'images'), captions='')
  texts = sorted(glob.glob(os.path.join(glob.escape(root), 'texts.*')))
  if texts:
    streams['unpaired_text'] = dict(source='text_files', kind='text', texts=','.join(texts))
  config.streams = ml_collections.ConfigDict(streams)
  config.text_corpus = ','.join([pair_captions] + texts)
  return config

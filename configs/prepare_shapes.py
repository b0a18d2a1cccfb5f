"""Token shards of the shapes world: every split in one command.

  python -m itit.prepare --config=configs/prepare_shapes.py --out_dir=DIR \
      --config.image_tokenizer=VQGAN_WORKDIR

`arg` sets the paired fraction, e.g. `configs/prepare_shapes.py:0.02` (the default) or `:1.0`
(every training scene paired, the upper bound of the study).
"""
import ml_collections


def get_config(arg=None):
  paired_fraction = _paired_fraction(arg)
  config = ml_collections.ConfigDict()
  config.image_tokenizer = ''  # workdir of itit.train_tokenizer
  config.text_tokenizer = ''  # a SentencePiece .model; empty: train one on text_corpus
  config.text_corpus = 'shapes'  # 'shapes', or a glob of text files
  config.text_vocab_size = 1000
  config.max_text_len = 32
  config.image_size = 32
  config.min_image_size = 64  # raw images with a shorter side are skipped ('too_small')
  config.records_per_shard = 10000
  config.batch_size = 256
  config.shapes = ml_collections.ConfigDict(dict(
      seed=0, paired_fraction=paired_fraction, num_train=20000, num_test=1000))
  config.streams = ml_collections.ConfigDict({
      'paired': dict(source='shapes', kind='paired', split='paired'),
      'unpaired_image': dict(source='shapes', kind='image', split='unpaired_image'),
      'unpaired_text': dict(source='shapes', kind='text', split='unpaired_text'),
      'test': dict(source='shapes', kind='paired', split='test'),
      'heldout_test': dict(source='shapes', kind='paired', split='heldout_test'),
  })
  if paired_fraction >= 1.0:  # nothing is left unpaired
    del config.streams['unpaired_image']
    del config.streams['unpaired_text']
  return config


def _paired_fraction(arg):
  """`arg` as the paired fraction in [0, 1] (default 0.02), or one clear error."""
  if not arg:
    return 0.02
  try:
    fraction = float(arg)
  except ValueError:
    fraction = None
  if fraction is None or not 0.0 <= fraction <= 1.0:
    raise ValueError(f'configs/prepare_shapes.py: {arg!r} is not a paired fraction (valid: a '
                     'number in [0, 1], e.g. :0.02 or :1.0)')
  return fraction

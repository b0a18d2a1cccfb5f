"""Token shards of the shapes world: every split in one command.

  python -m itit.prepare --config=configs/prepare_shapes.py --out_dir=DIR \
      --config.image_tokenizer=VQGAN_WORKDIR

`arg` is comma-separated: a paired fraction, e.g. `:0.02` (the default) or `:1.0` (every training
scene paired, the upper bound of the study), and the presets `laptop` (the laptop level: the 576
one-object scenes at 24x24, 480 for training and 96 for test, no held-out combinations; use the
VQGAN of configs/vqgan_shapes.py:laptop) and `compositional` (the pairs show only half of the
colour x shape looks, the unpaired images and texts show all; adds the 'novel_test' split of the
test scenes with a look no pair shows), e.g. `configs/prepare_shapes.py:laptop,0.1,compositional`.
"""
import ml_collections

from configs import common

PRESETS = ('laptop', 'compositional')


def get_config(arg=None):
  paired_fraction, presets = _parse(arg)
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
      seed=0, paired_fraction=paired_fraction, num_train=20000, num_test=1000, max_objects=2,
      paired_looks=1.0, heldout=True))
  config.streams = ml_collections.ConfigDict({
      'paired': dict(source='shapes', kind='paired', split='paired'),
      'unpaired_image': dict(source='shapes', kind='image', split='unpaired_image'),
      'unpaired_text': dict(source='shapes', kind='text', split='unpaired_text'),
      'test': dict(source='shapes', kind='paired', split='test'),
      'heldout_test': dict(source='shapes', kind='paired', split='heldout_test'),
  })
  if 'laptop' in presets:
    config.image_size = 24
    config.max_text_len = 16  # the longest one-object caption is 13 pieces
    config.shapes.update(dict(num_train=480, num_test=96, max_objects=1, heldout=False))
    del config.streams['heldout_test']  # nothing is held out: all 576 scenes are used
  if 'compositional' in presets:
    config.shapes.paired_looks = 0.5
    config.streams['novel_test'] = dict(source='shapes', kind='paired', split='novel_test')
  if paired_fraction >= 1.0:  # nothing is left unpaired
    if 'compositional' in presets:
      raise ValueError('configs/prepare_shapes.py: compositional keeps some looks out of the '
                       'pairs; it cannot pair every scene (give a fraction below 1)')
    del config.streams['unpaired_image']
    del config.streams['unpaired_text']
  return config


def _parse(arg):
  """(paired fraction in [0, 1], default 0.02; presets), or one clear error."""
  fractions, presets = [], []
  for name in common.split_arg(arg):
    try:
      fractions.append(float(name))
    except ValueError:
      presets.append(name)
  common.presets(','.join(presets), 'configs/prepare_shapes.py', PRESETS)
  if len(fractions) > 1 or (fractions and not 0.0 <= fractions[0] <= 1.0):
    raise ValueError(f'configs/prepare_shapes.py: {arg!r} is not a paired fraction (valid: a '
                     'number in [0, 1], e.g. :0.02 or :1.0, and the presets laptop, '
                     'compositional)')
  return (fractions[0] if fractions else 0.02), presets

"""A model that compiles in seconds: for tests and smoke runs (4x4 grid, small vocabularies).

Presets as configs/base.py: no preset = table 2 row 14 (cycles included), `:row3` = the paired
baseline, `:rowN` = row N. The jointly trained text encoder, and one paired batch shared by T2I
and I2T (`batch.paired_split=False`).
"""
from configs import base


def get_config(arg=None):
  config = base.paper_config()
  config.model.update(dict(
      image_grid=4,
      image_vocab_size=32,
      text_vocab_size=64,
      max_text_len=8,
      width=32,
      depth=1,
      num_heads=2,
      mlp_dim=64,
      text_decoder_depth=1,
      text_decoder_width=32,
      text_decoder_num_heads=2,
      text_decoder_mlp_dim=64,
      image_decoder_depth=1,
      num_dropped=8,
      dtype='float32',
  ))
  config.model.text_encoder.kind = 'learned'
  config.model.text_encoder.learned.update(dict(width=32, depth=1, num_heads=2, mlp_dim=64))
  config.batch.update(dict(paired=4, paired_split=False, unpaired_image=4, unpaired_text=4))
  config.total_steps = 10
  config.cycle.synthesis_steps = 2
  return base.get_itit_config(config, arg, 'configs/tiny.py')

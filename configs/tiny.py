"""A model that compiles in seconds: for tests and smoke runs (4x4 grid, small vocabularies)."""
from configs import base


def get_config(arg=None):
  config = base.get_config()
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
  config.model.text_encoder.update(dict(width=32, depth=1, num_heads=2, mlp_dim=64))
  config.batch.update(dict(paired=4, unpaired_image=4, unpaired_text=4))
  config.total_steps = 10
  config.cycle.synthesis_steps = 2
  return base.apply_preset(config, arg, 'configs/tiny.py')

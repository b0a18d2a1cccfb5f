"""The CPU study model for the shapes world: 8x8 image tokens, a ~1000-piece SentencePiece text.

About 1.1M parameters; a paired train step (I2T+I2I and T2I, batch 64 each) costs ~44 GFLOPs.
float32 compute, since bfloat16 matmuls are slower than float32 on CPUs.
"""
from configs import base


def get_config(arg=None):
  del arg
  config = base.get_config()
  config.model.update(dict(
      image_grid=8,  # 8x8 = 64 image tokens
      image_vocab_size=512,  # the shapes VQGAN's codebook
      text_vocab_size=1000,  # the shapes world's SentencePiece model
      max_text_len=32,
      width=96,
      depth=3,
      num_heads=4,
      mlp_dim=384,
      text_decoder_depth=2,
      text_decoder_width=96,
      text_decoder_num_heads=4,
      text_decoder_mlp_dim=384,
      image_decoder_depth=2,
      num_dropped=32,  # half the tokens: the mask ratio is at least 0.5
      dtype='float32',
      # A 30-minute CPU run underfits, and dropout's random bits cost ~25% of its step time.
      dropout=0.0,
  ))
  config.model.text_encoder.update(dict(width=64, depth=1, num_heads=2, mlp_dim=128))
  config.batch.update(dict(paired=64, unpaired_image=64, unpaired_text=64))
  return config

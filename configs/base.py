"""The paper's training recipe (ITIT, table 3), shared by every other config.

Each config file's `get_config(arg)` starts from `base.get_config()` and overrides what differs.
Command-line overrides: `--config=configs/vit_b.py --config.optimizer.lr=3e-4`.
"""
import ml_collections


def model_config():
  """ITIT-B: ViT-B joint encoder, 6-block GIT text decoder, 8-block MAGE image decoder."""
  return ml_collections.ConfigDict(dict(
      image_grid=16,  # 16x16 = 256 image tokens
      image_vocab_size=8192,  # VQGAN codebook size
      text_vocab_size=32128,  # T5 SentencePiece vocabulary, padded
      max_text_len=64,
      width=768,
      depth=12,
      num_heads=12,
      mlp_dim=3072,
      text_decoder_depth=6,
      # GIT's text decoder is 768 wide at every encoder size; this (with tied embeddings) also
      # reproduces the paper's 221M / 487M / 868M totals. The image decoder uses the encoder's
      # width, heads and mlp_dim (MAGE).
      text_decoder_width=768,
      text_decoder_num_heads=12,
      text_decoder_mlp_dim=3072,
      image_decoder_depth=8,
      # Masked image tokens dropped from the encoder input (MAE-style); static, since the mask
      # ratio is always above 50%.
      num_dropped=128,
      dropout=0.1,
      dtype='bfloat16',  # compute dtype; parameters stay float32
      # jax.nn.dot_product_attention implementation: None (let JAX pick), 'xla' or 'cudnn'.
      attention_impl=ml_collections.config_dict.placeholder(str),
      text_encoder=ml_collections.ConfigDict(dict(
          kind='learned',  # 'learned' (small T5-architecture encoder trained jointly) or 't5'
          path='',  # a local Hugging Face T5 directory, for kind='t5'
          width=768,
          depth=4,
          num_heads=12,
          mlp_dim=2048,
      )),
  ))


def get_config(arg=None):
  del arg
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.total_steps = 500_000

  # Prepared token shards (python -m itit.prepare): one folder per stream under data.dir.
  config.data = ml_collections.ConfigDict(dict(
      dir='',
      paired='paired',
      unpaired_image='unpaired_image',
      unpaired_text='unpaired_text',
      test='test',
  ))
  # Per-loss batch sizes (table 3): paired examples feed T2I and I2T/I2I.
  config.batch = ml_collections.ConfigDict(dict(
      paired=512,
      unpaired_image=512,
      unpaired_text=512,
  ))
  config.model = model_config()
  config.loss = ml_collections.ConfigDict(dict(
      label_smoothing=0.1,
      i2t_encoder_grad_scale=0.1,  # z = 0.1 z + stop_gradient(0.9 z) before the text decoder
      mask_ratio_mode=0.75,  # truncated Gaussian over the image mask ratio
      mask_ratio_std=0.25,
      mask_ratio_min=0.5,
      mask_ratio_max_t2i=1.0,
      mask_ratio_max_i2t=0.75,
      # Loss switches: the paper's table 2 rows are presets of these.
      t2i=True,
      i2t=True,
      i2i=True,  # image-to-image reconstruction with the empty text, for classifier-free guidance
  ))
  config.optimizer = ml_collections.ConfigDict(dict(
      name='adafactor',
      lr=1e-4,
      warmup_steps=5000,
      schedule='cosine',
      b1=0.9,
      decay_rate=0.96,
      weight_decay=0.045,
      grad_clip=3.0,
  ))
  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  # 'halt' raises naming the step range; 'skip' drops the update and counts it.
  config.nan_policy = 'halt'
  config.log_every = 100
  config.checkpoint_every = 5000
  config.keep_checkpoints = 3
  config.eval_every = 10_000
  config.max_steps_per_run = 0  # > 0: stop (with a checkpoint) after this many steps per run
  config.eval_batches = 0  # test batches evaluated at the end; 0 = the whole test split
  return config

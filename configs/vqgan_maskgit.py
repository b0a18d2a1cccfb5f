"""VQGAN tokenizer with MaskGIT's public layout (google-research/maskgit, `vqgan_config.py`).

256x256 images -> 16x16 tokens from 1024 codes. Its `params` tree is MaskGIT's, so the public
`tokenizer_imagenet256_checkpoint` loads with `vqgan.load_maskgit_checkpoint(path, config)`.
Training reads an image folder: `--config.data.dir=/path/to/images`.

  python -m itit.train_tokenizer --config=configs/vqgan_maskgit.py --workdir=DIR \
      --config.data.dir=/path/to/images

The other tokenizer configs (`vqgan_paper.py`, `vqgan_shapes.py`) start from this one.
"""
import ml_collections

from configs import common


def get_config(arg=None):
  common.presets(arg, 'configs/vqgan_maskgit.py', valid=())
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.total_steps = 1_000_000
  config.batch_size = 256

  config.model = ml_collections.ConfigDict(dict(
      image_size=256,
      filters=128,
      channel_multipliers=[1, 1, 2, 2, 4],  # 4 downsamplings: 256 -> 16
      num_res_blocks=2,
      embedding_dim=256,
      codebook_size=1024,
      norm_groups=32,
      commitment_cost=0.25,
      # 'resnet' (MaskGIT's CNN) or 'patch_mlp' (each token from its own patch only, via an MLP
      # of patch_mlp_depth hidden layers of patch_mlp_width; itit/models/vqgan.py).
      encoder='resnet',
      patch_mlp_width=128,
      patch_mlp_depth=2,
  ))
  # 'shapes': scenes of the built-in shapes world rendered on the fly; 'folder': every image
  # under data.dir (recursively). Held out for evaluation (itit/vqgan_training/data.py): the
  # images of eval_dir if set, else those of data.dir in the heldout_fraction split (by file
  # name, the split configs/prepare_folder.py makes), else the last num_eval files (sorted);
  # num_eval also caps the first two. Images with a short side below min_size are skipped
  # ('too_small'), larger ones resized (up or down) to model.image_size.
  config.data = ml_collections.ConfigDict(dict(
      source='folder',
      dir='',
      eval_dir='',
      heldout_fraction=0.0,
      num_eval=1000,
      min_size=64,
      max_objects=2,
  ))
  # MaskGIT trains with Adam(b1=0, b2=0.99) at 1e-4.
  config.optimizer = ml_collections.ConfigDict(dict(
      lr=1e-4,
      b1=0.0,
      b2=0.99,
      warmup_steps=0,
      schedule='constant',  # or 'cosine' (to 0 at total_steps)
      grad_clip=1.0,
  ))
  config.loss = ml_collections.ConfigDict(dict(
      l1_weight=0.0,
      l2_weight=1.0,
      # Perceptual loss: needs a feature net .npz (itit/vqgan_training/losses.py,
      # load_feature_net).
      perceptual_weight=0.0,
      perceptual_weights='',
      # PatchGAN hinge loss; the discriminator trains from adversarial_start, and the generator's
      # weight ramps up linearly over adversarial_warmup steps after that.
      adversarial_weight=0.1,
      adversarial_start=20_000,
      adversarial_warmup=10_000,
      disc_lr=1e-4,
      disc_filters=64,
      disc_layers=3,
  ))
  # Dead-code restarts: every restart_every steps, codes picked fewer than restart_min_count
  # times since the last restart are re-seeded with encoder outputs of the current batch. They
  # stop after restart_until * total_steps so the decoder learns the last re-seeded codes.
  # ema_decay = 0: MaskGIT's codebook loss learns the codebook; > 0: EMA k-means updates
  # (faster on a small budget; see itit/vqgan_training/losses.py). restart_sampling: which encoder
  # outputs seed dead codes, 'uniform' or 'error' (k-means++-like, away from well-coded patches).
  config.codebook = ml_collections.ConfigDict(dict(
      ema_decay=0.0,
      restart_every=1000,
      restart_min_count=1,
      restart_until=0.8,
      restart_sampling='uniform',
  ))
  config.log_every = 100
  config.image_every = 5000
  config.checkpoint_every = 5000
  config.keep_checkpoints = 3
  config.eval_batch_size = 64
  return config

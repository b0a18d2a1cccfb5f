"""VQGAN tokenizer for the built-in shapes world: 32x32 images -> 8x8 = 64 tokens.

MaskGIT's decoder, shrunk to train on a laptop CPU, behind a per-patch MLP encoder (each token
depends on its own 4x4 patch only: a plain background is one code, and an object's tokens do not
change with the rest of the scene; ITIT captions far better from such tokens, docs/SHAPES.md).
`--config.model.encoder=resnet` gives MaskGIT's CNN encoder. No adversarial or perceptual loss
(the exact-scene evaluation needs sharp colours and edges, which L1 + L2 already give here).

  python -m itit.train_tokenizer --config=configs/vqgan_shapes.py --workdir=DIR
  python -m itit.train_tokenizer --config=configs/vqgan_shapes.py:quick --workdir=DIR  # ~3 min

Presets (the `arg` after the colon, comma-separated): '' (the full run), 'quick' (fewer steps)
and 'laptop' (the laptop level: one-object 24x24 scenes, 8x8-pixel patches -> 3x3 = 9 tokens,
one per grid cell; docs/SHAPES.md), e.g. `configs/vqgan_shapes.py:laptop`.
"""
from configs import common
from configs import vqgan_maskgit


def get_config(arg=None):
  presets = common.presets(arg, 'configs/vqgan_shapes.py', valid=('quick', 'laptop'))
  config = vqgan_maskgit.get_config()
  config.total_steps = 1500
  config.batch_size = 32
  config.model.update(dict(
      image_size=32,
      filters=32,
      channel_multipliers=[1, 2, 2],  # 2 downsamplings: 32 -> 8
      num_res_blocks=1,
      embedding_dim=16,
      # 128 codes: fewer context-dependent codes for the same content, which ITIT learns
      # faster than 512 (docs/SHAPES.md); still 100% exact reconstructions.
      codebook_size=128,
      norm_groups=8,
      encoder='patch_mlp',
      patch_mlp_width=128,
      patch_mlp_depth=2,
  ))
  config.data.update(dict(source='shapes', num_eval=1000))
  config.optimizer.update(dict(lr=2e-3, b1=0.9, b2=0.99, warmup_steps=50, schedule='cosine'))
  config.loss.update(dict(l1_weight=1.0, l2_weight=1.0, adversarial_weight=0.0))
  # Error-weighted restarts: 72% of the world's 4x4 patches are plain background; with the CNN
  # encoder, uniform restarts split it into hundreds of context-dependent codes (a blank area's
  # tokens then look random to ITIT, whose masked-token accuracy stayed near 14%); they also
  # spend dead codes where reconstruction is worst, i.e. on object edges.
  config.codebook.update(dict(ema_decay=0.9, restart_every=20, restart_min_count=1,
                              restart_until=0.8, restart_sampling='error'))
  config.log_every = 50
  config.image_every = 500
  config.checkpoint_every = 500
  config.eval_batch_size = 100

  if 'laptop' in presets:
    _laptop(config)
  if 'quick' in presets:
    config.total_steps = min(config.total_steps, 600)
    config.image_every = config.checkpoint_every = 300
  return config


def _laptop(config):
  """One object centred in one of 9 cells of a 24x24 image: a token per cell, 65 distinct
  patches (the background and 8 colours x 4 shapes x 2 sizes), so every reconstruction can be
  exact; evaluated on all 576 one-object scenes."""
  config.total_steps = 1500  # 100% exact reconstructions of all 576 scenes (2.5 min on 2 cores)
  config.model.update(dict(image_size=24, channel_multipliers=[1, 2, 2, 2]))
  config.data.update(dict(max_objects=1, num_eval=576))
  config.image_every = config.checkpoint_every = 500

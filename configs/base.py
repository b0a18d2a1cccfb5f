"""The paper's ITIT (table 3 recipe, table 2 row 14), shared by every other ITIT config.

  python -m itit.train --config=configs/base.py --workdir=DIR        # ITIT-B, row 14
  python -m itit.train --config=configs/base.py:row3 --workdir=DIR   # the paired baseline

Presets after the colon (`configs/common.py`): `rowN` = table 2 row N (`TABLE2_ROWS`); no row
means row 14, the paper's model: T2I, I2T (+ I2I), T2I2T and I2T2I on the paired,
unpaired-image and unpaired-text streams. `fast_cycles`: the cycles' pseudo pairs from the
cheap synthesis the cheap-cycles study recommends (`FAST_CYCLES`), e.g. `:row14,fast_cycles`.
Every ITIT config file (vit_b/l/h, shapes, tiny) builds on `paper_config()` and honours the
same presets through `get_itit_config`.
Command-line overrides: `--config=configs/vit_b.py --config.optimizer.lr=3e-4`.
"""
import ml_collections

from configs import common
from configs import t5_xxl
from itit import evaluation
from itit.losses.registry import DEFAULT_WEIGHTS
from itit.losses.registry import TABLE2_ROWS


# The joint encoder (and MAGE image decoder) of ITIT-B / L / H: ViT-B/L/H widths and depths.
# With the 768-wide GIT text decoder they give the paper's 221M / 487M / 868M totals.
ENCODER_SIZES = {
    'B': dict(width=768, depth=12, num_heads=12, mlp_dim=3072),
    'L': dict(width=1024, depth=24, num_heads=16, mlp_dim=4096),
    'H': dict(width=1280, depth=32, num_heads=16, mlp_dim=5120),
}


def model_config(size='B'):
  """ITIT-`size`: ViT joint encoder, 6-block GIT text decoder, 8-block MAGE image decoder."""
  return ml_collections.ConfigDict(dict(
      image_grid=16,  # 16x16 = 256 image tokens
      image_vocab_size=8192,  # VQGAN codebook size
      text_vocab_size=32128,  # T5 SentencePiece vocabulary, padded
      max_text_len=64,
      **ENCODER_SIZES[size],
      # Image position tables: 'normal' (learned, N(0, 0.02) init) or 'sincos2d' (MAE's 2D
      # sin-cos init, times image_position_init_scale, then trained).
      image_position_init='normal',
      image_position_init_scale=1.0,
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
      # jax.nn.dot_product_attention implementation: None (let JAX pick), 'xla' or 'cudnn'. On
      # an H200 the row-14 step ran 1.9x slower with cuDNN than with XLA (docs/BENCHMARKS.md).
      attention_impl=ml_collections.config_dict.placeholder(str),
      # Activation recomputation in the backward pass: 'none', 'full' or 'dots' (keep the weight
      # matmuls' outputs). scan_layers: each stack as one nn.scan (faster compiles; its
      # parameters are stacked under 'blocks', a different checkpoint layout).
      remat='none',
      scan_layers=False,
      # The paper's text encoder: the frozen T5-XXL (configs/t5_xxl.py); `path` must name a
      # local Hugging Face T5 directory. kind='learned' trains the small encoder of `learned`
      # jointly instead (smoke runs without the 19 GB of T5 weights, CPU configs).
      text_encoder=ml_collections.ConfigDict(dict(
          kind='t5',  # 't5' (frozen, pretrained) or 'learned' (T5-architecture, trained)
          path='',  # a local Hugging Face T5 directory (config.json, *.safetensors), kind='t5'
          t5=t5_xxl.get_config(),  # the frozen encoder's architecture, checked against path
          learned=ml_collections.ConfigDict(dict(width=768, depth=4, num_heads=12,
                                                 mlp_dim=2048)),
      )),
  ))


def get_config(arg=None):
  return get_itit_config(paper_config(), arg, 'configs/base.py')


def paper_config(size='B'):
  """ITIT-`size` ('B', 'L', 'H') with the paper's recipe and full model (row 14), no preset."""
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
      # Per-stream record limits: train on the FIRST n records of the stream's shards (0 = all).
      # The study (experiments/shapes_study) grows the unpaired data, or the pairs, with these.
      max_records=ml_collections.ConfigDict(dict(paired=0, unpaired_image=0, unpaired_text=0)),
  ))
  # Examples read per step from each stream (table 3: 2048 in all). With paired_split the
  # paired batch is cut in two halves of DIFFERENT examples, one for T2I and one for I2T/I2I
  # (the paper's 512 + 512); without it (small runs) both losses read the whole paired batch.
  config.batch = ml_collections.ConfigDict(dict(
      paired=1024,
      paired_split=True,
      unpaired_image=512,
      unpaired_text=512,
  ))
  config.model = model_config(size)
  config.loss = ml_collections.ConfigDict(dict(
      label_smoothing=0.1,
      i2t_encoder_grad_scale=0.1,  # z = 0.1 z + stop_gradient(0.9 z) before the text decoder
      mask_ratio_mode=0.75,  # truncated Gaussian over the image mask ratio
      mask_ratio_std=0.25,
      mask_ratio_min=0.5,
      mask_ratio_max_t2i=1.0,
      mask_ratio_max_i2t=0.75,
      # 'truncated_gaussian' (the paper's, above) or 'cosine' (MaskGIT: the ratios decoding
      # meets, down to one masked token; the T2I encoder pass then drops nothing). T2I only:
      # the T2I loss and the cycles' T2I reconstructions (itit/losses/common.py t2i_image_mask).
      t2i_mask_schedule='truncated_gaussian',
      # Loss switches: the paper's table 2 rows are presets of these.
      t2i=True,
      i2t=True,
      i2i=True,  # image-to-image reconstruction with the empty text, for classifier-free guidance
      # Losses on unpaired data (section 3.2); the default is row 14's full cycles, and
      # `table2_row` sets these for the paper's other rows.
      unpaired_text_loss='t2i2t',  # 'none' | 't2t' | 't2i2t_half' | 't2i2t'
      unpaired_image_loss='i2t2i',  # 'none' | 'i2i' | 'i2t2i_half' | 'i2t2i'
      # Each loss's weight in the sum, by its name in itit/losses/registry.py (1.0 everywhere =
      # the paper's equal weights; 'i2t' covers I2T + paired I2I; 'unpaired_i2i' is I2I on
      # unpaired images).
      weights=ml_collections.ConfigDict(dict(DEFAULT_WEIGHTS)),
  ))
  # Pseudo-pair synthesis inside the cycle losses (paper section 3.2, appendix B).
  config.cycle = ml_collections.ConfigDict(dict(
      synthesis_steps=24,  # T2I parallel-decoding steps for the pseudo image I'
      guidance_scale=2.0,  # classifier-free guidance tau in that synthesis; 0 = off
      temperature=32.0,  # confidence-noise temperature in that synthesis
      # Token sampling temperature in that synthesis (1.0 = sample softmax(logits), the
      # paper's Muse decoding); below 1 draws nearer the mode.
      sample_temperature=1.0,
      gumbel_strength=1.0,  # Gumbel noise scale in T2I2T's straight-through; 0 = plain argmax
      # Not in the paper (True: T2I2T trains the captioning pass too, eq. 3): False makes that
      # pass a fixed critic, so unpaired text trains only T2I through it, and a weak T2I's
      # pseudo images cannot teach the captioner wrong captions (docs/SHAPES.md).
      t2i2t_trains_captioner=True,
      # Not in the paper (1: a fresh pseudo pair every step, the paper's on-line synthesis):
      # each pseudo pair serves this many steps, synthesized every reuse-th step from that
      # step's unpaired batches and kept in the train state; the steps between train on it
      # with up to reuse - 1 updates' staleness and leave their own unpaired batches unread.
      # Synthesis costs 1 / reuse of its on-line price (docs/DESIGN_NOTES.md).
      reuse=1,
      # Stop the gradient after the encoder's first forward pass in each cycle (appendix B).
      stop_first_encoder_grad=True,
      # Not in the paper (1.0: the cycles train the joint encoder as the paired losses do): the
      # gradient the cycle losses give the joint encoder's own parameters is scaled by this
      # (0: only the decoders and the text encoder learn from unpaired data; the signal still
      # passes through the encoder to them). At the laptop level the cycles' T2I passes pull
      # the encoder that captioning shares across captioning's direction (docs/SHAPES.md).
      encoder_grad_scale=1.0,
      # Not in the paper (0: cycles from the first step): the cycle losses join at this step,
      # the steps before it train on the other losses only and skip the synthesis. For short
      # runs, whose early pseudo pairs are noise
      # (docs/results/standard_2026-11-28/ANALYSIS.md).
      start_step=0,
  ))
  config.optimizer = ml_collections.ConfigDict(dict(
      name='adafactor',
      lr=1e-4,
      warmup_steps=5000,
      schedule='cosine',
      b1=0.9,
      # Table 3's beta2: the second-moment decay at update t, by b2_schedule (docs/DESIGN_NOTES.md):
      # 'capped' min(b2, 1 - t^-0.8), big_vision's Adafactor (b2 from update 56 on); 'constant'
      # b2 (no bias correction: the first updates are up to 1/sqrt(1 - b2) = 5x larger);
      # 'exponent' 1 - t^-b2, optax's decay_rate (b2 is the exponent: ~0.9997 by update 5000).
      # AdamW takes b2 as its bias-corrected beta2; b2_schedule is Adafactor's only.
      b2=0.96,
      b2_schedule='capped',
      weight_decay=0.045,
      grad_clip=3.0,
  ))
  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  # 'halt' raises naming the step range; 'skip' drops the update and counts it.
  config.nan_policy = 'halt'
  # The training step's random bits (dropout, masks, synthesis): 'threefry2x32' (JAX's default:
  # the same bits on every backend and mesh) or 'rbg' / 'unsafe_rbg' (XLA's RngBitGenerator,
  # for accelerators: its bits depend on the backend and may change with the mesh).
  # Evaluation keys stay threefry2x32. A run resumes only with the impl it started with.
  config.prng_impl = 'threefry2x32'
  config.log_every = 100
  config.checkpoint_every = 5000
  config.keep_checkpoints = 3
  config.eval_every = 10_000
  # Evaluators run every eval_every steps and at the end (itit/evaluation: every setting and
  # its default); eval.shapes turns on the shapes world's generation metrics.
  config.eval = evaluation.default_config()
  config.max_steps_per_run = 0  # > 0: stop (with a checkpoint) after this many steps per run
  config.eval_batches = 0  # test batches evaluated at the end; 0 = the whole test split
  return config


def table2_row(config, row):
  """Sets the loss switches (and, for row 13, the streams) of table 2's `row`, in place.

  Row 1 (T2I only) keeps I2I on the paired images: it trains the unconditional branch that
  guided sampling needs. Row 2 (I2T only) has no I2I: nothing samples images. Row 13 reads the
  paired shards' own texts and images as its unpaired streams. Row 4 (more data as pairs) is a
  data choice, not a preset.
  """
  if row == 4:
    raise ValueError('table 2 row 4 adds the unpaired data AS PAIRS: point data.paired at the '
                     'merged pairs and use row3')
  if row not in TABLE2_ROWS:
    raise ValueError(f'table 2 preset row{row} does not exist; use one of '
                     f'{", ".join(f"row{r}" for r in TABLE2_ROWS)}')
  t2i, i2t, text_loss, image_loss = TABLE2_ROWS[row]
  config.loss.update(dict(t2i=t2i, i2t=i2t, i2i=t2i, unpaired_text_loss=text_loss,
                          unpaired_image_loss=image_loss))
  if row == 13:
    config.data.unpaired_image = config.data.paired
    config.data.unpaired_text = config.data.paired
  return config


ROW_PRESETS = tuple(f'row{row}' for row in TABLE2_ROWS)

# The cheap pseudo-pair synthesis the cheap-cycles study recommends (docs/results/cheap_cycles,
# docs/DESIGN_NOTES.md): at ITIT-B its step costs 1.44x the paired step's FLOPs (the paper's
# 24 guided steps: 2.76x; `python -m benchmarks.cycle_flops --settings=paper,fast_cycles`), and
# at the laptop level its quality was within 3 seeds' noise of the paper's synthesis.
FAST_CYCLES = dict(synthesis_steps=4, guidance_scale=0.0, reuse=1)


def fast_cycles(config):
  """The `fast_cycles` preset: the cycles' pseudo pairs from FAST_CYCLES' synthesis instead of
  the paper's. Losses, data and the rest of config.cycle stay as they are."""
  config.cycle.update(FAST_CYCLES)


# Presets every ITIT config file takes besides the rows and its own.
SHARED_PRESETS = {'fast_cycles': fast_cycles}


def get_itit_config(config, arg, config_file, extra_presets=None):
  """Applies `--config=FILE:ARG`'s presets to an ITIT config, in place; returns it.

  Args:
    config: the file's config before presets (row 14, the paper's model).
    arg: the comma-separated presets: at most one table-2 row ('rowN', `table2_row`) plus any
      of `extra_presets`.
    config_file: the file as users name it, for messages.
    extra_presets: {name: fn(config)} the file documents besides the rows and SHARED_PRESETS;
      these and the shared ones apply after the row, in the order given on the command line.
  Raises:
    ValueError: an unknown preset (listing the valid ones), or two rows.
  """
  extra_presets = {**SHARED_PRESETS, **(extra_presets or {})}
  if 'row4' in common.split_arg(arg):
    raise ValueError(f'{config_file}: table 2 row 4 adds the unpaired data AS PAIRS, a data '
                     'choice, not a preset (point data.paired at the merged pairs and use :row3)')
  names = common.presets(arg, config_file, ROW_PRESETS + tuple(extra_presets),
                         exclusive=[ROW_PRESETS])
  for name in names:
    if name in ROW_PRESETS:
      table2_row(config, int(name[len('row'):]))
  for name in names:
    if name in extra_presets:
      extra_presets[name](config)
  return config

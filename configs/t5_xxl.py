"""The paper's frozen T5-XXL text encoder: the `config.model.text_encoder` section and its sharding.

Not a full config: other configs use it, e.g.

  config = vit_b.get_config()
  t5_xxl.use_t5(config, 'flan', '/data/flan-t5-xxl')

or set the section alone with `config.model.text_encoder = t5_xxl.get_config('v1_1')` and
`--config.model.text_encoder.path=...`. Variants (same architecture, different weights):
  'v1_1': google/t5-v1_1-xxl,  'flan': google/flan-t5-xxl.
The loader checks these fields against the directory's config.json; for any other T5 size,
`itit.models.t5_loader.text_encoder_config(path)` builds the section from the directory.
"""
import ml_collections

from itit import partitioning

VARIANTS = ('v1_1', 'flan')


def get_config(arg='flan'):
  """The text_encoder section for T5-v1.1-XXL or Flan-T5-XXL (encoder: ~4.76B parameters)."""
  variant = arg or 'flan'
  if variant not in VARIANTS:
    raise ValueError(f'configs/t5_xxl.py: variant {variant!r} is not one of {VARIANTS}')
  return ml_collections.ConfigDict(dict(
      kind='t5',
      path='',  # the local Hugging Face directory (config.json, *.safetensors, spiece.model)
      vocab_size=32128,  # 32000 SentencePiece pieces + 100 sentinels, padded to 128
      width=4096,  # d_model
      depth=24,
      num_heads=64,
      head_dim=64,  # d_kv
      mlp_dim=10240,  # d_ff
      feed_forward_proj='gated-gelu',  # tanh-approximated GELU, as both were trained
      relative_buckets=32,
      relative_max_distance=128,
      norm_epsilon=1e-6,
  ))


def sharding_rules():
  """Logical-axis rules for a model with the XXL encoder, as `config.sharding_rules`.

  The frozen encoder's 4.76B float32 parameters (19 GB) do not fit replicated beside ITIT on
  most accelerators: its width ('embed', 4096) shards over fsdp, its heads (64), MLP (10240) and
  vocabulary (32128) over tensor, which every power-of-two mesh up to 64 divides. Activations
  keep 'embed' whole because 'batch' takes fsdp first.
  """
  # The project's defaults (which also shard biases), plus the T5 relative-bias table.
  return [[name, list(axes) if isinstance(axes, tuple) else axes]
          for name, axes in partitioning.DEFAULT_RULES] + [['relpos_buckets', None]]


def use_t5(config, variant='flan', path=''):
  """Switches a full config to the frozen T5-XXL encoder of `variant` at `path`."""
  config.model.text_encoder = get_config(variant)
  config.model.text_encoder.path = path
  config.model.text_vocab_size = config.model.text_encoder.vocab_size
  config.sharding_rules = sharding_rules()
  return config

"""The paper's frozen text encoder, T5-XXL: the `config.model.text_encoder.t5` section.

Not a full config: `configs/base.py` puts it in every paper-scale config, where
`--config.model.text_encoder.path=DIR` names a local Hugging Face directory with the weights
(config.json, *.safetensors, spiece.model). T5-v1.1-XXL (google/t5-v1_1-xxl) and Flan-T5-XXL
(google/flan-t5-xxl) share this architecture and differ only in their weights. The loader checks
these fields against the directory's config.json; for any other T5 size,
`itit.models.t5_loader.text_encoder_config(path)` builds the section from the directory.
"""
import ml_collections

from configs import common


def get_config(arg=None):
  """The T5-XXL encoder's architecture (~4.76B parameters). Takes no preset."""
  common.presets(arg, 'configs/t5_xxl.py', valid=())
  return ml_collections.ConfigDict(dict(
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

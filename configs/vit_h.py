"""ITIT-H (paper: 868M parameters without T5): ViT-H joint encoder and image decoder."""
from configs import base


def get_config(arg=None):
  del arg
  config = base.get_config()
  config.model.width = 1280
  config.model.depth = 32
  config.model.num_heads = 16
  config.model.mlp_dim = 5120
  return config

"""ITIT-L (paper: 487M parameters without T5): ViT-L joint encoder and image decoder."""
from configs import base


def get_config(arg=None):
  del arg
  config = base.get_config()
  config.model.width = 1024
  config.model.depth = 24
  config.model.num_heads = 16
  config.model.mlp_dim = 4096
  return config

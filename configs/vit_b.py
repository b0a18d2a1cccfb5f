"""ITIT-B (paper: 221M parameters without T5): ViT-B/16-size joint encoder.

Until the frozen T5 text encoder lands, the text encoder is the jointly trained 'learned' one.
"""
from configs import base


def get_config(arg=None):
  del arg
  return base.get_config()  # base.model_config() is ITIT-B

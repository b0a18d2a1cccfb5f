"""ITIT-H (paper: 868M parameters without T5): ViT-H joint encoder, frozen T5-XXL text encoder.

Presets as configs/vit_b.py: no preset = table 2 row 14, `:rowN` = row N.
"""
from configs import base


def get_config(arg=None):
  return base.get_itit_config(base.paper_config('H'), arg, 'configs/vit_h.py')

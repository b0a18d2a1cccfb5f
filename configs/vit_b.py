"""ITIT-B (paper: 221M parameters without T5): ViT-B joint encoder, frozen T5-XXL text encoder.

  python -m itit.train --config=configs/vit_b.py --workdir=DIR \
      --config.model.text_encoder.path=/data/t5-v1_1-xxl --config.data.dir=SHARDS

No preset: table 2 row 14 (the paper's ITIT); `:row3` is the paired baseline, `:rowN` any row
of the table-2 ablation (which the paper runs at this size). Smoke run without T5 weights:
`--config.model.text_encoder.kind=learned`.
"""
from configs import base


def get_config(arg=None):
  return base.get_itit_config(base.paper_config('B'), arg, 'configs/vit_b.py')

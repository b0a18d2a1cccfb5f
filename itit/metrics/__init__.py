"""Evaluation metrics: captioning scores (`cider`), the FID network (`inception`) and FID (`fid`).

Submodules are imported explicitly (`from itit.metrics import fid`): `cider` needs pycocoevalcap
and Java, `inception` and `fid` need jax, and neither should cost the other its import time.
"""

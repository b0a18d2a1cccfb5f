"""Evaluation metrics: captioning scores (`cider`), the FID network (`inception`) and FID (`fid`).

Submodules are imported explicitly (`from itit.evaluation.metrics import fid`): `cider` needs
pycocoevalcap (and Java, or its PTB fallback), `inception` and `fid` need jax, and neither
should cost the other its import time.
"""

"""ITIT's objective, by the paper's names.

- `paired`: eq. (1) `i2t_loss` (captioning, + the I2I term), eq. (2) `t2i_loss`, and `i2i_loss`.
- `cycles`: eq. (3) `t2i2t_loss`, eq. (4) `i2t2i_loss`, the pseudo-pair synthesis and the
  straight-through estimators they use.
- `baselines`: `t2t_loss` (table 2 rows 5 and 7).
- `common`: cross-entropies, teacher forcing, the image masks, the gradient scale.
- `registry`: every loss -> its stream, function, FLOPs and default weight; table 2's rows.
"""

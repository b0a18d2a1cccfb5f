"""Decoding: the algorithms, and the model bound to them.

- `parallel`: MaskGIT/Muse parallel decoding of image tokens (T2I), with `mask_schedule`.
- `autoregressive`: greedy and beam-search captioning over a KV cache (I2T).
- `generate`: the ITIT model as the functions those loops call: `generate_images`,
  `generate_captions`, `cycle_chain`, and their jitted forms.
"""

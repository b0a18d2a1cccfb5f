"""The ITIT model bound to the decoding algorithms: text->image, image->text, and cycle chains.

`itit.decoding.parallel` and `itit.decoding.autoregressive` know nothing of the model; this
module supplies them with the model as functions. Every sampler is one jitted function over
(params, inputs, rng).

Inference never removes image tokens from the encoder's sequence (`num_dropped=0`): removal
assumes at least `num_dropped` masked tokens, which stops being true as decoding fills the image
in. By default (MAGE's choice) every masked token then enters the encoder as [MASK];
`train_matched_drop=True` instead hides up to `model.num_dropped` masked tokens from attention
(`ITIT.encode(drop_up_to=...)`), which is what training showed the encoder and image decoder.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from itit.decoding import autoregressive
from itit.decoding import parallel
from itit.models.itit import apply_method
from itit.models.itit import ITIT
from itit.models.token_ids import BOS_ID
from itit.models.token_ids import EOS_ID
from itit.models.token_ids import PAD_ID


def image_logits_fn(model: ITIT, params, text_features, text_mask, guidance_scale: float,
                    train_matched_drop: bool = False):
  """logits_fn for `parallel.parallel_decode`: conditional and unconditional logits.

  Both come from ONE encoder + image-decoder pass over a 2B batch: the prompts' text features
  and the empty text (padded to the prompts' length).

  Args:
    text_features: [B, L, D_text] of the prompts; text_mask: [B, L] bool.
    train_matched_drop: hide up to model.num_dropped masked tokens from the encoder (see above).
  """
  batch, length = text_mask.shape
  drop = dict(drop_up_to=model.config.num_dropped) if train_matched_drop else {}
  if guidance_scale:
    empty_features, empty_mask = apply_method(model, params, None, ITIT.empty_text, batch,
                                              length)
    both_features = jnp.concatenate([text_features, empty_features.astype(text_features.dtype)])
    both_mask = jnp.concatenate([text_mask, empty_mask])

  def logits_fn(tokens, unknown):
    # The [MASK] id lies outside the codebook; the encoder reads `unknown` instead.
    known_tokens = jnp.where(unknown, 0, tokens)
    if not guidance_scale:
      encoded = apply_method(model, params, None, ITIT.encode, known_tokens, unknown,
                             text_features, text_mask, num_dropped=0, **drop)
      return apply_method(model, params, None, ITIT.decode_image, encoded), None
    encoded = apply_method(model, params, None, ITIT.encode,
                           jnp.concatenate([known_tokens] * 2), jnp.concatenate([unknown] * 2),
                           both_features, both_mask, num_dropped=0, **drop)
    logits = apply_method(model, params, None, ITIT.decode_image, encoded)
    return logits[:batch], logits[batch:]

  return logits_fn


def generate_images(params, text_ids, rng, *, model: ITIT, num_steps: int = 24,
                    guidance_scale: float = 2.0, temperature: float = 32.0,
                    sample_temperature: float = 1.0, top_k: int | None = None,
                    top_p: float | None = None, return_history: bool = False,
                    train_matched_drop: bool = False):
  """Text ids [B, L] -> image tokens [B, N] by Muse-style parallel decoding (paper app. B).

  Defaults are the paper's: 24 steps, guidance tau = 2.0, confidence-noise temperature 32.
  """
  c = model.config
  text_mask = text_ids != PAD_ID
  text_features = apply_method(model, params, None, ITIT.encode_text, text_ids)
  logits_fn = image_logits_fn(model, params, text_features, text_mask, guidance_scale,
                              train_matched_drop)
  return parallel.parallel_decode(
      rng, logits_fn, batch_size=text_ids.shape[0], num_tokens=c.image_grid ** 2,
      mask_token_id=c.image_vocab_size, num_steps=num_steps, guidance_scale=guidance_scale,
      temperature=temperature, sample_temperature=sample_temperature, top_k=top_k, top_p=top_p,
      return_history=return_history)


def _caption_step_fn(model: ITIT, params, encoded):
  """step_fn for `sampling_text`: one cached decoder step per token."""

  def step_fn(cache, token, position):
    del position  # the cache tracks its own position
    logits, updated = model.apply(
        {'params': params, 'cache': cache}, encoded, token[:, None], deterministic=True,
        decode=True, method=ITIT.decode_text, mutable=['cache'])
    return logits[:, 0], updated['cache']

  return step_fn


def _prime_cache(model: ITIT, params, encoded, max_len: int):
  """A cache holding the encoder features' keys and values, and no text yet."""
  empty_text = jnp.zeros((encoded.features.shape[0], 0), jnp.int32)
  _, variables = model.apply(
      {'params': params}, encoded, empty_text, deterministic=True, decode=True,
      max_decode_len=max_len + 1, method=ITIT.decode_text, mutable=['cache'])
  return variables['cache']


def encode_image_for_captioning(params, image_tokens, *, model: ITIT):
  """The full image (nothing masked) with the empty text -> EncoderOutput (eq. 1 at inference)."""
  mask = jnp.zeros(image_tokens.shape[:2], bool)
  return apply_method(model, params, None, ITIT.encode, image_tokens, mask, None, None,
                      num_dropped=0)


def generate_captions(params, image_tokens, *, model: ITIT, max_len: int | None = None,
                      beam_size: int = 1, length_penalty: float = 0.6):
  """Image tokens [B, N] -> caption ids [B, max_len] (EOS then padding), greedy or beam search.

  Beam search (paper app. B: beam 4, following GIT) returns the best hypothesis per image.
  Returns (ids [B, max_len], score [B]): log-probability (greedy) or normalised score (beam).
  """
  max_len = max_len or model.config.max_text_len
  batch = image_tokens.shape[0]
  encoded = encode_image_for_captioning(params, image_tokens, model=model)
  if beam_size == 1:
    cache = _prime_cache(model, params, encoded, max_len)
    return autoregressive.greedy_decode(
        _caption_step_fn(model, params, encoded), cache, batch_size=batch, max_len=max_len,
        bos_id=BOS_ID, eos_id=EOS_ID)
  beams_encoded = autoregressive.expand_to_beams(encoded, batch, beam_size)
  cache = _prime_cache(model, params, encoded, max_len)
  ids, scores = autoregressive.beam_search(
      _caption_step_fn(model, params, beams_encoded), cache, batch_size=batch,
      beam_size=beam_size, max_len=max_len, length_penalty=length_penalty, bos_id=BOS_ID,
      eos_id=EOS_ID)
  return ids[:, 0], scores[:, 0]


def cycle_chain(params, text_ids, rng, *, model: ITIT, length: int, image_kwargs=None,
                caption_kwargs=None) -> list[dict[str, Any]]:
  """T -> I -> T -> I ... (the paper's figures 6 and 10): `length` image/caption rounds.

  Returns a list of {'image_tokens': [B, N], 'text_ids': [B, L]}: round r's image is made from
  the previous round's text (round 0 from `text_ids`) and its caption from that image.
  """
  image_kwargs = image_kwargs or {}
  caption_kwargs = caption_kwargs or {}
  text_len = text_ids.shape[1]
  rounds = []
  for r in range(length):
    image_tokens = generate_images(params, text_ids, jax.random.fold_in(rng, r), model=model,
                                   **image_kwargs)
    caption_ids, _ = generate_captions(params, image_tokens, model=model, max_len=text_len,
                                       **caption_kwargs)
    text_ids = caption_ids  # EOS then padding: already the shards' text layout
    rounds.append({'image_tokens': image_tokens, 'text_ids': text_ids})
  return rounds


def jit_image_sampler(model: ITIT, **kwargs):
  """jit(params, text_ids [B, L], rng) -> image tokens [B, N], sampling settings fixed."""
  return jax.jit(functools.partial(generate_images, model=model, **kwargs))


def jit_captioner(model: ITIT, **kwargs):
  """jit(params, image_tokens [B, N]) -> (ids [B, L], scores [B]), decoding settings fixed."""
  return jax.jit(functools.partial(generate_captions, model=model, **kwargs))

"""Losses on paired data, named after the paper: eq. (1) I2T (+ I2I), eq. (2) T2I, and I2I alone.

Each loss is `(params, batch, rng, *, model, config, deterministic=False) -> (loss, metrics)`
(deterministic=True: no dropout, for evaluation); the train step binds `model` (an `ITIT`) and
`config` (the full config) with functools.partial. `params` is the 'params' collection (boxed or
unboxed); `batch` = {'image_tokens': int32 [B, N], 'text_ids': int32 [B, L]} with T5 ids.
"""
import jax
import jax.numpy as jnp

from itit.losses import common
from itit.models.itit import apply_method
from itit.models.itit import ITIT
from itit.models.token_ids import PAD_ID


def i2t_loss(params, batch, rng, *, model, config, deterministic=False):
  """Eq. (1): captioning from the masked image and the EMPTY text, plus the I2I term.

  The encoder output reaches the text decoder through `scale_gradient` (the encoder learns less
  from captioning than the decoder); the I2I term (config.loss.i2i: reconstruct the masked image
  tokens from the same encoder pass, no text) is unscaled and trains the unconditional branch
  of classifier-free guidance.
  """
  image_tokens, text_ids = batch['image_tokens'], batch['text_ids']
  batch_size, num_tokens = image_tokens.shape
  mask_rng, encode_rng, text_rng, image_rng = jax.random.split(rng, 4)
  mask = common.i2t_image_mask(mask_rng, batch_size, num_tokens, config)
  encoded = apply_method(model, params, encode_rng, ITIT.encode, image_tokens, mask,
                         deterministic=deterministic)
  scaled = encoded.replace(
      features=common.scale_gradient(encoded.features, config.loss.i2t_encoder_grad_scale))
  text_logits = apply_method(model, params, text_rng, ITIT.decode_text, scaled,
                             common.decoder_input(text_ids), deterministic=deterministic)
  loss_i2t, text_accuracy = common.lm_loss(text_logits, text_ids, config.loss.label_smoothing)
  metrics = {'i2t_loss': loss_i2t, 'i2t_token_accuracy': text_accuracy}
  loss = loss_i2t
  if config.loss.i2i:
    loss_i2i, image_accuracy = common.image_reconstruction_loss(
        params, encoded, image_tokens, mask, image_rng, model=model, config=config,
        deterministic=deterministic)
    metrics.update(i2i_loss=loss_i2i, i2i_masked_token_accuracy=image_accuracy)
    loss = loss + loss_i2i
  return loss, metrics


def t2i_loss(params, batch, rng, *, model, config, deterministic=False):
  """Eq. (2): masked image modelling conditioned on the paired text, masked positions only."""
  image_tokens, text_ids = batch['image_tokens'], batch['text_ids']
  batch_size, num_tokens = image_tokens.shape
  mask_rng, text_rng, encode_rng, image_rng = jax.random.split(rng, 4)
  mask, num_dropped = common.t2i_image_mask(mask_rng, batch_size, num_tokens, config)
  encoded = common.encode_with_text(params, image_tokens, mask, text_ids, text_rng, encode_rng,
                                    model=model, num_dropped=num_dropped,
                                    deterministic=deterministic)
  image_logits = apply_method(model, params, image_rng, ITIT.decode_image, encoded,
                              deterministic=deterministic)
  loss, accuracy = common.masked_token_loss(image_logits, image_tokens, mask,
                                            config.loss.label_smoothing)
  return loss, {'t2i_loss': loss, 't2i_masked_token_accuracy': accuracy}


def i2i_loss(params, batch, rng, *, model, config, deterministic=False):
  """Masked-token reconstruction of {'image_tokens': [B, N]} with the empty text, I2T's mask:
  the I2I term of eq. (1) on its own (table 2 row 1 on pairs; rows 6-7 on unpaired images)."""
  image_tokens = batch['image_tokens']
  batch_size, num_tokens = image_tokens.shape
  mask_rng, encode_rng, image_rng = jax.random.split(rng, 3)
  mask = common.i2t_image_mask(mask_rng, batch_size, num_tokens, config)
  encoded = apply_method(model, params, encode_rng, ITIT.encode, image_tokens, mask,
                         deterministic=deterministic)
  loss, accuracy = common.image_reconstruction_loss(
      params, encoded, image_tokens, mask, image_rng, model=model, config=config,
      deterministic=deterministic)
  return loss, {'i2i_loss': loss, 'i2i_masked_token_accuracy': accuracy}


def teacher_forced_ids(params, image_tokens, text_ids, *, model):
  """Teacher-forced captioning of the WHOLE image (inference's condition: nothing masked):
  the decoder's argmax at every position given the true prefix, [B, L] int32."""
  nothing_masked = jnp.zeros(image_tokens.shape, bool)
  encoded = apply_method(model, params, None, ITIT.encode, image_tokens, nothing_masked,
                         num_dropped=0)
  logits = apply_method(model, params, None, ITIT.decode_text, encoded,
                        common.decoder_input(text_ids))
  return jnp.argmax(logits, -1).astype(jnp.int32)


def i2t_full_image_metrics(params, batch, *, model):
  """Teacher-forced captioning of the whole image (`teacher_forced_ids`).

  Returns {'i2t_full_image_token_accuracy', 'i2t_full_image_sequence_accuracy'}: the fraction
  of target tokens (EOS included) predicted right, and of captions predicted right entirely.
  """
  text_ids = batch['text_ids']
  predicted = teacher_forced_ids(params, batch['image_tokens'], text_ids, model=model)
  weights = text_ids != PAD_ID
  correct = (predicted == text_ids) | ~weights
  return {
      'i2t_full_image_token_accuracy':
          jnp.sum(correct & weights) / jnp.maximum(jnp.sum(weights), 1),
      'i2t_full_image_sequence_accuracy': jnp.mean(jnp.all(correct, axis=-1)),
  }

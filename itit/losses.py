"""Losses on paired data, named after the paper: eq. (1) I2T (+ I2I), eq. (2) T2I.

Each loss is `(params, batch, rng, *, model, config, deterministic=False) -> (loss, metrics)`
(deterministic=True: no dropout, for evaluation); the train step binds
`model` (an `ITIT`) and `config` (the full config) with functools.partial. `params` is the
'params' collection (boxed or unboxed); `batch` = {'image_tokens': int32 [B, N],
'text_ids': int32 [B, L]} with T5 ids (pad 0, EOS 1). The text decoder reads [BOS] + ids[:-1]
(BOS = pad = 0, T5's decoder start) and predicts ids at every non-pad position, EOS included.

The lower-level helpers (`weighted_cross_entropy`, `lm_loss`, `masked_token_loss`,
`scale_gradient`, `sample_image_mask`) are what the cycle losses reuse.
"""
import jax
import jax.numpy as jnp

from itit import masking
from itit.models.itit import ITIT

BOS_ID = 0
PAD_ID = 0


def scale_gradient(x, scale):
  """Identity forward, gradient times `scale` backward.

  The paper writes z = 0.1 z + stop_gradient(0.9 z); this form has the same gradient and a
  forward value bitwise equal to z.
  """
  x_stopped = jax.lax.stop_gradient(x)
  return x_stopped + scale * (x - x_stopped)


def weighted_cross_entropy(logits, targets, weights, label_smoothing=0.0):
  """Label-smoothed softmax cross-entropy averaged over the weighted positions.

  Smoothing as `optax.smooth_labels`: (1 - a) one_hot + a / num_classes.

  Args:
    logits: [..., num_classes] float.
    targets: [...] int.
    weights: [...] bool or float (0 = ignored).
    label_smoothing: a.
  Returns:
    (loss, accuracy): scalars, means over the weighted positions (argmax accuracy).
  """
  logits = logits.astype(jnp.float32)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  target_log_prob = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  # sum_c smoothed_c * -log p_c with smoothed = (1 - a) one_hot + a / C.
  per_token = -((1.0 - label_smoothing) * target_log_prob
                + label_smoothing * jnp.mean(log_probs, axis=-1))
  weights = weights.astype(jnp.float32)
  denominator = jnp.maximum(jnp.sum(weights), 1.0)
  loss = jnp.sum(per_token * weights) / denominator
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  accuracy = jnp.sum(correct * weights) / denominator
  return loss, accuracy


def decoder_input(text_ids):
  """Teacher forcing: [BOS] + ids[:-1], [B, L] int32."""
  bos = jnp.full((text_ids.shape[0], 1), BOS_ID, text_ids.dtype)
  return jnp.concatenate([bos, text_ids[:, :-1]], axis=1)


def lm_loss(logits, text_ids, label_smoothing=0.0):
  """LM cross-entropy on every non-pad target (EOS included). -> (loss, token accuracy)."""
  return weighted_cross_entropy(logits, text_ids, text_ids != PAD_ID, label_smoothing)


def masked_token_loss(logits, image_tokens, mask, label_smoothing=0.0):
  """Cross-entropy on the masked image positions only. -> (loss, masked-token accuracy)."""
  return weighted_cross_entropy(logits, image_tokens, mask, label_smoothing)


def sample_image_mask(rng, batch, num_tokens, loss_config, max_ratio, min_masked):
  """Mask ratio ~ truncated Gaussian (config.loss.mask_ratio_*), then a random mask [B, N]."""
  ratio_rng, mask_rng = jax.random.split(rng)
  ratio = masking.sample_mask_ratio(
      ratio_rng, (batch,), mode=loss_config.mask_ratio_mode, std=loss_config.mask_ratio_std,
      min=loss_config.mask_ratio_min, max=max_ratio)
  return masking.random_mask(mask_rng, batch, num_tokens, ratio, min_masked)


def t2i_image_mask(rng, batch, num_tokens, config):
  """The mask of a T2I reconstruction [B, N] and the `num_dropped` its encoder pass uses.

  config.loss.t2i_mask_schedule: 'truncated_gaussian' (the paper's: ratios >= mask_ratio_min,
  `model.num_dropped` masked tokens dropped from the encoder) or 'cosine' (MaskGIT's: every
  ratio that cosine-schedule decoding meets, down to one masked token; nothing is dropped and
  the masked tokens enter the encoder as [MASK], as at inference).
  """
  schedule = config.loss.get('t2i_mask_schedule', 'truncated_gaussian')
  if schedule == 'cosine':
    ratio_rng, mask_rng = jax.random.split(rng)
    ratio = masking.cosine_mask_ratio(ratio_rng, (batch,))
    return masking.random_mask(mask_rng, batch, num_tokens, ratio), 0
  if schedule != 'truncated_gaussian':
    raise ValueError(
        f'loss.t2i_mask_schedule={schedule!r}: use one of {masking.T2I_MASK_SCHEDULES}')
  num_dropped = config.model.num_dropped
  return sample_image_mask(rng, batch, num_tokens, config.loss, config.loss.mask_ratio_max_t2i,
                           num_dropped), num_dropped


def _apply(model, params, rng, method, *args, deterministic=False, **kwargs):
  """model.apply with the 'dropout' rng; deterministic=True turns dropout off (evaluation)."""
  return model.apply({'params': params}, *args, deterministic=deterministic, method=method,
                     rngs={'dropout': rng}, **kwargs)


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
  mask = sample_image_mask(mask_rng, batch_size, num_tokens, config.loss,
                           config.loss.mask_ratio_max_i2t, config.model.num_dropped)
  encoded = _apply(model, params, encode_rng, ITIT.encode, image_tokens, mask,
                   deterministic=deterministic)
  scaled = encoded.replace(
      features=scale_gradient(encoded.features, config.loss.i2t_encoder_grad_scale))
  text_logits = _apply(model, params, text_rng, ITIT.decode_text, scaled,
                       decoder_input(text_ids), deterministic=deterministic)
  loss_i2t, text_accuracy = lm_loss(text_logits, text_ids, config.loss.label_smoothing)
  metrics = {'i2t_loss': loss_i2t, 'i2t_token_accuracy': text_accuracy}
  loss = loss_i2t
  if config.loss.i2i:
    image_logits = _apply(model, params, image_rng, ITIT.decode_image, encoded,
                          deterministic=deterministic)
    loss_i2i, image_accuracy = masked_token_loss(image_logits, image_tokens, mask,
                                                 config.loss.label_smoothing)
    metrics.update(i2i_loss=loss_i2i, i2i_masked_token_accuracy=image_accuracy)
    loss = loss + loss_i2i
  return loss, metrics


def t2i_loss(params, batch, rng, *, model, config, deterministic=False):
  """Eq. (2): masked image modelling conditioned on the paired text, masked positions only."""
  image_tokens, text_ids = batch['image_tokens'], batch['text_ids']
  batch_size, num_tokens = image_tokens.shape
  mask_rng, text_rng, encode_rng, image_rng = jax.random.split(rng, 4)
  mask, num_dropped = t2i_image_mask(mask_rng, batch_size, num_tokens, config)
  text_features = _apply(model, params, text_rng, ITIT.encode_text, text_ids,
                         deterministic=deterministic)
  encoded = _apply(model, params, encode_rng, ITIT.encode, image_tokens, mask, text_features,
                   text_ids != PAD_ID, deterministic=deterministic, num_dropped=num_dropped)
  image_logits = _apply(model, params, image_rng, ITIT.decode_image, encoded,
                        deterministic=deterministic)
  loss, accuracy = masked_token_loss(image_logits, image_tokens, mask,
                                     config.loss.label_smoothing)
  return loss, {'t2i_loss': loss, 't2i_masked_token_accuracy': accuracy}


def teacher_forced_ids(params, image_tokens, text_ids, *, model):
  """Teacher-forced captioning of the WHOLE image (inference's condition: nothing masked):
  the decoder's argmax at every position given the true prefix, [B, L] int32."""
  nothing_masked = jnp.zeros(image_tokens.shape, bool)
  encoded = model.apply({'params': params}, image_tokens, nothing_masked, deterministic=True,
                        num_dropped=0, method=ITIT.encode)
  logits = model.apply({'params': params}, encoded, decoder_input(text_ids), deterministic=True,
                       method=ITIT.decode_text)
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

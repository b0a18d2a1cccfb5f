"""What every loss is built from: cross-entropies, teacher forcing, the image masks, the
gradient scale, and the masked-image reconstruction shared by I2T's I2I term and I2I alone.

Token ids follow T5 (itit.models.token_ids): the text decoder reads [BOS] + ids[:-1] (BOS = pad
= 0, T5's decoder start) and predicts ids at every non-pad position, EOS included.
"""
import jax
import jax.numpy as jnp

from itit.models.itit import apply_method
from itit.models.itit import ITIT
from itit.models import masking
from itit.models.token_ids import BOS_ID
from itit.models.token_ids import PAD_ID


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


def i2t_image_mask(rng, batch, num_tokens, config):
  """The mask of an image the model reads without text (I2T, I2I): [B, N] bool."""
  return sample_image_mask(rng, batch, num_tokens, config.loss, config.loss.mask_ratio_max_i2t,
                           config.model.num_dropped)


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


def encode_with_text(params, image_tokens, mask, text_ids, text_rng, encode_rng, *, model,
                     num_dropped, deterministic=False):
  """The joint encoder's pass over a masked image and its text (T2I's condition).

  Args:
    image_tokens: [B, N] int32; mask: [B, N] bool; text_ids: [B, L] int32 (pad 0).
    num_dropped: masked tokens removed from the encoder's sequence (`t2i_image_mask`).
  Returns:
    The `EncoderOutput` the image decoder reads.
  """
  text_features = apply_method(model, params, text_rng, ITIT.encode_text, text_ids,
                               deterministic=deterministic)
  return apply_method(model, params, encode_rng, ITIT.encode, image_tokens, mask, text_features,
                      text_ids != PAD_ID, deterministic=deterministic, num_dropped=num_dropped)


def image_reconstruction_loss(params, encoded, image_tokens, mask, rng, *, model, config,
                              deterministic=False):
  """I2I: the image decoder reconstructs the masked tokens from an encoder pass with no text.

  Args:
    encoded: the `EncoderOutput` of `image_tokens` under `mask`, the empty text.
    image_tokens: [B, N] int32; mask: [B, N] bool.
  Returns:
    (loss, masked-token accuracy).
  """
  image_logits = apply_method(model, params, rng, ITIT.decode_image, encoded,
                              deterministic=deterministic)
  return masked_token_loss(image_logits, image_tokens, mask, config.loss.label_smoothing)

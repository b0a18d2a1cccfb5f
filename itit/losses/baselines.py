"""The naive ways to use unpaired data (table 2 rows 5-7): T2T on unpaired text; I2I on unpaired
images is `itit.losses.paired.i2i_loss` (the I2I term of eq. 1 on its own)."""
import jax.numpy as jnp

from itit.losses import common
from itit.models.itit import apply_method
from itit.models.itit import EncoderOutput
from itit.models.itit import ITIT


def t2t_loss(params, batch, rng, *, model, config, deterministic=False):
  """Text-only LM on {'text_ids': [B, L]}: the text decoder with no encoder rows at all (zero
  encoder rows), a pure language model."""
  text_ids = batch['text_ids']
  batch_size = text_ids.shape[0]
  no_image = EncoderOutput(
      features=jnp.zeros((batch_size, 0, config.model.width), jnp.float32),
      valid=jnp.zeros((batch_size, 0), bool),
      image_positions=jnp.zeros((batch_size, 0), jnp.int32))
  logits = apply_method(model, params, rng, ITIT.decode_text, no_image,
                        common.decoder_input(text_ids), deterministic=deterministic)
  loss, accuracy = common.lm_loss(logits, text_ids, config.loss.label_smoothing)
  return loss, {'t2t_loss': loss, 't2t_token_accuracy': accuracy}

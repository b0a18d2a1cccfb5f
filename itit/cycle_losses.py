"""Losses on unpaired data (paper section 3.2, table 2): the T2I2T and I2T2I cycles, and the
T2T / I2I baselines.

Every loss has the signature of `itit.losses`: `(params, batch, rng, *, model, config,
deterministic=False) -> (loss, metrics)`, reading one stream: `t2i2t_loss` and `t2t_loss` read
unpaired text {'text_ids': [B, L]}, `i2t2i_loss` and `i2i_loss` unpaired images
{'image_tokens': [B, N]}. Switches: config.loss.unpaired_text_loss in {none, t2t, t2i2t_half,
t2i2t}, config.loss.unpaired_image_loss in {none, i2i, i2t2i_half, i2t2i}; settings in
config.cycle.

Choices the paper leaves open, made here:
- Straight-through estimators put the argmax's gradient on the post-softmax probabilities of the
  scores that were argmaxed: forward = one_hot(argmax(s)) bitwise, backward = the Jacobian of
  softmax(s). T2I2T uses s = logits + g * Gumbel noise (g = cycle.gumbel_strength; the forward
  value is then a sample of softmax(logits)), I2T2I uses s = logits (appendix B).
- Half cycles ('*_half') compute the same forward value and stop the gradient at the argmax, so
  the half and full rows differ only in where gradient flows; the half cycle trains I2T (resp.
  T2I) on the pseudo pair the first pass reconstructs.
- Stop after the encoder's first pass (appendix B, config.cycle.stop_first_encoder_grad): the
  joint encoder's output in the cycle's first forward pass is wrapped in stop_gradient, so the
  encoder (and the text encoder under it) learns only from the second pass. Parameters the
  first pass shares with a decoder (the image-token table, tied to the image decoder's head)
  still learn through that decoder.
- The I2T pass of T2I2T keeps eq. (1)'s smaller encoder gradient (loss.i2t_encoder_grad_scale)
  on the encoder's PARAMETERS only: scaling the features instead would also scale the gradient
  reaching the reconstructed image Ĩ, i.e. the image decoder's whole cycle signal.
- T2T is the text decoder with no prefix at all (zero encoder rows), a pure language model; I2I
  on unpaired images is the paired I2I path (I2T's mask distribution, the empty text).
"""
import jax
import jax.numpy as jnp

from itit import generate
from itit import losses
from itit.models.itit import EncoderOutput
from itit.models.itit import ITIT

PAD_ID = 0
EOS_ID = 1
TEXT_LOSSES = ('none', 't2t', 't2i2t_half', 't2i2t')
IMAGE_LOSSES = ('none', 'i2i', 'i2t2i_half', 'i2t2i')
# Table 2 of the paper, rows on one paired dataset: row -> (loss.t2i, loss.i2t,
# loss.unpaired_text_loss, loss.unpaired_image_loss); loss.i2i follows loss.t2i. Row 13 also
# reads the paired shards as its unpaired streams; row 4 (more pairs) is data, not losses.
TABLE2_ROWS = {
    1: (True, False, 'none', 'none'),
    2: (False, True, 'none', 'none'),
    3: (True, True, 'none', 'none'),
    5: (True, True, 't2t', 'none'),
    6: (True, True, 'none', 'i2i'),
    7: (True, True, 't2t', 'i2i'),
    8: (True, True, 't2i2t_half', 'none'),
    9: (True, True, 'none', 'i2t2i_half'),
    10: (True, True, 't2i2t_half', 'i2t2i_half'),
    11: (True, True, 't2i2t', 'none'),
    12: (True, True, 'none', 'i2t2i'),
    13: (True, True, 't2i2t', 'i2t2i'),
    14: (True, True, 't2i2t', 'i2t2i'),
}


def table2_row_of(config) -> int | None:
  """The table 2 row whose losses (and streams) `config` trains, or None for a custom mix."""
  loss = config.loss
  switches = (loss.t2i, loss.i2t, loss.unpaired_text_loss, loss.unpaired_image_loss)
  rows = [row for row, values in TABLE2_ROWS.items() if values == switches]
  if not rows or loss.i2i != loss.t2i:
    return None
  own_data = (config.data.unpaired_image == config.data.paired
              and config.data.unpaired_text == config.data.paired)
  if set(rows) == {13, 14}:
    return 13 if own_data else 14
  return rows[0]


def _apply(model, params, rng, method, *args, deterministic=False, **kwargs):
  return model.apply({'params': params}, *args, deterministic=deterministic, method=method,
                     rngs={'dropout': rng}, **kwargs)


# -- straight-through estimators ---------------------------------------------------------------

def straight_through(scores):
  """[..., C] scores -> one_hot(argmax(scores)) forward; softmax(scores)'s gradient backward."""
  soft = jax.nn.softmax(scores.astype(jnp.float32), axis=-1)
  hard = jax.nn.one_hot(jnp.argmax(scores, axis=-1), scores.shape[-1], dtype=soft.dtype)
  # soft - soft is exactly 0.0, so the forward value is the one-hot bitwise.
  return hard + (soft - jax.lax.stop_gradient(soft))


def gumbel_straight_through(logits, rng, strength):
  """Straight-through Gumbel-softmax: `straight_through(logits + strength * Gumbel noise)`."""
  noise = jax.random.gumbel(rng, logits.shape, jnp.float32)
  return straight_through(logits.astype(jnp.float32) + strength * noise)


def _scale_encoder_gradient(params, scale):
  """Every parameter outside the text decoder with its gradient times `scale` (eq. 1)."""
  return {name: (subtree if name.startswith('text_decoder')
                 else jax.tree.map(lambda p: losses.scale_gradient(p, scale), subtree))
          for name, subtree in params.items()}


def _first_pass_output(encoded, stop, scale=1.0):
  """The first pass's encoder output as the decoder reads it (stopped, or gradient-scaled)."""
  if stop:
    return jax.lax.stop_gradient(encoded)
  if scale == 1.0:
    return encoded
  return encoded.replace(features=losses.scale_gradient(encoded.features, scale))


# -- pseudo-pair synthesis (no gradient) -------------------------------------------------------

def synthesize_pseudo_images(params, text_ids, rng, *, model, config):
  """I' for each text: Muse parallel decoding with cycle.* settings. [B, L] -> [B, N] int32."""
  c = config.cycle
  return jax.lax.stop_gradient(generate.generate_images(
      jax.lax.stop_gradient(params), text_ids, rng, model=model, num_steps=c.synthesis_steps,
      guidance_scale=c.guidance_scale, temperature=c.temperature))


def synthesize_pseudo_captions(params, image_tokens, *, model, config):
  """T' for each image: greedy KV-cached decoding. [B, N] -> ids [B, max_text_len] (EOS, pad)."""
  ids, _ = generate.generate_captions(jax.lax.stop_gradient(params), image_tokens, model=model,
                                      max_len=config.model.max_text_len)
  return jax.lax.stop_gradient(ids)


# -- T2I2T, eq. (3) ----------------------------------------------------------------------------

def t2i2t_cycle(params, text_ids, pseudo_image, rng, *, model, config, deterministic=False,
                first_pass_params=None):
  """Eq. (3) given the pseudo image: T2I on I'_M (gradient), Ĩ, I2T on Ĩ_M, LM loss vs T.

  Args:
    text_ids: [B, L] int32, the unpaired texts T (pad 0, EOS 1).
    pseudo_image: [B, N] int32, I' synthesized from T.
    first_pass_params: parameters of the first pass's text and joint encoder (default
      `params`); tests pass stop_gradient(params) to make that pass a constant.
  Returns:
    (loss, metrics).
  """
  c = config.cycle
  half = config.loss.unpaired_text_loss == 't2i2t_half'
  first_params = params if first_pass_params is None else first_pass_params
  batch, num_tokens = pseudo_image.shape
  (mask_rng, text_rng, encode_rng, image_rng, gumbel_rng, second_mask_rng, second_encode_rng,
   decode_rng) = jax.random.split(rng, 8)
  mask, num_dropped = losses.t2i_image_mask(mask_rng, batch, num_tokens, config)
  text_features = _apply(model, first_params, text_rng, ITIT.encode_text, text_ids,
                         deterministic=deterministic)
  encoded = _apply(model, first_params, encode_rng, ITIT.encode, pseudo_image, mask,
                   text_features, text_ids != PAD_ID, deterministic=deterministic,
                   num_dropped=num_dropped)
  encoded = _first_pass_output(encoded, c.stop_first_encoder_grad)
  image_logits = _apply(model, params, image_rng, ITIT.decode_image, encoded,
                        deterministic=deterministic)
  estimate = gumbel_straight_through(image_logits, gumbel_rng, c.gumbel_strength)
  if half:
    estimate = jax.lax.stop_gradient(estimate)
  # Ĩ: the reconstruction at the masked positions, I' itself elsewhere. [B, N, K]
  reconstructed = jnp.where(mask[..., None], estimate,
                            jax.nn.one_hot(pseudo_image, estimate.shape[-1], dtype=estimate.dtype))

  second_mask = losses.sample_image_mask(second_mask_rng, batch, num_tokens, config.loss,
                                         config.loss.mask_ratio_max_i2t, config.model.num_dropped)
  i2t_params = _scale_encoder_gradient(params, config.loss.i2t_encoder_grad_scale)
  second_encoded = _apply(model, i2t_params, second_encode_rng, ITIT.encode, reconstructed,
                          second_mask, deterministic=deterministic)
  text_logits = _apply(model, params, decode_rng, ITIT.decode_text, second_encoded,
                       losses.decoder_input(text_ids), deterministic=deterministic)
  loss, accuracy = losses.lm_loss(text_logits, text_ids, config.loss.label_smoothing)
  kept = jnp.argmax(estimate, axis=-1) == pseudo_image
  agreement = jnp.sum(kept & mask) / jnp.maximum(jnp.sum(mask), 1)
  return loss, {'t2i2t_loss': loss, 't2i2t_token_accuracy': accuracy,
                'pseudo_image_masked_agreement': agreement}


def t2i2t_loss(params, batch, rng, *, model, config, deterministic=False):
  """Eq. (3) on unpaired text batch {'text_ids': [B, L]}: synthesize I', then `t2i2t_cycle`."""
  synthesis_rng, cycle_rng = jax.random.split(rng)
  text_ids = batch['text_ids']
  pseudo_image = synthesize_pseudo_images(params, text_ids, synthesis_rng, model=model,
                                          config=config)
  return t2i2t_cycle(params, text_ids, pseudo_image, cycle_rng, model=model, config=config,
                     deterministic=deterministic)


# -- I2T2I, eq. (4) ----------------------------------------------------------------------------

def i2t2i_cycle(params, image_tokens, pseudo_text, rng, *, model, config, deterministic=False,
                first_pass_params=None):
  """Eq. (4) given the pseudo caption: teacher-forced I2T (gradient), T̃, T2I, CE vs I.

  Args:
    image_tokens: [B, N] int32, the unpaired images I.
    pseudo_text: [B, L] int32, T' captioned from I (EOS then padding).
    first_pass_params: parameters of the first pass's joint encoder (default `params`).
  Returns:
    (loss, metrics).
  """
  half = config.loss.unpaired_image_loss == 'i2t2i_half'
  first_params = params if first_pass_params is None else first_pass_params
  batch, num_tokens = image_tokens.shape
  mask_rng, encode_rng, decode_rng, text_rng, second_mask_rng, second_encode_rng, image_rng = (
      jax.random.split(rng, 7))
  mask = losses.sample_image_mask(mask_rng, batch, num_tokens, config.loss,
                                  config.loss.mask_ratio_max_i2t, config.model.num_dropped)
  encoded = _apply(model, first_params, encode_rng, ITIT.encode, image_tokens, mask,
                   deterministic=deterministic)
  encoded = _first_pass_output(encoded, config.cycle.stop_first_encoder_grad,
                               config.loss.i2t_encoder_grad_scale)
  text_logits = _apply(model, params, decode_rng, ITIT.decode_text, encoded,
                       losses.decoder_input(pseudo_text), deterministic=deterministic)
  estimate = straight_through(text_logits)
  if half:
    estimate = jax.lax.stop_gradient(estimate)
  # T̃ keeps T''s padding: positions after its EOS stay pad one-hots and masked out. [B, L, V]
  text_mask = pseudo_text != PAD_ID
  predicted_text = jnp.where(
      text_mask[..., None], estimate,
      jax.nn.one_hot(pseudo_text, estimate.shape[-1], dtype=estimate.dtype))
  text_features = _apply(model, params, text_rng, ITIT.encode_text, predicted_text, text_mask,
                         deterministic=deterministic)

  second_mask, num_dropped = losses.t2i_image_mask(second_mask_rng, batch, num_tokens, config)
  second_encoded = _apply(model, params, second_encode_rng, ITIT.encode, image_tokens,
                          second_mask, text_features, text_mask, deterministic=deterministic,
                          num_dropped=num_dropped)
  image_logits = _apply(model, params, image_rng, ITIT.decode_image, second_encoded,
                        deterministic=deterministic)
  loss, accuracy = losses.masked_token_loss(image_logits, image_tokens, second_mask,
                                            config.loss.label_smoothing)
  lengths = jnp.sum(text_mask, axis=1)
  kept = (jnp.argmax(estimate, axis=-1) == pseudo_text) & text_mask
  return loss, {
      'i2t2i_loss': loss,
      'i2t2i_masked_token_accuracy': accuracy,
      'pseudo_caption_eos_fraction': jnp.mean(jnp.any(pseudo_text == EOS_ID, axis=1)),
      'pseudo_caption_length': jnp.mean(lengths.astype(jnp.float32)),
      'pseudo_caption_agreement': jnp.sum(kept) / jnp.maximum(jnp.sum(lengths), 1),
  }


def i2t2i_loss(params, batch, rng, *, model, config, deterministic=False):
  """Eq. (4) on unpaired image batch {'image_tokens': [B, N]}: caption T', then `i2t2i_cycle`."""
  image_tokens = batch['image_tokens']
  pseudo_text = synthesize_pseudo_captions(params, image_tokens, model=model, config=config)
  return i2t2i_cycle(params, image_tokens, pseudo_text, rng, model=model, config=config,
                     deterministic=deterministic)


# -- the naive baselines (table 2 rows 5-7) ----------------------------------------------------

def t2t_loss(params, batch, rng, *, model, config, deterministic=False):
  """Text-only LM on {'text_ids': [B, L]}: the text decoder with no encoder rows at all."""
  text_ids = batch['text_ids']
  batch_size = text_ids.shape[0]
  no_image = EncoderOutput(
      features=jnp.zeros((batch_size, 0, config.model.width), jnp.float32),
      valid=jnp.zeros((batch_size, 0), bool),
      image_positions=jnp.zeros((batch_size, 0), jnp.int32))
  logits = _apply(model, params, rng, ITIT.decode_text, no_image,
                  losses.decoder_input(text_ids), deterministic=deterministic)
  loss, accuracy = losses.lm_loss(logits, text_ids, config.loss.label_smoothing)
  return loss, {'t2t_loss': loss, 't2t_token_accuracy': accuracy}


def i2i_loss(params, batch, rng, *, model, config, deterministic=False):
  """Masked-token reconstruction of {'image_tokens': [B, N]} with the empty text (I2T's mask)."""
  image_tokens = batch['image_tokens']
  batch_size, num_tokens = image_tokens.shape
  mask_rng, encode_rng, image_rng = jax.random.split(rng, 3)
  mask = losses.sample_image_mask(mask_rng, batch_size, num_tokens, config.loss,
                                  config.loss.mask_ratio_max_i2t, config.model.num_dropped)
  encoded = _apply(model, params, encode_rng, ITIT.encode, image_tokens, mask,
                   deterministic=deterministic)
  logits = _apply(model, params, image_rng, ITIT.decode_image, encoded,
                  deterministic=deterministic)
  loss, accuracy = losses.masked_token_loss(logits, image_tokens, mask,
                                            config.loss.label_smoothing)
  return loss, {'i2i_loss': loss, 'i2i_masked_token_accuracy': accuracy}

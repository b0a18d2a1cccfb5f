"""The cycle losses on unpaired data (paper section 3.2): T2I2T, eq. (3), and I2T2I, eq. (4),
with the pseudo-pair synthesis and straight-through estimators they use.

Every loss has the signature of `itit.losses.paired`: `(params, batch, rng, *, model, config,
deterministic=False) -> (loss, metrics)`: `t2i2t_loss` reads unpaired text {'text_ids': [B, L]},
`i2t2i_loss` unpaired images {'image_tokens': [B, N]}. Switches: config.loss.unpaired_text_loss
in {t2i2t_half, t2i2t}, config.loss.unpaired_image_loss in {i2t2i_half, i2t2i}
(itit.losses.registry); settings in config.cycle.

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
- Not in the paper, 1.0 by default: config.cycle.encoder_grad_scale scales the gradient the
  cycles give the joint encoder's own parameters in every encoder pass of a cycle (the signal
  still passes through the encoder to the decoders and the text encoder). The image-token table
  is also the image decoder's head: through the head it learns at full scale.
- The I2T pass of T2I2T keeps eq. (1)'s smaller encoder gradient (loss.i2t_encoder_grad_scale)
  on the encoder's PARAMETERS only: scaling the features instead would also scale the gradient
  reaching the reconstructed image Ĩ, i.e. the image decoder's whole cycle signal.

Each cycle is `<cycle>_pseudo_pair` (the synthesis) then `<cycle>_on_pseudo_pair` (the losses'
forward and backward passes): the train step reuses a pseudo pair for cycle.reuse steps with
them (itit.trainer.step).

Not in the paper, off by default: config.cycle.t2i2t_trains_captioner=False makes T2I2T's
captioning pass a fixed critic (its parameters read stop_gradient), so unpaired text trains T2I
only; at the laptop level of the shapes world the paper's cycle taught a weak T2I's drawings to
the captioner as captions (docs/SHAPES.md).
"""
import jax
import jax.numpy as jnp

from itit.decoding import generate
from itit.losses import common
from itit.models.itit import apply_method
from itit.models.itit import ITIT
from itit.models.itit import part_of
from itit.models.token_ids import EOS_ID
from itit.models.token_ids import PAD_ID


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
                 else jax.tree.map(lambda p: common.scale_gradient(p, scale), subtree))
          for name, subtree in params.items()}


def _scale_joint_encoder_gradient(params, scale):
  """`params` with the joint encoder's parameters' gradient times `scale`
  (config.cycle.encoder_grad_scale); `params` itself at scale 1."""
  if scale == 1.0:
    return params
  return {name: (jax.tree.map(lambda p: common.scale_gradient(p, scale), subtree)
                 if part_of(name) == 'encoder' else subtree)
          for name, subtree in params.items()}


def _first_pass_output(encoded, stop, scale=1.0):
  """The first pass's encoder output as the decoder reads it (stopped, or gradient-scaled)."""
  if stop:
    return jax.lax.stop_gradient(encoded)
  if scale == 1.0:
    return encoded
  return encoded.replace(features=common.scale_gradient(encoded.features, scale))


# -- pseudo-pair synthesis (no gradient) -------------------------------------------------------

def synthesize_pseudo_images(params, text_ids, rng, *, model, config):
  """I' for each text: Muse parallel decoding with cycle.* settings. [B, L] -> [B, N] int32."""
  c = config.cycle
  return jax.lax.stop_gradient(generate.generate_images(
      jax.lax.stop_gradient(params), text_ids, rng, model=model, num_steps=c.synthesis_steps,
      guidance_scale=c.guidance_scale, temperature=c.temperature,
      sample_temperature=c.sample_temperature))


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
  first_params = _scale_joint_encoder_gradient(
      params if first_pass_params is None else first_pass_params, c.encoder_grad_scale)
  batch, num_tokens = pseudo_image.shape
  (mask_rng, text_rng, encode_rng, image_rng, gumbel_rng, second_mask_rng, second_encode_rng,
   decode_rng) = jax.random.split(rng, 8)
  mask, num_dropped = common.t2i_image_mask(mask_rng, batch, num_tokens, config)
  encoded = common.encode_with_text(first_params, pseudo_image, mask, text_ids, text_rng,
                                    encode_rng, model=model, num_dropped=num_dropped,
                                    deterministic=deterministic)
  encoded = _first_pass_output(encoded, c.stop_first_encoder_grad)
  image_logits = apply_method(model, params, image_rng, ITIT.decode_image, encoded,
                              deterministic=deterministic)
  estimate = gumbel_straight_through(image_logits, gumbel_rng, c.gumbel_strength)
  if half:
    estimate = jax.lax.stop_gradient(estimate)
  # Ĩ: the reconstruction at the masked positions, I' itself elsewhere. [B, N, K]
  reconstructed = jnp.where(mask[..., None], estimate,
                            jax.nn.one_hot(pseudo_image, estimate.shape[-1], dtype=estimate.dtype))

  second_mask = common.i2t_image_mask(second_mask_rng, batch, num_tokens, config)
  # With cycle.t2i2t_trains_captioner off the captioning pass is a fixed critic: its parameters
  # get no gradient, which still reaches Ĩ (the image decoder) through its inputs.
  captioner_params = (params if c.t2i2t_trains_captioner
                      else jax.lax.stop_gradient(params))
  i2t_params = _scale_joint_encoder_gradient(
      _scale_encoder_gradient(captioner_params, config.loss.i2t_encoder_grad_scale),
      c.encoder_grad_scale)
  second_encoded = apply_method(model, i2t_params, second_encode_rng, ITIT.encode, reconstructed,
                                second_mask, deterministic=deterministic)
  text_logits = apply_method(model, captioner_params, decode_rng, ITIT.decode_text,
                             second_encoded, common.decoder_input(text_ids),
                             deterministic=deterministic)
  loss, accuracy = common.lm_loss(text_logits, text_ids, config.loss.label_smoothing)
  kept = jnp.argmax(estimate, axis=-1) == pseudo_image
  agreement = jnp.sum(kept & mask) / jnp.maximum(jnp.sum(mask), 1)
  return loss, {'t2i2t_loss': loss, 't2i2t_token_accuracy': accuracy,
                'pseudo_image_masked_agreement': agreement}


def t2i2t_pseudo_pair(params, batch, rng, *, model, config):
  """The pseudo pair of unpaired texts {'text_ids': [B, L]}: {'text_ids', 'pseudo_image' [B, N]}
  (int32, no gradient)."""
  synthesis_rng, _ = jax.random.split(rng)
  text_ids = batch['text_ids'].astype(jnp.int32)
  return {'text_ids': text_ids,
          'pseudo_image': synthesize_pseudo_images(params, text_ids, synthesis_rng, model=model,
                                                   config=config).astype(jnp.int32)}


def t2i2t_on_pseudo_pair(params, pair, rng, *, model, config, deterministic=False):
  """`t2i2t_cycle` on a `t2i2t_pseudo_pair` (made now, or up to cycle.reuse - 1 steps ago)."""
  _, cycle_rng = jax.random.split(rng)
  return t2i2t_cycle(params, pair['text_ids'], pair['pseudo_image'], cycle_rng, model=model,
                     config=config, deterministic=deterministic)


def t2i2t_loss(params, batch, rng, *, model, config, deterministic=False):
  """Eq. (3) on unpaired text batch {'text_ids': [B, L]}: synthesize I', then `t2i2t_cycle`."""
  pair = t2i2t_pseudo_pair(params, batch, rng, model=model, config=config)
  return t2i2t_on_pseudo_pair(params, pair, rng, model=model, config=config,
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
  encoder_scale = config.cycle.encoder_grad_scale
  first_params = _scale_joint_encoder_gradient(
      params if first_pass_params is None else first_pass_params, encoder_scale)
  batch, num_tokens = image_tokens.shape
  mask_rng, encode_rng, decode_rng, text_rng, second_mask_rng, second_encode_rng, image_rng = (
      jax.random.split(rng, 7))
  mask = common.i2t_image_mask(mask_rng, batch, num_tokens, config)
  encoded = apply_method(model, first_params, encode_rng, ITIT.encode, image_tokens, mask,
                         deterministic=deterministic)
  encoded = _first_pass_output(encoded, config.cycle.stop_first_encoder_grad,
                               config.loss.i2t_encoder_grad_scale)
  text_logits = apply_method(model, params, decode_rng, ITIT.decode_text, encoded,
                             common.decoder_input(pseudo_text), deterministic=deterministic)
  estimate = straight_through(text_logits)
  if half:
    estimate = jax.lax.stop_gradient(estimate)
  # T̃ keeps T''s padding: positions after its EOS stay pad one-hots and masked out. [B, L, V]
  text_mask = pseudo_text != PAD_ID
  predicted_text = jnp.where(
      text_mask[..., None], estimate,
      jax.nn.one_hot(pseudo_text, estimate.shape[-1], dtype=estimate.dtype))
  text_features = apply_method(model, params, text_rng, ITIT.encode_text, predicted_text, text_mask,
                               deterministic=deterministic)

  second_mask, num_dropped = common.t2i_image_mask(second_mask_rng, batch, num_tokens, config)
  second_encoded = apply_method(model, _scale_joint_encoder_gradient(params, encoder_scale),
                                second_encode_rng, ITIT.encode, image_tokens, second_mask,
                                text_features, text_mask, deterministic=deterministic,
                                num_dropped=num_dropped)
  image_logits = apply_method(model, params, image_rng, ITIT.decode_image, second_encoded,
                              deterministic=deterministic)
  loss, accuracy = common.masked_token_loss(image_logits, image_tokens, second_mask,
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


def i2t2i_pseudo_pair(params, batch, rng, *, model, config):
  """The pseudo pair of unpaired images {'image_tokens': [B, N]}: {'image_tokens',
  'pseudo_text' [B, max_text_len]} (int32, no gradient; greedy captioning draws no key)."""
  del rng
  image_tokens = batch['image_tokens'].astype(jnp.int32)
  return {'image_tokens': image_tokens,
          'pseudo_text': synthesize_pseudo_captions(params, image_tokens, model=model,
                                                    config=config).astype(jnp.int32)}


def i2t2i_on_pseudo_pair(params, pair, rng, *, model, config, deterministic=False):
  """`i2t2i_cycle` on an `i2t2i_pseudo_pair` (made now, or up to cycle.reuse - 1 steps ago)."""
  return i2t2i_cycle(params, pair['image_tokens'], pair['pseudo_text'], rng, model=model,
                     config=config, deterministic=deterministic)


def i2t2i_loss(params, batch, rng, *, model, config, deterministic=False):
  """Eq. (4) on unpaired image batch {'image_tokens': [B, N]}: caption T', then `i2t2i_cycle`."""
  pair = i2t2i_pseudo_pair(params, batch, rng, model=model, config=config)
  return i2t2i_on_pseudo_pair(params, pair, rng, model=model, config=config,
                              deterministic=deterministic)

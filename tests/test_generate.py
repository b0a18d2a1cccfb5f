"""The model bound to the decoders: cached captioning equals recomputation, samplers behave."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from itit.decoding import generate
from itit.decoding import mask_schedule
from itit.models import itit as itit_model


@pytest.fixture(scope='module')
def setup():
  config = tiny.get_config()
  model = itit_model.ITIT(config.model)
  params = nn.unbox(itit_model.init_params(config.model, jax.random.PRNGKey(3)))
  # Random init gives near-uniform logits; sharpen the heads so decoding choices are decisive.
  params = jax.tree.map(lambda x: x * 3.0, params)
  rng = np.random.default_rng(0)
  image_tokens = jnp.asarray(rng.integers(0, config.model.image_vocab_size, (3, 16)), jnp.int32)
  return config, model, params, image_tokens


def uncached_greedy(params, image_tokens, model, max_len):
  """Reference: re-runs the decoder over the whole prefix for every new token (the prefix padded
  to a fixed length, so one compile serves every step; the causal mask hides the padding)."""
  encoded = generate.encode_image_for_captioning(params, image_tokens, model=model)
  decode = jax.jit(lambda tokens: model.apply({'params': params}, encoded, tokens,
                                              deterministic=True,
                                              method=itit_model.ITIT.decode_text))
  batch = image_tokens.shape[0]
  tokens = np.zeros((batch, max_len + 1), np.int32)  # BOS = 0 first
  done = np.zeros(batch, bool)
  for t in range(max_len):
    logits = decode(jnp.asarray(tokens[:, :max_len]))
    next_token = np.asarray(jnp.argmax(logits[:, t], -1))
    next_token = np.where(done, 0, next_token)
    tokens[:, t + 1] = next_token
    done |= next_token == 1
  return tokens[:, 1:]


def test_cached_greedy_equals_uncached(setup):
  config, model, params, image_tokens = setup
  max_len = config.model.max_text_len
  ids, log_prob = jax.jit(functools.partial(generate.generate_captions, model=model))(
      params, image_tokens)
  expected = uncached_greedy(params, image_tokens, model, max_len)
  np.testing.assert_array_equal(np.asarray(ids), expected)
  assert ids.shape == (3, max_len) and np.all(np.asarray(log_prob) <= 0)


def test_beam_one_equals_greedy_and_beam_four_scores(setup):
  _, model, params, image_tokens = setup
  greedy, _ = generate.generate_captions(params, image_tokens, model=model)
  beam1, _ = generate.generate_captions(params, image_tokens, model=model, beam_size=1)
  np.testing.assert_array_equal(np.asarray(beam1), np.asarray(greedy))
  ids, scores = generate.generate_captions(params, image_tokens, model=model, beam_size=4,
                                           length_penalty=0.0)
  _, greedy_log_prob = generate.generate_captions(params, image_tokens, model=model)
  # With no length penalty the best beam is at least as likely as the greedy caption.
  assert np.all(np.asarray(scores) >= np.asarray(greedy_log_prob) - 1e-5)
  assert ids.shape == greedy.shape


def test_parallel_decoding_fills_every_token(setup):
  config, model, params, _ = setup
  text_ids = jnp.asarray([[5, 7, 9, 1, 0, 0, 0, 0], [11, 1, 0, 0, 0, 0, 0, 0]], jnp.int32)
  sample = jax.jit(functools.partial(generate.generate_images, model=model, num_steps=4,
                                     return_history=True))
  tokens, history = sample(params, text_ids, jax.random.PRNGKey(0))
  vocab = config.model.image_vocab_size
  assert tokens.shape == (2, 16) and history.shape == (4, 2, 16)
  assert np.all((np.asarray(tokens) >= 0) & (np.asarray(tokens) < vocab))
  masked_per_step = (np.asarray(history) == vocab).sum(-1)
  np.testing.assert_array_equal(masked_per_step[:, 0], mask_schedule.masked_counts(16, 4))
  assert list(masked_per_step[:, 0]) == [14, 11, 6, 0]  # floor(16 cos(pi/2 (t+1)/4))
  again, _ = sample(params, text_ids, jax.random.PRNGKey(0))
  np.testing.assert_array_equal(np.asarray(tokens), np.asarray(again))
  unguided = generate.generate_images(params, text_ids, jax.random.PRNGKey(0), model=model,
                                      num_steps=4, guidance_scale=0.0)
  assert unguided.shape == (2, 16)
  # Training-matched dropping follows the same schedule and fills every token, but the encoder
  # sees fewer [MASK] rows, so the logits (and here the samples) differ.
  matched, matched_history = jax.jit(functools.partial(
      generate.generate_images, model=model, num_steps=4, return_history=True,
      train_matched_drop=True))(params, text_ids, jax.random.PRNGKey(0))
  np.testing.assert_array_equal((np.asarray(matched_history) == vocab).sum(-1), masked_per_step)
  assert np.all((np.asarray(matched) >= 0) & (np.asarray(matched) < vocab))
  assert not np.array_equal(np.asarray(matched), np.asarray(tokens))


def test_cycle_chain(setup):
  _, model, params, _ = setup
  text_ids = jnp.asarray([[5, 7, 9, 1, 0, 0, 0, 0]], jnp.int32)
  rounds = generate.cycle_chain(params, text_ids, jax.random.PRNGKey(1), model=model, length=2,
                                image_kwargs=dict(num_steps=3))
  assert len(rounds) == 2
  assert rounds[1]['image_tokens'].shape == (1, 16) and rounds[1]['text_ids'].shape == (1, 8)

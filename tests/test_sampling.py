import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from itit.decoding import mask_schedule
from itit.decoding import parallel

BATCH = 3
NUM_TOKENS = 16  # a 4x4 grid
CODEBOOK = 8
MASK_ID = CODEBOOK  # inside the logits (K = CODEBOOK + 1) so that "never sampled" is tested
NUM_STEPS = 6


def _quarters(rng, shape):
  """Random multiples of 1/4: guidance arithmetic on them is exact in float32."""
  return jnp.asarray(rng.integers(-8, 9, size=shape) / 4.0, jnp.float32)


_TABLES = np.random.default_rng(0)
COND_TABLE = _quarters(_TABLES, (NUM_TOKENS, CODEBOOK + 1))
UNCOND_TABLE = _quarters(_TABLES, (NUM_TOKENS, CODEBOOK + 1))
# Passing the default start explicitly lets one compiled decoder serve every history test.
ALL_MASKED = jnp.full((BATCH, NUM_TOKENS), MASK_ID, jnp.int32)


def _known_token_bias(tokens, unknown_mask):
  """[B, 1, K]: 1/4 per known token of each value, so the logits depend on the state."""
  one_hot = jax.nn.one_hot(jnp.where(unknown_mask, -1, tokens), CODEBOOK + 1)
  return 0.25 * jnp.sum(one_hot, axis=1, keepdims=True)


def toy_logits_fn(tokens, unknown_mask):
  bias = _known_token_bias(tokens, unknown_mask)
  return COND_TABLE[None] + bias, UNCOND_TABLE[None] + bias


def guided_only_logits_fn(tokens, unknown_mask):
  """The guided logits of toy_logits_fn at tau = 2, exactly, and garbage unconditional logits."""
  bias = _known_token_bias(tokens, unknown_mask)
  guided = 3.0 * COND_TABLE - 2.0 * UNCOND_TABLE
  return guided[None] + bias, jnp.full(bias.shape[:1] + COND_TABLE.shape, jnp.nan)


def _decoder(logits_fn=toy_logits_fn, **kwargs):
  kwargs = dict(dict(batch_size=BATCH, num_tokens=NUM_TOKENS, mask_token_id=MASK_ID,
                     num_steps=NUM_STEPS), **kwargs)
  return jax.jit(functools.partial(parallel.parallel_decode, logits_fn=logits_fn, **kwargs))


@pytest.fixture(scope='module')
def history_decoder():
  return _decoder(return_history=True)


@pytest.fixture(scope='module')
def default_run(history_decoder):
  return history_decoder(jax.random.key(0), initial_tokens=ALL_MASKED)


def test_counts_follow_the_cosine_schedule_exactly(default_run):
  tokens, history = default_run
  assert history.shape == (NUM_STEPS, BATCH, NUM_TOKENS)
  masked_after_step = np.sum(np.asarray(history) == MASK_ID, axis=-1)  # [steps, B]
  expected = mask_schedule.masked_counts(NUM_TOKENS, NUM_STEPS)
  np.testing.assert_array_equal(expected, [15, 13, 11, 8, 4, 0])
  for row in range(BATCH):
    np.testing.assert_array_equal(masked_after_step[:, row], expected)
  np.testing.assert_array_equal(history[-1], tokens)


def test_zero_masked_and_mask_token_never_sampled(default_run):
  tokens, _ = default_run
  tokens = np.asarray(tokens)
  assert tokens.dtype == np.int32
  assert np.all((tokens >= 0) & (tokens < CODEBOOK))


def test_never_remasks_a_known_token(default_run):
  _, history = default_run
  history = np.asarray(history)
  for step in range(1, NUM_STEPS):
    was_known = history[step - 1] != MASK_ID
    np.testing.assert_array_equal(history[step][was_known], history[step - 1][was_known])


def test_deterministic_given_rng(history_decoder, default_run):
  again = history_decoder(jax.random.key(0), initial_tokens=ALL_MASKED)
  np.testing.assert_array_equal(again[1], default_run[1])
  other = history_decoder(jax.random.key(1), initial_tokens=ALL_MASKED)
  assert not np.array_equal(other[0], default_run[0])


def test_guidance_formula_and_zero_guidance_ignores_uncond(default_run):
  # tau = 2 on (l_c, l_u) must equal the unguided sampler (tau = 0) on 3 l_c - 2 l_u, whose
  # unconditional logits are NaN: tau = 0 must not read them.
  unguided = _decoder(guided_only_logits_fn, guidance_scale=0.0, return_history=True)
  tokens, history = unguided(jax.random.key(0))
  np.testing.assert_array_equal(tokens, default_run[0])
  np.testing.assert_array_equal(history, default_run[1])


def test_guidance_needs_uncond_logits():
  def cond_only(tokens, unknown_mask):
    return toy_logits_fn(tokens, unknown_mask)[0], None
  with pytest.raises(ValueError, match='uncond_logits=None'):
    _decoder(cond_only, guidance_scale=1.0)(jax.random.key(3))


def test_initial_tokens_respected_and_schedule_per_row(history_decoder):
  rng = np.random.default_rng(1)
  initial = rng.integers(0, CODEBOOK, size=(BATCH, NUM_TOKENS)).astype(np.int32)
  known = np.zeros((BATCH, NUM_TOKENS), bool)
  known[0, :4] = True                      # 12 unknown
  known[1, rng.permutation(NUM_TOKENS)[:9]] = True  # 7 unknown
  known[2, :] = True                       # nothing unknown
  initial = np.where(known, initial, MASK_ID)
  tokens, history = history_decoder(jax.random.key(5), initial_tokens=jnp.asarray(initial))
  tokens, history = np.asarray(tokens), np.asarray(history)
  np.testing.assert_array_equal(tokens[known], initial[known])
  for step in range(NUM_STEPS):
    np.testing.assert_array_equal(history[step][known], initial[known])
  masked_after_step = np.sum(history == MASK_ID, axis=-1)
  for row, unknown in enumerate([12, 7, 0]):
    np.testing.assert_array_equal(masked_after_step[:, row],
                                  mask_schedule.masked_counts(unknown, NUM_STEPS))
  assert np.all(tokens < CODEBOOK)


def test_top_k_one_is_argmax():
  def fixed_logits_fn(tokens, unknown_mask):
    del unknown_mask
    return jnp.broadcast_to(COND_TABLE + 1e-3 * jnp.arange(CODEBOOK + 1),
                            tokens.shape + COND_TABLE.shape[-1:]), None
  tokens = _decoder(fixed_logits_fn, guidance_scale=0, top_k=1)(jax.random.key(2))
  # The mask id is excluded before filtering, so argmax runs over the codebook entries only.
  expected = np.argmax(np.asarray(COND_TABLE + 1e-3 * jnp.arange(CODEBOOK + 1))[:, :CODEBOOK], -1)
  np.testing.assert_array_equal(tokens, np.broadcast_to(expected, (BATCH, NUM_TOKENS)))


def test_initial_tokens_shape_error():
  with pytest.raises(ValueError, match='initial_tokens has shape'):
    parallel.parallel_decode(jax.random.key(0), toy_logits_fn, batch_size=BATCH,
                             num_tokens=NUM_TOKENS, mask_token_id=MASK_ID,
                             initial_tokens=jnp.zeros((BATCH, 5), jnp.int32))


def test_filter_logits_top_k_and_top_p():
  logits = jnp.log(jnp.array([[0.5, 0.2, 0.25, 0.05]]))
  kept = np.isfinite(np.asarray(parallel.filter_logits(logits, top_k=2)))
  np.testing.assert_array_equal(kept, [[True, False, True, False]])
  # Mass before each sorted token: 0, 0.5, 0.75, 0.95.
  kept = np.isfinite(np.asarray(parallel.filter_logits(logits, top_p=0.7)))
  np.testing.assert_array_equal(kept, [[True, False, True, False]])
  kept = np.isfinite(np.asarray(parallel.filter_logits(logits, top_p=0.76)))
  np.testing.assert_array_equal(kept, [[True, True, True, False]])
  kept = np.isfinite(np.asarray(parallel.filter_logits(logits, top_p=0.1)))
  np.testing.assert_array_equal(kept, [[True, False, False, False]])
  np.testing.assert_array_equal(parallel.filter_logits(logits), logits)
  # top-p runs on the renormalised top-k (masses before: 0, 0.53, 0.79), so 0.78 keeps two
  # tokens where it alone keeps three.
  kept = np.isfinite(np.asarray(parallel.filter_logits(logits, top_p=0.78)))
  np.testing.assert_array_equal(kept, [[True, True, True, False]])
  both = parallel.filter_logits(logits, top_k=3, top_p=0.78)
  np.testing.assert_array_equal(np.isfinite(np.asarray(both)), [[True, False, True, False]])
  np.testing.assert_array_equal(both[0, ::2], logits[0, ::2])


def test_guided_logits_values():
  cond, uncond = jnp.array([1.0, 2.0]), jnp.array([0.5, 3.0])
  np.testing.assert_allclose(parallel.guided_logits(cond, uncond, 2.0), [2.0, 0.0])
  np.testing.assert_array_equal(parallel.guided_logits(cond, None, 0), cond)

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from itit.decoding import autoregressive

BOS, EOS, PAD = 0, 1, 0
DIM = 8
BATCH = 3


def make_model(vocab_size, max_len, seed, scale=2.0, eos_bias=0.0):
  """A one-layer, single-head causal attention "decoder" over embedded previous tokens.

  Per-example context vectors play the encoder features' part (they live in the cache, so beam
  search has to repeat them). Returns (params, contexts [BATCH, DIM]).
  """
  keys = jax.random.split(jax.random.key(seed), 7)
  normal = lambda key, shape: jax.random.normal(key, shape, jnp.float32)
  params = dict(embed=normal(keys[0], (vocab_size, DIM)), pos=normal(keys[1], (max_len, DIM)),
                wq=normal(keys[2], (DIM, DIM)) / np.sqrt(DIM),
                wk=normal(keys[3], (DIM, DIM)) / np.sqrt(DIM),
                wv=normal(keys[4], (DIM, DIM)) / np.sqrt(DIM),
                wout=scale * normal(keys[5], (DIM, vocab_size)) / np.sqrt(DIM),
                out_bias=jnp.zeros((vocab_size,)).at[EOS].set(eos_bias))
  return params, normal(keys[6], (BATCH, DIM))


def _inputs(params, context, tokens, positions):
  return params['embed'][tokens] + params['pos'][positions] + context


def init_cache(params, context, max_len):
  zeros = jnp.zeros((context.shape[0], max_len, DIM), jnp.float32)
  return dict(keys=zeros, values=zeros, context=context, index=jnp.zeros((), jnp.int32))


def cached_step(params, cache, token, position):
  """Feeds one token per row; keys/values of earlier positions come from the cache."""
  x = _inputs(params, cache['context'], token, position)  # [R, D]
  keys = jax.lax.dynamic_update_slice(cache['keys'], (x @ params['wk'])[:, None], (0, position, 0))
  values = jax.lax.dynamic_update_slice(cache['values'], (x @ params['wv'])[:, None],
                                        (0, position, 0))
  scores = jnp.einsum('rd,rld->rl', x @ params['wq'], keys) / np.sqrt(DIM)
  scores = jnp.where(jnp.arange(keys.shape[1]) <= position, scores, -jnp.inf)
  attended = jnp.einsum('rl,rld->rd', jax.nn.softmax(scores, axis=-1), values)
  logits = (attended + x) @ params['wout'] + params['out_bias']
  return logits, dict(keys=keys, values=values, context=cache['context'],
                      index=cache['index'] + 1)


def reference_logits(params, context, prefix):
  """Uncached, float64 numpy: next-token logits after the whole prefix [R, T] (BOS first)."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  length = prefix.shape[1]
  x = p['embed'][prefix] + p['pos'][np.arange(length)] + np.asarray(context, np.float64)[:, None]
  q, k, v = x[:, -1] @ p['wq'], x @ p['wk'], x @ p['wv']
  scores = np.einsum('rd,rld->rl', q, k) / np.sqrt(DIM)
  weights = np.exp(scores - scores.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  return (np.einsum('rl,rld->rd', weights, v) + x[:, -1]) @ p['wout'] + p['out_bias']


def _log_softmax(logits):
  logits = logits - logits.max(-1, keepdims=True)
  return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def reference_greedy(params, context, max_len):
  """Recomputes the whole prefix at every step; returns (ids [B, max_len], log_prob [B])."""
  batch = context.shape[0]
  prefix = np.full((batch, 1), BOS)
  ids = np.full((batch, max_len), PAD)
  log_prob = np.zeros(batch)
  finished = np.zeros(batch, bool)
  for position in range(max_len):
    log_probs = _log_softmax(reference_logits(params, context, prefix))
    token = log_probs.argmax(-1)
    ids[:, position] = np.where(finished, PAD, token)
    log_prob += np.where(finished, 0.0, log_probs[np.arange(batch), token])
    finished |= token == EOS
    prefix = np.concatenate([prefix, token[:, None]], axis=1)
  return ids, log_prob


def sequence_log_prob(params, context_row, ids):
  """log p(ids) of one generated sequence (no BOS, no padding) under the reference model."""
  prefix = np.array([[BOS] + list(ids)])
  return sum(_log_softmax(reference_logits(params, context_row[None], prefix[:, :i + 1]))[0, t]
             for i, t in enumerate(ids))


def _trim(ids):
  ids = list(np.asarray(ids))
  return ids[:ids.index(EOS) + 1] if EOS in ids else ids


def _normalised(log_prob, length, alpha):
  return log_prob / ((5.0 + length) / 6.0) ** alpha


@functools.lru_cache(maxsize=None)
def _greedy_fn(vocab_size, max_len, seed, eos_bias=0.0):
  params, context = make_model(vocab_size, max_len, seed, eos_bias=eos_bias)
  decode = jax.jit(lambda cache: autoregressive.greedy_decode(
      functools.partial(cached_step, params), cache, batch_size=BATCH, max_len=max_len,
      bos_id=BOS, eos_id=EOS, pad_id=PAD))
  return params, context, decode(init_cache(params, context, max_len))


def _beam(vocab_size, max_len, seed, beam_size, alpha, eos_bias=0.0):
  params, context = make_model(vocab_size, max_len, seed, eos_bias=eos_bias)
  decode = jax.jit(lambda cache: autoregressive.beam_search(
      functools.partial(cached_step, params), cache, batch_size=BATCH, beam_size=beam_size,
      max_len=max_len, length_penalty=alpha, bos_id=BOS, eos_id=EOS, pad_id=PAD))
  ids, scores = decode(init_cache(params, context, max_len))
  return params, context, np.asarray(ids), np.asarray(scores)


@pytest.mark.parametrize('seed', [0, 1])
def test_cached_greedy_equals_uncached_greedy(seed):
  params, context, (ids, log_prob) = _greedy_fn(12, 8, seed)
  expected_ids, expected_log_prob = reference_greedy(params, context, 8)
  np.testing.assert_array_equal(ids, expected_ids)
  np.testing.assert_allclose(log_prob, expected_log_prob, rtol=1e-4, atol=1e-4)


def test_greedy_pads_after_eos_and_stops_early():
  # A strong EOS bias ends every row within a few tokens.
  params, context = make_model(12, 8, seed=0, eos_bias=4.0)
  positions = []
  def counting_step(cache, token, position):
    jax.debug.callback(lambda p: positions.append(int(p)), position)
    return cached_step(params, cache, token, position)
  ids, _ = jax.jit(lambda cache: autoregressive.greedy_decode(
      counting_step, cache, batch_size=BATCH, max_len=8))(init_cache(params, context, 8))
  ids = np.asarray(ids)
  ends = [list(row).index(EOS) for row in ids]
  for row, end in zip(ids, ends):
    assert np.all(row[end + 1:] == PAD)
  assert sorted(positions) == list(range(max(ends) + 1))
  np.testing.assert_array_equal(ids, reference_greedy(params, context, 8)[0])


def test_beam_size_one_equals_greedy():
  # With alpha = 0 beam search ranks by log-probability, as greedy does.
  params, context, (greedy_ids, greedy_log_prob) = _greedy_fn(12, 8, 0)
  _, _, ids, scores = _beam(12, 8, 0, beam_size=1, alpha=0.0)
  np.testing.assert_array_equal(ids[:, 0], greedy_ids)
  np.testing.assert_allclose(scores[:, 0], greedy_log_prob, rtol=1e-5)


def test_beam_hypotheses_sorted_scored_and_at_least_greedy():
  alpha = 0.6
  params, context, (greedy_ids, greedy_log_prob) = _greedy_fn(12, 8, 1)
  _, _, ids, scores = _beam(12, 8, 1, beam_size=4, alpha=alpha)
  assert ids.shape == (BATCH, 4, 8) and scores.shape == (BATCH, 4)
  assert np.all(np.diff(scores, axis=1) <= 0)
  for b in range(BATCH):
    for k in range(4):
      tokens = _trim(ids[b, k])
      assert np.all(ids[b, k, len(tokens):] == PAD)
      recomputed = _normalised(sequence_log_prob(params, context[b], tokens), len(tokens), alpha)
      np.testing.assert_allclose(scores[b, k], recomputed, rtol=1e-4, atol=1e-4)
    greedy_score = _normalised(greedy_log_prob[b], len(_trim(greedy_ids[b])), alpha)
    assert scores[b, 0] >= greedy_score - 1e-5


@pytest.mark.parametrize('alpha', [0.0, 0.6])
def test_wide_beam_finds_the_brute_force_best(alpha):
  vocab_size, max_len = 4, 4
  # 3 tokens besides EOS, 4 positions: 121 hypotheses; beam 64 keeps every live prefix.
  params, context, ids, scores = _beam(vocab_size, max_len, 3, beam_size=64, alpha=alpha,
                                       eos_bias=0.5)
  greedy_ids = reference_greedy(params, context, max_len)[0]
  non_eos = [t for t in range(vocab_size) if t != EOS]
  candidates = [list(p) + [EOS] for n in range(max_len) for p in itertools.product(non_eos,
                                                                                   repeat=n)]
  candidates += [list(p) for p in itertools.product(non_eos, repeat=max_len)]
  found_shorter_than_max = beats_greedy = False
  for b in range(BATCH):
    scored = [(_normalised(sequence_log_prob(params, context[b], c), len(c), alpha), c)
              for c in candidates]
    best_score, best = max(scored, key=lambda s: s[0])
    assert _trim(ids[b, 0]) == best
    np.testing.assert_allclose(scores[b, 0], best_score, rtol=1e-4)
    found_shorter_than_max |= len(best) < max_len
    beats_greedy |= _trim(greedy_ids[b]) != best
    # The pool holds the 64 best of the 121 hypotheses, in order.
    expected_top = np.sort([s for s, _ in scored])[::-1][:64]
    np.testing.assert_allclose(scores[b], expected_top, rtol=1e-4, atol=1e-4)
  # The fixture is a real test: the optimum is not always the greedy sequence.
  assert found_shorter_than_max and beats_greedy


def test_beam_search_stops_early():
  params, context = make_model(6, 8, seed=3, eos_bias=8.0)
  positions = []
  def counting_step(cache, token, position):
    jax.debug.callback(lambda p: positions.append(int(p)), position)
    return cached_step(params, cache, token, position)
  ids, scores = jax.jit(lambda cache: autoregressive.beam_search(
      counting_step, cache, batch_size=BATCH, beam_size=2, max_len=8))(
          init_cache(params, context, 8))
  assert len(positions) < 8
  np.testing.assert_array_equal(np.asarray(ids)[:, 0, 0], EOS)
  assert np.all(np.isfinite(np.asarray(scores)))


def test_cache_helpers():
  tree = dict(kv=jnp.arange(6).reshape(2, 3), index=jnp.array(4))
  expanded = autoregressive.expand_to_beams(tree, batch_size=2, beam_size=2)
  np.testing.assert_array_equal(expanded['kv'], [[0, 1, 2], [0, 1, 2], [3, 4, 5], [3, 4, 5]])
  assert int(expanded['index']) == 4
  picked = autoregressive.gather_beams(dict(kv=jnp.arange(4)), jnp.array([[1, 1], [0, 1]]),
                                      batch_size=2, beam_size=2)
  np.testing.assert_array_equal(picked['kv'], [1, 1, 2, 3])
  with pytest.raises(ValueError, match='batch axis'):
    autoregressive.expand_to_beams(dict(kv=jnp.zeros((3, 2))), batch_size=2, beam_size=2)
  with pytest.raises(ValueError, match='length_penalty'):
    autoregressive.beam_search(lambda c, t, p: (None, c), {}, batch_size=1, max_len=2,
                              length_penalty=-1.0)

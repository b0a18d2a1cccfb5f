"""Image-to-text decoding with a KV cache: batched greedy decoding and beam search.

The text decoder comes in as a function, so both loops are pure and testable without a model:

  step_fn(cache, token [R] int32, position [] int32) -> (logits [R, V] float32, new_cache)

It feeds ONE token per row at `position` (0 for the BOS token) and returns the next-token logits;
`cache` is any pytree (the glue holds the flax 'cache' collection and whatever per-example data
the decoder attends to, such as the encoder features), R is the batch size for greedy decoding
and batch_size * beam_size for beam search. The image encoder therefore runs once, before the
loop, and each new token costs one decoder step on one position.

Both loops are one `lax.while_loop` that stops as soon as every sequence has finished. The ids
they return are the generated tokens (BOS excluded): the first EOS, then `pad_id` after it; a
sequence that never emits EOS fills all `max_len` positions.

Length normalisation is GNMT's: score = log p(y) / lp(|y|), lp(L) = ((5 + L) / 6)^alpha, where
|y| counts the generated tokens including the EOS.
"""
from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp

StepFn = Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, Any]]

# Finite stand-in for -inf in beam scores, so that sums and ratios stay free of NaN.
NEG_INF = -1.0e9


def gnmt_penalty(length, alpha: float):
  """GNMT length penalty lp = ((5 + length) / 6)^alpha (float32, broadcasts over `length`)."""
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


@flax.struct.dataclass
class GreedyState:
  """Loop carry of `greedy_decode`: position [] int32; ids [B, max_len]; log_prob [B];
  finished [B] bool (EOS emitted); cache."""
  position: jax.Array
  ids: jax.Array
  log_prob: jax.Array
  finished: jax.Array
  cache: Any


def greedy_decode(step_fn: StepFn, cache, *, batch_size: int, max_len: int, bos_id: int = 0,
                  eos_id: int = 1, pad_id: int = 0):
  """Greedy (argmax) decoding, batched, with a KV cache.

  Args:
    step_fn: (cache, token [B], position) -> (logits [B, V], new_cache).
    cache: initial cache pytree for B rows, holding room for `max_len` positions.
    batch_size: B.
    max_len: generated tokens at most (EOS included).
    bos_id: first input token.
    eos_id: token that ends a sequence.
    pad_id: written after the EOS.

  Returns:
    (ids [B, max_len] int32, log_prob [B] float32: the summed log-probabilities of the generated
    tokens up to and including the EOS).
  """
  def body(state: GreedyState) -> GreedyState:
    token = jnp.where(state.position == 0, bos_id,
                      state.ids[:, jnp.maximum(state.position - 1, 0)])
    logits, cache = step_fn(state.cache, token.astype(jnp.int32), state.position)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    next_token = jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
    next_log_prob = jnp.take_along_axis(log_probs, next_token[:, None], axis=-1)[:, 0]
    active = ~state.finished
    ids = state.ids.at[:, state.position].set(jnp.where(active, next_token, pad_id))
    return GreedyState(
        position=state.position + 1, ids=ids,
        log_prob=state.log_prob + jnp.where(active, next_log_prob, 0.0),
        finished=state.finished | (next_token == eos_id), cache=cache)

  state = GreedyState(position=jnp.zeros((), jnp.int32),
                      ids=jnp.full((batch_size, max_len), pad_id, jnp.int32),
                      log_prob=jnp.zeros((batch_size,), jnp.float32),
                      finished=jnp.zeros((batch_size,), bool), cache=cache)
  state = jax.lax.while_loop(
      lambda s: (s.position < max_len) & ~jnp.all(s.finished), body, state)
  return state.ids, state.log_prob


def _map_batch_leaves(fn, tree, rows: int, what: str):
  """Applies fn to every array leaf with a leading axis (which must have `rows` entries)."""
  def apply(leaf):
    leaf = jnp.asarray(leaf)
    if leaf.ndim == 0:
      return leaf  # e.g. a flax cache_index: shared by all rows.
    if leaf.shape[0] != rows:
      raise ValueError(f'{what}: a cache leaf has shape {leaf.shape}, but every array leaf must '
                       f'lead with the batch axis ({rows} rows); keep per-example data '
                       'batch-major.')
    return fn(leaf)
  return jax.tree_util.tree_map(apply, tree)


def expand_to_beams(tree, batch_size: int, beam_size: int):
  """Repeats every batch-major leaf [B, ...] -> [B * beam, ...] (row b * beam + k = row b)."""
  return _map_batch_leaves(lambda x: jnp.repeat(x, beam_size, axis=0), tree, batch_size,
                           'expand_to_beams')


def gather_beams(tree, beam_indices: jax.Array, batch_size: int, beam_size: int):
  """Picks, for each example, the rows of the chosen beams from [B * beam, ...] leaves.

  beam_indices: [B, n] int in [0, beam); returns [B * n, ...] leaves.
  """
  flat = (jnp.arange(batch_size)[:, None] * beam_size + beam_indices).reshape(-1)
  return _map_batch_leaves(lambda x: x[flat], tree, batch_size * beam_size, 'gather_beams')


@flax.struct.dataclass
class BeamState:
  """Loop carry of `beam_search`.

  position: [] int32, the next position to decode.
  alive_ids: [B, beam, max_len] int32, unfinished hypotheses (pad beyond `position`).
  alive_log_prob: [B, beam] float32, their summed log-probabilities (NEG_INF for none).
  finished_ids: [B, beam, max_len] int32, finished hypotheses, best first.
  finished_score: [B, beam] float32, their length-normalised scores (NEG_INF for none).
  cache: pytree with B * beam rows, one per alive hypothesis.
  """
  position: jax.Array
  alive_ids: jax.Array
  alive_log_prob: jax.Array
  finished_ids: jax.Array
  finished_score: jax.Array
  cache: Any


def beam_search(step_fn: StepFn, cache, *, batch_size: int, beam_size: int = 4, max_len: int,
                length_penalty: float = 0.6, bos_id: int = 0, eos_id: int = 1,
                pad_id: int = 0):
  """Beam search with GNMT length normalisation, batched, with a KV cache.

  Each step extends every alive hypothesis by every token and keeps the 2 * beam best
  candidates by summed log-probability (so at least `beam` of them do not end in EOS); the
  beam best non-EOS ones stay alive, the EOS ones (and, at the last position, all of them: a
  hypothesis cut at `max_len` counts as finished) join the finished pool, of which the beam
  best by normalised score are kept. An example is done when no alive hypothesis can still beat
  its worst kept finished one: log-probabilities only fall and, for alpha >= 0, lp is largest at
  `max_len`, so alive_log_prob / lp(max_len) bounds every continuation.

  Args:
    step_fn: (cache, token [B * beam], position) -> (logits [B * beam, V], new_cache).
    cache: initial cache pytree for B rows (batch-major array leaves; 0-d leaves are shared);
      it is repeated per beam here and gathered along beams after each step. Per-example data
      that `step_fn` closes over instead must already be repeated with `expand_to_beams`.
    batch_size: B.
    beam_size: beams per example (paper, after GIT: 4).
    max_len: generated tokens at most (EOS included).
    length_penalty: alpha of the GNMT penalty ((5 + L)^alpha / 6^alpha), >= 0; 0 ranks by
      log-probability. The ITIT paper gives none; 0.6 is GNMT's value, which GIT's decoding
      uses.
    bos_id: first input token.
    eos_id: token that ends a hypothesis.
    pad_id: written after the EOS.

  Returns:
    (ids [B, beam, max_len] int32, scores [B, beam] float32), beams sorted by descending score;
    -inf scores mark slots left empty (fewer than `beam` hypotheses exist).
  """
  if length_penalty < 0:
    raise ValueError(f'length_penalty must be >= 0 (the early-stop bound relies on it), '
                     f'got {length_penalty}.')
  alpha = length_penalty
  rows = batch_size * beam_size
  best_possible_penalty = gnmt_penalty(max_len, alpha)

  def body(state: BeamState) -> BeamState:
    position = state.position
    token = jnp.where(position == 0, bos_id, state.alive_ids[:, :, jnp.maximum(position - 1, 0)])
    logits, cache = step_fn(state.cache, token.reshape(rows).astype(jnp.int32), position)
    vocab_size = logits.shape[-1]
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    candidate_log_prob = (state.alive_log_prob[:, :, None]
                          + log_probs.reshape(batch_size, beam_size, vocab_size))
    top_log_prob, top_index = jax.lax.top_k(
        candidate_log_prob.reshape(batch_size, beam_size * vocab_size), 2 * beam_size)
    top_beam = top_index // vocab_size  # [B, 2 * beam]
    top_token = (top_index % vocab_size).astype(jnp.int32)
    top_ids = jnp.take_along_axis(state.alive_ids, top_beam[:, :, None], axis=1)
    top_ids = top_ids.at[:, :, position].set(top_token)
    top_valid = top_log_prob > NEG_INF / 2
    top_is_eos = top_token == eos_id

    # Alive: the beam best candidates that did not just emit EOS.
    alive_candidate = jnp.where(top_is_eos, NEG_INF, top_log_prob)
    alive_log_prob, alive_pick = jax.lax.top_k(alive_candidate, beam_size)
    alive_ids = jnp.take_along_axis(top_ids, alive_pick[:, :, None], axis=1)
    alive_source_beam = jnp.take_along_axis(top_beam, alive_pick, axis=1)
    cache = gather_beams(cache, alive_source_beam, batch_size, beam_size)

    # Finished: merge this step's EOS (or length-capped) candidates into the kept pool.
    finishing = (top_is_eos | (position == max_len - 1)) & top_valid
    new_score = jnp.where(finishing, top_log_prob / gnmt_penalty(position + 1, alpha),
                          NEG_INF)
    pool_score = jnp.concatenate([state.finished_score, new_score], axis=1)
    pool_ids = jnp.concatenate([state.finished_ids, top_ids], axis=1)
    finished_score, finished_pick = jax.lax.top_k(pool_score, beam_size)
    finished_ids = jnp.take_along_axis(pool_ids, finished_pick[:, :, None], axis=1)
    return BeamState(position=position + 1, alive_ids=alive_ids, alive_log_prob=alive_log_prob,
                     finished_ids=finished_ids, finished_score=finished_score, cache=cache)

  def keep_going(state: BeamState):
    best_alive_bound = state.alive_log_prob[:, 0] / best_possible_penalty
    worst_finished = state.finished_score[:, -1]
    example_done = (worst_finished > NEG_INF / 2) & (best_alive_bound < worst_finished)
    example_done |= state.alive_log_prob[:, 0] <= NEG_INF / 2
    return (state.position < max_len) & ~jnp.all(example_done)

  # Only beam 0 is live at the start: all beams are the same empty prefix.
  initial_log_prob = jnp.tile(jnp.array([0.0] + [NEG_INF] * (beam_size - 1), jnp.float32),
                              (batch_size, 1))
  empty_ids = jnp.full((batch_size, beam_size, max_len), pad_id, jnp.int32)
  state = BeamState(position=jnp.zeros((), jnp.int32), alive_ids=empty_ids,
                    alive_log_prob=initial_log_prob, finished_ids=empty_ids,
                    finished_score=jnp.full((batch_size, beam_size), NEG_INF, jnp.float32),
                    cache=expand_to_beams(cache, batch_size, beam_size))
  state = jax.lax.while_loop(keep_going, body, state)
  scores = jnp.where(state.finished_score > NEG_INF / 2, state.finished_score, -jnp.inf)
  return state.finished_ids, scores

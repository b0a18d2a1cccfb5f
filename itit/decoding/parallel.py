"""Text-to-image parallel decoding (MaskGIT / Muse) with classifier-free guidance.

The model comes in as a function, so the loop is pure and testable without one:

  logits_fn(tokens [B, N] int32, unknown_mask [B, N] bool) -> (cond_logits, uncond_logits)

each [B, N, K] float32 over the image codebook at every grid position (`tokens` holds
`mask_token_id` where `unknown_mask` is True). The glue computes both from one batched forward of
2B rows (the prompt's text features and the empty prompt); it may return `uncond_logits=None`
when it is called with `guidance_scale=0` and skip that half.

One step t of T (0-based), as in the paper's appendix B:
  1. guided logits l_g = (1 + tau) * l_c - tau * l_u (tau = guidance_scale; l_g = l_c at tau 0);
  2. at every unknown position sample a token from softmax(l_g / sample_temperature), optionally
     restricted to the top-k tokens and / or the top-p nucleus; the mask token itself, when it
     is inside the K logits, is never sampled;
  3. confidence = log p(sampled token) + temperature * (1 - (t + 1) / T) * g, g ~ Gumbel(0, 1),
     where p is the (filtered, renormalised) distribution the token was drawn from. This is
     MaskGIT's annealing (`choice_temperature * (1 - ratio)` with ratio = (t + 1) / T): the
     noise shrinks linearly and is 0 at the last step. Known tokens get confidence +inf;
  4. the `mask_schedule.masked_counts(...)[t]` least confident positions are re-masked (ranks
     from a stable sort, so the count is exact even with ties), the rest keep their sample.
Since a known token outranks every unknown one and the count never exceeds the number unknown,
a token once revealed is never re-masked, and after step T - 1 nothing is masked.
"""
from __future__ import annotations

from typing import Callable, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np

from itit.decoding import mask_schedule

LogitsFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, Optional[jax.Array]]]


def filter_logits(logits: jax.Array, top_k: Optional[int] = None,
                  top_p: Optional[float] = None) -> jax.Array:
  """Sets logits outside the top-k tokens and outside the top-p nucleus to -inf.

  Args:
    logits: [..., K] float.
    top_k: keep the k largest logits (ties with the k-th are kept too); None keeps all.
    top_p: keep the smallest set of most likely tokens whose probability sums to >= top_p (the
      most likely token is always kept); None or 1.0 keeps all.

  Returns:
    [..., K], the kept entries unchanged.
  """
  if top_k is not None:
    if not 1 <= top_k:
      raise ValueError(f'top_k must be >= 1 or None, got {top_k}.')
    if top_k < logits.shape[-1]:
      kth_largest = jax.lax.top_k(logits, top_k)[0][..., -1:]
      logits = jnp.where(logits < kth_largest, -jnp.inf, logits)
  if top_p is not None and top_p < 1.0:
    if not 0.0 < top_p:
      raise ValueError(f'top_p must be in (0, 1] or None, got {top_p}.')
    sorted_logits = -jnp.sort(-logits, axis=-1)
    sorted_probs = jax.nn.softmax(sorted_logits, axis=-1)
    # Probability mass strictly before each sorted token: a token is kept while that mass is
    # still short of top_p, which always keeps the first one.
    mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
    keep_sorted = mass_before < top_p
    num_kept = jnp.sum(keep_sorted, axis=-1, keepdims=True)
    threshold = jnp.take_along_axis(sorted_logits, num_kept - 1, axis=-1)
    logits = jnp.where(logits < threshold, -jnp.inf, logits)
  return logits


def guided_logits(cond_logits: jax.Array, uncond_logits: Optional[jax.Array],
                  guidance_scale) -> jax.Array:
  """Classifier-free guidance l_g = (1 + tau) l_c - tau l_u; l_c itself when tau is literally 0.

  With a Python 0 the unconditional logits are not read at all (they may be None or garbage).
  """
  if isinstance(guidance_scale, (int, float)) and guidance_scale == 0:
    return cond_logits
  if uncond_logits is None:
    raise ValueError(f'logits_fn returned uncond_logits=None but guidance_scale={guidance_scale}'
                     ' needs them; return both or pass guidance_scale=0.')
  return (1.0 + guidance_scale) * cond_logits - guidance_scale * uncond_logits


@flax.struct.dataclass
class ParallelDecodeState:
  """Loop carry of `parallel_decode`.

  step: [] int32, the next step to run.
  tokens: [B, N] int32, `mask_token_id` at positions still masked.
  history: [num_steps, B, N] int32, tokens after each step, or None when not asked for.
  """
  step: jax.Array
  tokens: jax.Array
  history: Optional[jax.Array]


def parallel_decode(rng: jax.Array, logits_fn: LogitsFn, *, batch_size: int, num_tokens: int,
                    mask_token_id: int, num_steps: int = 24, guidance_scale=2.0,
                    temperature=32.0, schedule: str = 'cosine', sample_temperature=1.0,
                    top_k: Optional[int] = None, top_p: Optional[float] = None,
                    initial_tokens: Optional[jax.Array] = None, return_history: bool = False):
  """Generates image tokens by iterative parallel decoding (see the module docstring).

  Jit it with everything but `rng`, `initial_tokens` (and any traced `guidance_scale`,
  `temperature`, `sample_temperature`) static, e.g. through `functools.partial`.

  Args:
    rng: PRNG key; the result is a deterministic function of it.
    logits_fn: (tokens [B, N] int32, unknown_mask [B, N] bool) -> (cond [B, N, K],
      uncond [B, N, K] or None), float32.
    batch_size: B.
    num_tokens: N, the image tokens per image (h * w).
    mask_token_id: id marking unknown positions (commonly K, the codebook size).
    num_steps: T, decoding steps (paper: 24).
    guidance_scale: tau of classifier-free guidance (paper: 2.0); 0 ignores uncond logits.
    temperature: scale t of the Gumbel noise added to the confidences (paper: 32), annealed by
      (1 - (step + 1) / T).
    schedule: mask schedule name, one of `mask_schedule.SCHEDULES`.
    sample_temperature: divides the guided logits before sampling (> 0).
    top_k: optional top-k filter of the sampling distribution.
    top_p: optional nucleus filter of the sampling distribution.
    initial_tokens: optional [B, N] int32 start, `mask_token_id` where unknown; the known tokens
      are kept as they are and the schedule runs over each row's unknown count. Default: all
      masked.
    return_history: also return the tokens after every step.

  Returns:
    tokens [B, N] int32, and history [T, B, N] int32 when `return_history` (history[-1] ==
    tokens; `mask_token_id` where a position was still masked after that step).
  """
  if isinstance(sample_temperature, (int, float)) and sample_temperature <= 0:
    raise ValueError(f'sample_temperature must be > 0, got {sample_temperature}.')
  if initial_tokens is None:
    initial_tokens = jnp.full((batch_size, num_tokens), mask_token_id, jnp.int32)
  elif tuple(initial_tokens.shape) != (batch_size, num_tokens):
    raise ValueError(f'initial_tokens has shape {tuple(initial_tokens.shape)}; expected '
                     f'(batch_size, num_tokens) = ({batch_size}, {num_tokens}).')
  initial_tokens = jnp.asarray(initial_tokens, jnp.int32)
  # Row n of the table is the count sequence for a row that starts with n unknown tokens.
  count_table = jnp.asarray(mask_schedule.masked_counts(np.arange(num_tokens + 1), num_steps,
                                                        schedule))
  num_unknown_at_start = jnp.sum(initial_tokens == mask_token_id, axis=-1)

  def decode_step(state: ParallelDecodeState) -> ParallelDecodeState:
    unknown = state.tokens == mask_token_id
    cond_logits, uncond_logits = logits_fn(state.tokens, unknown)
    logits = guided_logits(cond_logits, uncond_logits, guidance_scale).astype(jnp.float32)
    logits = logits / sample_temperature
    if mask_token_id < logits.shape[-1]:
      logits = logits.at[..., mask_token_id].set(-jnp.inf)
    logits = filter_logits(logits, top_k, top_p)
    sample_rng, noise_rng = jax.random.split(jax.random.fold_in(rng, state.step))
    sampled = jax.random.categorical(sample_rng, logits, axis=-1).astype(jnp.int32)
    sampled = jnp.where(unknown, sampled, state.tokens)

    log_probs = jax.nn.log_softmax(logits, axis=-1)
    sampled_log_prob = jnp.take_along_axis(log_probs, sampled[..., None], axis=-1)[..., 0]
    noise_scale = temperature * (1.0 - (state.step + 1) / num_steps)
    confidence = sampled_log_prob + noise_scale * jax.random.gumbel(noise_rng, sampled.shape)
    confidence = jnp.where(unknown, confidence, jnp.inf)

    num_to_mask = count_table[num_unknown_at_start, state.step]  # [B]
    # rank 0 = least confident; argsort is stable, so ties still give exactly num_to_mask.
    ranks = jnp.argsort(jnp.argsort(confidence, axis=-1), axis=-1)
    remask = ranks < num_to_mask[:, None]
    tokens = jnp.where(remask, mask_token_id, sampled)
    history = state.history
    if history is not None:
      history = jax.lax.dynamic_update_index_in_dim(history, tokens, state.step, axis=0)
    return ParallelDecodeState(step=state.step + 1, tokens=tokens, history=history)

  history = None
  if return_history:
    history = jnp.full((num_steps, batch_size, num_tokens), mask_token_id, jnp.int32)
  state = ParallelDecodeState(step=jnp.zeros((), jnp.int32), tokens=initial_tokens,
                              history=history)
  state = jax.lax.while_loop(lambda s: s.step < num_steps, decode_step, state)
  if return_history:
    return state.tokens, state.history
  return state.tokens

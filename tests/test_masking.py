"""Tests for itit.models.masking: ratio distribution, mask counts, dropping choices."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from itit.models import masking


def test_mask_ratio_bounds_and_mode():
  ratio = np.asarray(masking.sample_mask_ratio(jax.random.PRNGKey(0), (200_000,),
                                               mode=0.75, std=0.25, min=0.5, max=1.0))
  assert ratio.min() >= 0.5 and ratio.max() <= 1.0
  # A Gaussian centred at 0.75 truncated symmetrically: mean and histogram peak near 0.75.
  assert abs(ratio.mean() - 0.75) < 0.005
  hist, edges = np.histogram(ratio, bins=10, range=(0.5, 1.0))
  peak = (edges[np.argmax(hist)] + edges[np.argmax(hist) + 1]) / 2
  assert abs(peak - 0.75) <= 0.05
  # Truncated at the mode (I2T): the density is highest at the upper bound.
  ratio_i2t = np.asarray(masking.sample_mask_ratio(jax.random.PRNGKey(1), (100_000,), max=0.75))
  assert ratio_i2t.min() >= 0.5 and ratio_i2t.max() <= 0.75
  hist, _ = np.histogram(ratio_i2t, bins=5, range=(0.5, 0.75))
  assert np.all(np.diff(hist) > 0)


def test_mask_ratio_mode_above_max():
  """A mode above max (I2T ratios capped at 0.5) is a valid truncation: density rising to max."""
  ratio = np.asarray(masking.sample_mask_ratio(jax.random.PRNGKey(2), (100_000,), min=0.25,
                                               max=0.5))
  assert ratio.min() >= 0.25 and ratio.max() <= 0.5
  hist, _ = np.histogram(ratio, bins=5, range=(0.25, 0.5))
  assert np.all(np.diff(hist) > 0)
  fixed = masking.sample_mask_ratio(jax.random.PRNGKey(3), (10,), min=0.5, max=0.5)
  np.testing.assert_allclose(fixed, 0.5)


def test_mask_ratio_rejects_bad_bounds():
  with pytest.raises(ValueError, match='0 <= min <= max <= 1'):
    masking.sample_mask_ratio(jax.random.PRNGKey(0), (3,), min=0.8, max=0.75)
  with pytest.raises(ValueError, match='std > 0'):
    masking.sample_mask_ratio(jax.random.PRNGKey(0), (3,), std=0.0)


def test_cosine_mask_ratio_is_the_decoding_schedule():
  """ratio = cos(pi/2 u), u ~ U[0, 1): P(ratio <= x) = 1 - (2 / pi) arccos(x), on (0, 1]."""
  ratio = np.asarray(masking.cosine_mask_ratio(jax.random.PRNGKey(0), (200_000,)))
  assert ratio.min() > 0.0 and ratio.max() <= 1.0
  for x in (0.05, 0.2, 0.5, 0.75, 0.95):
    assert abs((ratio <= x).mean() - (1 - 2 / np.pi * np.arccos(x))) < 0.005, x
  # Sparse masks are common: a quarter of the draws mask less than 38% of the tokens, which the
  # paper's truncated Gaussian (min 0.5) never does.
  assert abs((ratio < np.cos(0.375 * np.pi)).mean() - 0.25) < 0.005


def test_random_mask_counts():
  ratio = jnp.array([0.0, 0.3, 0.5, 0.76, 1.0])
  mask = masking.random_mask(jax.random.PRNGKey(0), 5, 16, ratio, min_masked=8)
  np.testing.assert_array_equal(mask.sum(-1), [8, 8, 8, 12, 16])
  # At least one masked token even without a minimum.
  mask = masking.random_mask(jax.random.PRNGKey(0), 2, 16, 0.0)
  np.testing.assert_array_equal(mask.sum(-1), [1, 1])


def test_random_mask_is_uniform_over_positions():
  mask = masking.random_mask(jax.random.PRNGKey(3), 4000, 16, 0.5)
  frequency = np.asarray(mask).mean(0)
  np.testing.assert_allclose(frequency, 0.5, atol=0.04)


def test_choose_dropped_only_masked_and_kept_positions():
  rng = jax.random.PRNGKey(0)
  mask = masking.random_mask(rng, 8, 16, 0.7, min_masked=8)
  priority = jax.random.uniform(jax.random.PRNGKey(1), (8, 16))
  dropped = masking.choose_dropped(mask, 8, priority)
  np.testing.assert_array_equal(dropped.sum(-1), 8)
  assert not np.any(np.asarray(dropped & ~mask))
  # The lowest-priority masked positions are the dropped ones.
  for row in range(8):
    masked_priority = np.where(mask[row], priority[row], np.inf)
    np.testing.assert_array_equal(np.sort(np.argsort(masked_priority)[:8]),
                                  np.flatnonzero(dropped[row]))
  kept = masking.kept_positions(dropped, 8)
  for row in range(8):
    np.testing.assert_array_equal(kept[row], np.flatnonzero(~dropped[row]))


def test_fixed_drop_priority_is_a_permutation():
  priority = masking.fixed_drop_priority(16)
  np.testing.assert_array_equal(np.sort(priority * 16), np.arange(16))

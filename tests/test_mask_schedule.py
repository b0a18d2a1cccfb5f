import math

import numpy as np
import pytest

from itit.decoding import mask_schedule


def test_cosine_counts_are_the_floor_formula_for_paper_settings():
  counts = mask_schedule.masked_counts(256, 24)
  expected = [math.floor(256 * math.cos(math.pi / 2 * (t + 1) / 24)) for t in range(24)]
  assert expected[-1] == 0
  np.testing.assert_array_equal(counts, expected)
  assert counts.dtype == np.int32
  assert np.all(np.diff(counts) < 0)


def test_cosine_counts_small_grid():
  np.testing.assert_array_equal(mask_schedule.masked_counts(16, 6), [15, 13, 11, 8, 4, 0])


def test_linear_and_square_counts_are_exact_at_rational_points():
  # 3 * (1 - 1/3) is 1.9999999999999998 in float64; the floor must still give 2.
  np.testing.assert_array_equal(mask_schedule.masked_counts(3, 3, 'linear'), [2, 1, 0])
  np.testing.assert_array_equal(mask_schedule.masked_counts(100, 4, 'linear'), [75, 50, 25, 0])
  np.testing.assert_array_equal(mask_schedule.masked_counts(64, 4, 'square'), [60, 48, 28, 0])


def test_clamping_when_fewer_tokens_than_steps():
  counts = mask_schedule.masked_counts(3, 8)
  # Each step before the last keeps at least one masked and never un-reveals.
  np.testing.assert_array_equal(counts, [2, 1, 1, 1, 1, 1, 1, 0])
  np.testing.assert_array_equal(mask_schedule.masked_counts(1, 4), [1, 1, 1, 0])


def test_at_least_one_revealed_per_step_while_possible():
  counts = mask_schedule.masked_counts(5, 4, 'linear')
  # floor(5 * 0.75) = 3, floor(5 * 0.5) = 2, floor(5 * 0.25) = 1.
  np.testing.assert_array_equal(counts, [3, 2, 1, 0])
  counts = mask_schedule.masked_counts(30, 3, 'cosine')
  previous = 30
  for count in counts:
    assert count < previous
    previous = count


def test_vectorised_over_unknown_counts():
  table = mask_schedule.masked_counts(np.arange(20), 5)
  assert table.shape == (20, 5)
  np.testing.assert_array_equal(table[0], np.zeros(5))
  for n in range(20):
    np.testing.assert_array_equal(table[n], mask_schedule.masked_counts(n, 5))
  assert np.all(table[:, -1] == 0)


def test_single_step_reveals_everything():
  np.testing.assert_array_equal(mask_schedule.masked_counts(7, 1), [0])


def test_ratio_endpoints():
  for name in mask_schedule.SCHEDULES:
    assert mask_schedule.mask_ratio(0.0, name) == pytest.approx(1.0)
    assert mask_schedule.mask_ratio(1.0, name) == pytest.approx(0.0, abs=1e-12)
  assert mask_schedule.mask_ratio(0.5, 'cosine') == pytest.approx(math.sqrt(0.5))


def test_bad_arguments():
  with pytest.raises(ValueError, match='mask schedule'):
    mask_schedule.masked_counts(4, 4, 'exponential')
  with pytest.raises(ValueError, match='num_steps'):
    mask_schedule.masked_counts(4, 0)

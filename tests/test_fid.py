"""FID: pytorch-fid's Fréchet distance, statistics, batched features, resume, cached references."""
import os
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from PIL import Image

from itit.data.images import center_crop_resize
from itit.evaluation.metrics import fid
from itit.evaluation.metrics import inception


def pytorch_fid_frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
  """pytorch-fid's `calculate_frechet_distance`, written out directly as the reference."""
  mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
  sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
  diff = mu1 - mu2
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)  # scipy >= 1.16 deprecates disp
    covmean, _ = scipy.linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
      offset = np.eye(sigma1.shape[0]) * eps
      covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset), disp=False)[0]
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError('Imaginary component')
    covmean = covmean.real
  tr_covmean = np.trace(covmean)
  return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean


def _feature_sets(seed, num, dim):
  rng = np.random.default_rng(seed)
  mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
  real = np.maximum(rng.normal(size=(num, dim)) @ mixing + 0.5, 0).astype(np.float32)
  fake = np.maximum(rng.normal(size=(num, dim)) @ (mixing * 1.2) + 0.4, 0).astype(np.float32)
  return real, fake


@pytest.mark.parametrize('seed,num,dim', [(0, 500, 32), (1, 1000, 64), (2, 300, 128)])
def test_frechet_distance_equals_pytorch_fid(seed, num, dim):
  real, fake = _feature_sets(seed, num, dim)
  mu1, sigma1 = fid.statistics(real)
  mu2, sigma2 = fid.statistics(fake)
  ours = fid.frechet_distance(mu1, sigma1, mu2, sigma2)
  expected = pytorch_fid_frechet_distance(mu1, sigma1, mu2, sigma2)
  assert ours > 0.1
  assert ours == pytest.approx(expected, rel=1e-6)
  same = fid.frechet_distance(mu1, sigma1, mu1, sigma1)
  assert abs(same) < 1e-6 * ours


def test_frechet_distance_with_fewer_images_than_dims():
  # Rank-deficient covariances (40 images, 64 dims): the case that needs pytorch-fid's care.
  real, fake = _feature_sets(3, 40, 64)
  stats = [*fid.statistics(real), *fid.statistics(fake)]
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    expected = pytorch_fid_frechet_distance(*stats)
    ours = fid.frechet_distance(*stats)
  assert ours == pytest.approx(expected, rel=1e-6)


def test_non_finite_sqrtm_falls_back_to_eps_offset(monkeypatch):
  real, fake = _feature_sets(4, 200, 16)
  mu1, sigma1 = fid.statistics(real)
  mu2, sigma2 = fid.statistics(fake)
  exact_sqrtm = scipy.linalg.sqrtm
  calls = []

  def singular_first(matrix):
    calls.append(matrix)
    return np.full_like(matrix, np.inf) if len(calls) == 1 else exact_sqrtm(matrix)

  monkeypatch.setattr(scipy.linalg, 'sqrtm', singular_first)
  with pytest.warns(UserWarning, match='singular'):
    ours = fid.frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-3)
  offset = np.eye(16) * 1e-3
  np.testing.assert_allclose(calls[1], (sigma1 + offset) @ (sigma2 + offset), rtol=1e-14)
  covmean = np.real(exact_sqrtm(calls[1]))
  diff = mu1 - mu2
  expected = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)
  assert ours == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_analytic_values():
  # Diagonal covariances: FID = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
  a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
  mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
  value = fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
  assert value == pytest.approx(5.0 + 1.0 + 1.0 + 0.0, rel=1e-12)
  assert fid.frechet_distance(0.0, 2.0, 1.0, 8.0) == pytest.approx(1 + 2 + 8 - 2 * 4, rel=1e-12)
  with pytest.raises(ValueError, match='disagree in shape'):
    fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_statistics_are_mean_and_unbiased_covariance():
  features = np.random.default_rng(0).random((50, 6), dtype=np.float32)
  mu, sigma = fid.statistics(features)
  np.testing.assert_allclose(mu, features.astype(np.float64).mean(0), rtol=1e-12)
  np.testing.assert_allclose(sigma, np.cov(features.astype(np.float64), rowvar=False), rtol=1e-12)
  assert mu.dtype == sigma.dtype == np.float64
  with pytest.raises(ValueError, match='num_images >= 2'):
    fid.statistics(features[:1])


def _fake_images(start, stop):
  """Images that depend on their index only, as a seeded generator's would."""
  return np.stack([np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8)
                   for i in range(start, stop)])


def _fake_features(images):
  """A cheap stand-in for Inception: per-channel mean and max, [n, 6]."""
  images = np.asarray(images, np.float32)
  return np.concatenate([images.mean(axis=(1, 2)), images.max(axis=(1, 2))], axis=1)


def test_accumulate_features_resumes_after_interruption(tmp_path):
  expected = _fake_features(_fake_images(0, 23))
  cache = str(tmp_path / 'run.features.npz')
  requested = []

  def interrupted(start, stop):
    if start >= 12:
      raise KeyboardInterrupt  # e.g. preemption in the middle of the run
    requested.append((start, stop))
    return _fake_images(start, stop)

  with pytest.raises(KeyboardInterrupt):
    fid.accumulate_features(interrupted, 23, cache, _fake_features, batch_size=4, save_every=8,
                            run_key='ckpt-100')
  assert requested == [(0, 4), (4, 8), (8, 12)]
  with np.load(cache) as partial:  # saved after 8 images; the batch 8..12 is redone
    assert partial['features'].shape == (8, 6)

  requested.clear()

  def counting(start, stop):
    requested.append((start, stop))
    return _fake_images(start, stop)

  features = fid.accumulate_features(counting, 23, cache, _fake_features, batch_size=4,
                                     save_every=8, run_key='ckpt-100')
  assert requested == [(8, 12), (12, 16), (16, 20), (20, 23)]
  np.testing.assert_array_equal(features, expected)
  # Complete: a rerun makes no images at all.
  requested.clear()
  again = fid.accumulate_features(counting, 23, cache, _fake_features, batch_size=4,
                                  run_key='ckpt-100')
  assert requested == [] and np.array_equal(again, expected)
  with pytest.raises(ValueError, match='features of another run.*Delete it'):
    fid.accumulate_features(counting, 23, cache, _fake_features, batch_size=4, run_key='ckpt-200')
  with pytest.raises(ValueError, match='returned 3 images, expected 4'):
    fid.accumulate_features(lambda a, b: _fake_images(a, b - 1), 8, str(tmp_path / 'x.npz'),
                            _fake_features, batch_size=4)


class _FakeExtractor:
  digest = 'fake-network'
  batch_size = 3

  def __init__(self):
    self.calls = 0

  def __call__(self, images):
    self.calls += 1
    return _fake_features(images)


def test_reference_statistics_are_cached_by_image_list(tmp_path):
  names = [f'img_{i}.jpg' for i in range(10)]
  index = {name: i for i, name in enumerate(names)}
  load = lambda batch: np.concatenate([_fake_images(index[n], index[n] + 1) for n in batch])
  extractor = _FakeExtractor()
  mu, sigma = fid.reference_statistics(names, load, extractor, str(tmp_path), resolution=8)
  expected_mu, expected_sigma = fid.statistics(_fake_features(_fake_images(0, 10)))
  np.testing.assert_allclose(mu, expected_mu, rtol=1e-12)
  np.testing.assert_allclose(sigma, expected_sigma, rtol=1e-12)
  assert extractor.calls == 4
  key = fid.reference_key(names, 'fake-network', 8)
  assert sorted(os.listdir(tmp_path)) == [f'fid_ref_{key}.npz']
  # Cached: no image is loaded again, and the file has pytorch-fid's keys.
  cached = fid.reference_statistics(names, None, extractor, str(tmp_path), resolution=8)
  assert extractor.calls == 4
  np.testing.assert_array_equal(cached[0], mu)
  np.testing.assert_array_equal(fid.load_statistics(str(tmp_path / f'fid_ref_{key}.npz'))[1], sigma)
  # Another image list, resolution or network is another key.
  assert len({key, fid.reference_key(names[:9], 'fake-network', 8),
              fid.reference_key(names, 'fake-network', 16),
              fid.reference_key(names, 'other-network', 8)}) == 4


def test_load_statistics_names_missing_keys(tmp_path):
  path = str(tmp_path / 'stats.npz')
  np.savez(path, mean=np.zeros(3))
  with pytest.raises(ValueError, match='stats.npz: FID statistics need arrays "mu" and "sigma"'):
    fid.load_statistics(path)


def test_feature_extractor_pads_batches_and_compiles_once(monkeypatch):
  traces = []

  def fake_pool3(params, images):
    traces.append(images.shape)
    return jnp.mean(images.astype(jnp.float32), axis=(1, 2)) * params['params']['scale']

  monkeypatch.setattr(inception, 'pool3_features', fake_pool3)
  extractor = fid.FeatureExtractor({'params': {'scale': np.float32(2.0)}}, batch_size=4)
  images = _fake_images(0, 10)
  features = extractor(images)
  np.testing.assert_allclose(features, images.mean(axis=(1, 2)) * 2.0, rtol=1e-6)
  assert features.dtype == np.float32 and traces == [(4, 8, 8, 3)]
  assert extractor(images[:0]).shape == (0, inception.FEATURE_DIM)
  with pytest.raises(ValueError, match=r'uint8 \[n, height, width, 3\]'):
    extractor(images.astype(np.float32))


def test_load_reference_image_is_the_training_crop(tmp_path):
  pixels = np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)
  path = str(tmp_path / 'photo.png')
  Image.fromarray(pixels).save(path)
  loaded = fid.load_reference_image(path, 32)
  assert loaded.shape == (32, 32, 3) and loaded.dtype == np.uint8
  np.testing.assert_array_equal(loaded, center_crop_resize(Image.fromarray(pixels), 32))

"""Fréchet Inception Distance: pool3 features, statistics, the distance, cached references.

FID = |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr(sqrtm(S1 S2)) over the pool3 features of the FID
InceptionV3 (`itit.evaluation.metrics.inception`), computed exactly as pytorch-fid's
`calculate_frechet_distance` (scipy's `sqrtm`; when it is not finite, an eps * I offset on both
covariances; an imaginary part on the diagonal above 1e-3 is an error, otherwise it is dropped).

Long runs (30,000 images for COCO FID-30K) go through `accumulate_features`: images are made
(generated or loaded) batch by batch from their index range, features are saved to a partial
.npz every few thousand images, and a rerun after an interruption continues from there. The
reference statistics of real images are cached as .npz (keys 'mu', 'sigma', readable by
pytorch-fid) under a name that hashes the image list, the resolution and the network's weights.
The protocol itself is written down in docs/EVALUATION.md.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from typing import Callable, Sequence

import jax
import numpy as np
import scipy.linalg
from PIL import Image
from PIL import ImageOps
from tqdm import tqdm

from itit.data import images as image_lib
from itit.evaluation.metrics import inception

DEFAULT_SAVE_EVERY = 2000


def statistics(features) -> tuple[np.ndarray, np.ndarray]:
  """`[num_images, dim]` features -> (mean `[dim]`, covariance `[dim, dim]`), float64.

  The covariance is the unbiased one (`np.cov(rowvar=False)`), as in pytorch-fid; both are
  computed in float64 from the float32 features.
  """
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(f'FID statistics need [num_images >= 2, dim] features, got {features.shape}.')
  return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
  """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), pytorch-fid's formula."""
  mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
  sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
    raise ValueError(f'FID statistics disagree in shape: mu {mu1.shape} vs {mu2.shape}, sigma '
                     f'{sigma1.shape} vs {sigma2.shape} (were they made by the same network?).')
  diff = mu1 - mu2
  covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
  if not np.isfinite(covmean).all():
    warnings.warn(f'FID: product of covariances is singular; adding {eps} to the diagonals.')
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(f'FID: sqrtm has an imaginary component of '
                       f'{np.max(np.abs(covmean.imag)):.3g} (too few images for the dimension?).')
    covmean = covmean.real
  return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


class FeatureExtractor:
  """uint8 `[n, h, w, 3]` RGB images -> float32 `[n, 2048]` pool3 features, in jitted batches.

  Every batch is padded to `batch_size`, so one image size compiles once. `digest` identifies the
  weights (it keys the reference statistics cache).
  """

  def __init__(self, params, batch_size: int = 50):
    if batch_size < 1:
      raise ValueError(f'FeatureExtractor batch_size must be >= 1, got {batch_size}.')
    self.batch_size = batch_size
    self.digest = inception.params_digest(params)
    self._params = jax.device_put(params)
    self._features = jax.jit(inception.pool3_features)

  @classmethod
  def from_npz(cls, npz_path: str, batch_size: int = 50) -> 'FeatureExtractor':
    """From the .npz that python -m tools.convert_inception writes."""
    return cls(inception.load_params(npz_path), batch_size)

  def __call__(self, images) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError('FeatureExtractor takes uint8 [n, height, width, 3] RGB images, got '
                       f'{images.dtype} {images.shape}.')
    outputs = []
    for start in range(0, len(images), self.batch_size):
      batch = images[start:start + self.batch_size]
      valid = len(batch)
      if valid < self.batch_size:
        batch = np.concatenate([batch, np.zeros((self.batch_size - valid, *batch.shape[1:]),
                                                np.uint8)])
      outputs.append(np.asarray(self._features(self._params, batch))[:valid])
    if not outputs:
      return np.zeros((0, inception.FEATURE_DIM), np.float32)
    return np.concatenate(outputs).astype(np.float32)


def _write_npz(path, **arrays):
  """Writes atomically: an interruption mid-write leaves the previous file intact."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  temporary = f'{path}.tmp'
  with open(temporary, 'wb') as f:
    np.savez(f, **arrays)
  os.replace(temporary, path)


def _load_partial(cache_path, num_images, run_key):
  with np.load(cache_path, allow_pickle=False) as data:
    stored_key, stored_total = str(data['run_key']), int(data['num_images'])
    if stored_key != run_key or stored_total != num_images:
      raise ValueError(
          f'{cache_path} holds features of another run ({stored_total} images, key '
          f'{stored_key!r}; this run: {num_images} images, key {run_key!r}). Delete it to start '
          'over, or pass another cache_path.')
    return np.array(data['features'], np.float32)


def accumulate_features(batches_fn: Callable[[int, int], np.ndarray], num_images: int,
                        cache_path: str, feature_fn: Callable[[np.ndarray], np.ndarray], *,
                        batch_size: int, run_key: str = '', save_every: int = DEFAULT_SAVE_EVERY,
                        desc: str = 'FID features') -> np.ndarray:
  """Features of `num_images` images made batch by batch, resumable from `cache_path`.

  Args:
    batches_fn: `(start, stop) -> uint8 [stop - start, h, w, 3]` images number start..stop-1.
      It must depend on the indices only (prompts and seeds drawn per index), so that a resumed
      run makes the same images as an uninterrupted one.
    num_images: how many images in all.
    cache_path: .npz holding the features done so far; rewritten every `save_every` images and at
      the end, where it then serves as the cache of the whole run.
    feature_fn: `images -> [n, dim]` features, e.g. a `FeatureExtractor`.
    batch_size: images per `batches_fn` call.
    run_key: identifies the run (checkpoint, sampler settings); a cache written under another key
      or image count is refused rather than silently mixed in.
    save_every: images between saves (a save rewrites the whole file).
    desc: progress bar label.

  Returns:
    float32 `[num_images, dim]` features in index order.
  """
  if num_images < 1 or batch_size < 1:
    raise ValueError(f'accumulate_features: num_images ({num_images}) and batch_size '
                     f'({batch_size}) must be >= 1.')
  chunks = []
  if os.path.exists(cache_path):
    chunks.append(_load_partial(cache_path, num_images, run_key))
  done = len(chunks[0]) if chunks else 0
  if done == num_images:
    return chunks[0]
  last_saved = done
  with tqdm(total=num_images, initial=done, unit='img', desc=desc, dynamic_ncols=True,
            smoothing=0.1) as progress:
    start_time, start_done = time.time(), done
    while done < num_images:
      stop = min(done + batch_size, num_images)
      images = batches_fn(done, stop)
      if len(images) != stop - done:
        raise ValueError(f'batches_fn({done}, {stop}) returned {len(images)} images, expected '
                         f'{stop - done}.')
      chunks.append(np.asarray(feature_fn(images), np.float32))
      done = stop
      progress.update(len(images))
      if done - last_saved >= save_every or done == num_images:
        features = np.concatenate(chunks)
        chunks = [features]
        _write_npz(cache_path, features=features, num_images=np.int64(num_images),
                   run_key=np.str_(run_key))
        last_saved = done
        rate = (done - start_done) / max(time.time() - start_time, 1e-9)
        progress.set_postfix_str(f'saved {done}, {rate:.1f} img/s')
  return chunks[0]


def save_statistics(path: str, mu, sigma, **metadata) -> None:
  """Writes 'mu' and 'sigma' (pytorch-fid's keys) and string metadata to `path` (.npz)."""
  _write_npz(path, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64),
             **{k: np.str_(v) for k, v in metadata.items()})


def load_statistics(path: str) -> tuple[np.ndarray, np.ndarray]:
  """(mu, sigma) from an .npz with keys 'mu' and 'sigma' (ours or pytorch-fid's)."""
  with np.load(path, allow_pickle=False) as data:
    if 'mu' not in data.files or 'sigma' not in data.files:
      raise ValueError(f'{path}: FID statistics need arrays "mu" and "sigma", found {data.files}.')
    return np.array(data['mu'], np.float64), np.array(data['sigma'], np.float64)


def reference_key(image_names: Sequence[str], network_digest: str, resolution: int) -> str:
  """16 hex chars naming reference statistics: image list (in order), resolution and network."""
  payload = json.dumps({'images': [str(n) for n in image_names], 'network': network_digest,
                        'resolution': int(resolution)})
  return hashlib.sha256(payload.encode()).hexdigest()[:16]


def load_reference_image(path: str, resolution: int) -> np.ndarray:
  """A real image as the model sees it: EXIF-oriented RGB, central square, bicubic to `resolution`.

  Decoded at full size (no JPEG draft scaling), so the statistics do not depend on decoder
  shortcuts. Returns uint8 `[resolution, resolution, 3]`.
  """
  with Image.open(path) as image:
    image = ImageOps.exif_transpose(image)
    return image_lib.center_crop_resize(image, resolution)


def reference_statistics(image_names: Sequence[str],
                         load_images: Callable[[Sequence[str]], np.ndarray],
                         extractor: FeatureExtractor, cache_dir: str, *, resolution: int,
                         batch_size: int | None = None,
                         save_every: int = DEFAULT_SAVE_EVERY) -> tuple[np.ndarray, np.ndarray]:
  """(mu, sigma) of real images, computed once and cached in `cache_dir/fid_ref_<key>.npz`.

  Args:
    image_names: the reference images (e.g. COCO file paths), in a fixed order.
    load_images: `names -> uint8 [n, resolution, resolution, 3]`, e.g. built on
      `load_reference_image`.
    extractor: the `FeatureExtractor`; its weights are part of the cache key.
    cache_dir: folder for the statistics and, while running, the resumable partial features.
    resolution: the side the images are loaded at (the model's resolution), part of the key.
    batch_size: images per `load_images` call (default: the extractor's batch size).
    save_every: images between saves of the partial features.
  """
  names = list(image_names)
  key = reference_key(names, extractor.digest, resolution)
  stats_path = os.path.join(cache_dir, f'fid_ref_{key}.npz')
  if os.path.exists(stats_path):
    return load_statistics(stats_path)
  partial_path = os.path.join(cache_dir, f'fid_ref_{key}.features.npz')
  features = accumulate_features(
      lambda start, stop: load_images(names[start:stop]), len(names), partial_path, extractor,
      batch_size=batch_size or extractor.batch_size, run_key=key, save_every=save_every,
      desc='FID reference features')
  mu, sigma = statistics(features)
  save_statistics(stats_path, mu, sigma, key=key, network=extractor.digest,
                  num_images=str(len(names)), resolution=str(resolution))
  os.remove(partial_path)  # the statistics are all later runs need; the features are large
  return mu, sigma

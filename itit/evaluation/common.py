"""What every evaluator shares: the run's model and tokenizers, compiled samplers, FID helpers.

An evaluator (big_vision style) is built once from an `EvalContext` and then called as
`run(params, rng=None, step=None) -> {name: value}` as often as needed (every N training steps,
or once by `python -m itit.evaluate`). Its compiled functions come from the context, so the
shapes and cycle evaluators share one captioner and one image sampler.
"""
from __future__ import annotations

import abc
import functools
import os
import zlib
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from itit.data import shards
from itit.data.text_tokenizer import TextTokenizer
from itit.decoding import generate
from itit.evaluation.metrics import fid
from itit.evaluation.metrics import inception
from itit.models import vqgan


def stream_tokenizers(shard_dir: str) -> tuple[TextTokenizer, tuple[dict, object]]:
  """The SentencePiece model and VQGAN that made a shard folder, checked against its manifest."""
  manifest = shards.read_manifest(shard_dir)
  made_by = manifest.get('config', {})
  text_path = made_by.get('text_tokenizer_path')
  image_path = made_by.get('image_tokenizer_path')
  if not text_path or not image_path:
    raise ValueError(f'{shard_dir}/manifest.json does not say which tokenizers made it; '
                     're-run itit.prepare, or pass the tokenizer paths explicitly')
  text_tokenizer = TextTokenizer.load(text_path)
  params, vq_config = vqgan.load_tokenizer(image_path)
  shards.check_manifest(manifest, {'text_tokenizer': text_tokenizer.identity,
                                   'image_tokenizer': {'sha256': vq_config.sha256}}, shard_dir)
  return text_tokenizer, (params, vq_config)


class Evaluator(abc.ABC):
  """Base class: `run` returns scalar metrics; `images` and `notes` describe the last run."""
  name = ''

  def __init__(self, context: 'EvalContext'):
    self.context = context
    self.images: dict[str, np.ndarray] = {}  # figures of the last run, for TensorBoard
    self.notes: list[str] = []  # caveats worth printing next to the numbers

  @abc.abstractmethod
  def run(self, params, rng=None, step: int | None = None) -> dict[str, float]:
    """Scores `params` (the full model parameters); `step` names the checkpoint in caches."""

  def rng(self, rng):
    """The evaluator's own key: `rng` (default: PRNGKey(eval.seed)) folded with its name."""
    if rng is None:
      rng = jax.random.PRNGKey(self.context.eval_config.seed)
    return jax.random.fold_in(rng, zlib.crc32(self.name.encode()) & 0x7FFFFFFF)


class EvalContext:
  """A run's model, settings and tokenizers, with compiled generation functions made once.

  Args:
    config: the run's config (model, data); eval_config: the merged `eval.*` settings
      (`itit.evaluation.merged_config`). workdir: the run's folder (caches go under
      `out_dir`, default WORKDIR/eval).
  """

  def __init__(self, config, model, eval_config: ml_collections.ConfigDict, *,
               workdir: str = '', out_dir: str = ''):
    self.config = config
    self.model = model
    self.eval_config = eval_config
    self.workdir = os.path.abspath(workdir) if workdir else ''
    self.out_dir = out_dir or (os.path.join(self.workdir, 'eval') if workdir else '')
    self.text_tokenizer, (self.vq_params, self.vq_config) = stream_tokenizers(
        self._tokenizer_source())
    batch_size = eval_config.batch_size
    self.tokenize_images = vqgan.tokenizer_fn(self.vq_params, self.vq_config, batch_size)
    self.detokenize = vqgan.detokenizer_fn(self.vq_params, self.vq_config, batch_size)
    self.image_kwargs = dict(num_steps=eval_config.num_steps,
                             guidance_scale=eval_config.guidance_scale,
                             temperature=eval_config.temperature,
                             sample_temperature=eval_config.sample_temperature,
                             top_k=eval_config.top_k or None,
                             train_matched_drop=eval_config.train_matched_drop)
    self._captioners = {}
    self._image_sampler = None
    self._per_example_sampler = None
    self._extractor = None

  def split_dir(self, split: str) -> str:
    """The shard folder of a split: 'test' is data.test, any other name a folder of data.dir."""
    data = self.config.data
    return os.path.join(data.dir, data.test if split == 'test' else split)

  def _tokenizer_source(self) -> str:
    for split in ('test', self.config.data.paired):
      folder = self.split_dir(split)
      if os.path.isfile(os.path.join(folder, 'manifest.json')):
        return folder
    raise FileNotFoundError(f'no prepared shards under data.dir={self.config.data.dir!r} (looked '
                            f'for {self.config.data.test}/ and {self.config.data.paired}/): the '
                            'evaluators find the VQGAN and SentencePiece model through them')

  def captioner(self, beam_size: int) -> Callable:
    """jit(params, image_tokens [B, N]) -> (ids [B, L], scores [B]), one per beam size."""
    if beam_size not in self._captioners:
      self._captioners[beam_size] = generate.jit_captioner(self.model, beam_size=beam_size)
    return self._captioners[beam_size]

  def image_sampler(self) -> Callable:
    """jit(params, text_ids [B, L], rng) -> image tokens [B, N] with the eval sampler settings."""
    if self._image_sampler is None:
      self._image_sampler = generate.jit_image_sampler(self.model, **self.image_kwargs)
    return self._image_sampler

  def caption_ids(self, params, image_tokens: np.ndarray, beam_size: int) -> np.ndarray:
    """Captions of image tokens [N, tokens] in eval batches: ids [N, L]."""
    captioner = self.captioner(beam_size)
    return batched(lambda batch, _: captioner(params, batch)[0], image_tokens,
                   self.eval_config.batch_size)

  def sampled_image_tokens(self, params, text_ids: np.ndarray, rng) -> np.ndarray:
    """Images of text ids [N, L] in eval batches (batch i drawn with fold_in(rng, i)):
    tokens [N, tokens]."""
    sampler = self.image_sampler()
    return batched(lambda batch, i: sampler(params, batch, jax.random.fold_in(rng, i)),
                   text_ids, self.eval_config.batch_size)

  def per_example_sampler(self) -> Callable:
    """jit(params, text_ids [B, L], keys [B, 2]) -> tokens [B, N]; image i depends on key i only.

    For protocols where an image must not depend on its batch (FID-30K resumes mid-way).
    """
    if self._per_example_sampler is None:
      sample_one = functools.partial(generate.generate_images, model=self.model,
                                     **self.image_kwargs)
      self._per_example_sampler = jax.jit(jax.vmap(
          lambda params, ids, key: sample_one(params, ids[None], key)[0],
          in_axes=(None, 0, 0)))
    return self._per_example_sampler

  def extractor(self) -> fid.FeatureExtractor | None:
    """The FID network from `eval.inception` (an .npz of `python -m tools.convert_inception`),
    or None."""
    path = self.eval_config.inception
    if not path:
      return None
    if self._extractor is None:
      if not os.path.isfile(path):
        raise FileNotFoundError(f'eval.inception={path!r} does not exist: convert the FID '
                                'network with python -m tools.convert_inception '
                                '(docs/EVALUATION.md)')
      self._extractor = fid.FeatureExtractor(inception.load_params(path),
                                             self.eval_config.inception_batch_size)
    return self._extractor


def batched(fn: Callable[[np.ndarray, int], np.ndarray], inputs: np.ndarray, batch_size: int):
  """`fn(batch, batch_index)` over fixed-size batches of `inputs`, outputs concatenated.

  The last batch is padded with copies of its last row (cut off again), so one compile serves.
  """
  outputs = []
  for index, start in enumerate(range(0, len(inputs), batch_size)):
    chunk = np.asarray(inputs[start:start + batch_size])
    valid = len(chunk)
    if valid < batch_size:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - valid, axis=0)])
    outputs.append(np.asarray(fn(chunk, index))[:valid])
  return np.concatenate(outputs)


def keys_for(rng, indices) -> jax.Array:
  """[len(indices), 2] keys: `fold_in(rng, i)` for each index i (FID-30K's per-image keys)."""
  return jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.asarray(indices, jnp.uint32))


def frechet_distance_to_features(features, mu_ref, sigma_ref) -> float:
  """FID of a feature set `[m, d]` against reference statistics, exact for any m.

  With m - 1 < d the sample covariance S = B^T B / (m - 1) (B: centred features) has rank < d
  and Tr sqrtm(S_ref S) equals the sum of square roots of the eigenvalues of the m x m matrix
  B S_ref B^T / (m - 1), since AB and BA share their non-zero eigenvalues. That costs an m x m
  eigendecomposition instead of a 2048 x 2048 `sqrtm` (a minute on two CPU cores) whose input is
  then singular anyway. With m > d this is pytorch-fid's computation (`fid.frechet_distance`).
  """
  features = np.asarray(features, np.float64)
  mu_ref, sigma_ref = np.asarray(mu_ref, np.float64), np.asarray(sigma_ref, np.float64)
  num, dim = features.shape
  if num < 2:
    raise ValueError(f'FID needs at least 2 images, got {num}.')
  if num > dim:
    return fid.frechet_distance(*fid.statistics(features), mu_ref, sigma_ref)
  mu = features.mean(axis=0)
  centred = features - mu
  small = centred @ sigma_ref @ centred.T / (num - 1)
  eigenvalues = np.clip(np.linalg.eigvalsh((small + small.T) / 2), 0.0, None)
  diff = mu - mu_ref
  trace_sigma = np.sum(centred * centred) / (num - 1)
  return float(diff.dot(diff) + np.trace(sigma_ref) + trace_sigma
               - 2.0 * np.sum(np.sqrt(eigenvalues)))

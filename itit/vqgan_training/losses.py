"""Losses and codebook upkeep for training the VQGAN tokenizer (itit/vqgan_training/step.py).

- `reconstruction_loss`: weighted L1 + L2 on pixels in [0, 1].
- The codebook stays a plain parameter (MaskGIT's checkpoint needs that) and is learned either by
  MaskGIT's codebook loss (codebook.ema_decay = 0) or, much faster on a small budget, by
  exponential-moving-average k-means (`ema_codebook_update`, ema_decay > 0), which moves each code
  straight to the mean of the encoder outputs it quantizes instead of lr-sized Adam steps. Either
  way the encoder gets the commitment loss, and codes that no encoder output picked for a while
  are re-seeded from encoder outputs (`restart_dead_codes`).
- `PatchDiscriminator` + hinge losses: the optional adversarial term.
- `load_feature_net` + `perceptual_loss`: the optional perceptual term, on a conv feature net
  whose weights the user supplies as an .npz (no weights can be downloaded here).
"""
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def reconstruction_loss(images, reconstructions, l1_weight, l2_weight):
  """images, reconstructions [B, H, W, 3] -> scalar l1_weight * |d| + l2_weight * d^2 (means)."""
  diff = reconstructions - images
  return l1_weight * jnp.mean(jnp.abs(diff)) + l2_weight * jnp.mean(diff**2)


def restart_dead_codes(codebook, code_counts, features, rng, min_count, sampling='uniform'):
  """Re-seeds codes used fewer than `min_count` times with encoder outputs.

  Args:
    codebook: [K, D] code vectors.
    code_counts: [K] how often each code was picked since the last restart.
    features: [..., D] encoder outputs of the current batch.
    rng: PRNG key choosing which encoder outputs seed the dead codes.
    min_count: codes picked fewer times than this are dead.
    sampling: 'uniform' (every encoder output equally likely) or 'error' (probability
      proportional to the output's squared distance to its nearest code, as in k-means++).
      'error' matters for images dominated by one patch, such as the shapes world's plain
      background: uniform seeds land mostly on that patch, and the re-seeded codes split it into
      many codes that differ only by context, so the tokens of a blank area look random.

  Returns:
    (codebook [K, D] with dead rows replaced, number of codes replaced).
  """
  flat = features.reshape(-1, features.shape[-1])
  if sampling == 'uniform':
    picks = jax.random.randint(rng, (codebook.shape[0],), 0, flat.shape[0])
  elif sampling == 'error':
    distances = (jnp.sum(flat**2, -1, keepdims=True) - 2 * flat @ codebook.T
                 + jnp.sum(codebook**2, -1)[None])
    error = jnp.maximum(jnp.min(distances, axis=-1), 0.0)
    # All outputs already on a code: fall back to uniform.
    logits = jnp.where(jnp.sum(error) > 0, jnp.log(error + 1e-30), 0.0)
    picks = jax.random.categorical(rng, logits, shape=(codebook.shape[0],))
  else:
    raise ValueError(f"codebook.restart_sampling must be 'uniform' or 'error', got {sampling!r}")
  dead = code_counts < min_count
  new_codebook = jnp.where(dead[:, None], flat[picks], codebook)
  return new_codebook, jnp.sum(dead)


def ema_codebook_update(ema_counts, ema_sums, tokens, features, decay):
  """One EMA k-means step of the codebook.

  Args:
    ema_counts: [K] moving average of how many encoder outputs each code quantized.
    ema_sums: [K, D] moving average of the sum of those encoder outputs.
    tokens: int [...] the codes picked for `features`.
    features: [..., D] encoder outputs.
    decay: EMA decay in (0, 1).

  Returns:
    (ema_counts [K], ema_sums [K, D], codebook [K, D] = ema_sums / ema_counts). A code nothing
    picked keeps its value: its count and sum decay together.
  """
  flat = features.reshape(-1, features.shape[-1])
  counts = jnp.zeros_like(ema_counts).at[tokens.reshape(-1)].add(1.0)
  sums = jnp.zeros_like(ema_sums).at[tokens.reshape(-1)].add(flat)
  ema_counts = decay * ema_counts + (1 - decay) * counts
  ema_sums = decay * ema_sums + (1 - decay) * sums
  return ema_counts, ema_sums, ema_sums / jnp.maximum(ema_counts, 1e-30)[:, None]


class PatchDiscriminator(nn.Module):
  """PatchGAN: images [B, H, W, 3] in [0, 1] -> logits [B, H / 2^num_layers, W / .., 1]."""
  filters: int = 64
  num_layers: int = 2

  @nn.compact
  def __call__(self, images):
    x = nn.leaky_relu(nn.Conv(self.filters, (4, 4), strides=2)(images * 2.0 - 1.0), 0.2)
    for layer in range(1, self.num_layers):
      x = nn.Conv(self.filters * 2**layer, (4, 4), strides=2, use_bias=False)(x)
      x = nn.leaky_relu(nn.GroupNorm(num_groups=min(32, self.filters))(x), 0.2)
    return nn.Conv(1, (3, 3))(x)


def discriminator_hinge_loss(real_logits, fake_logits):
  """Hinge loss for the discriminator: mean relu(1 - D(x)) + mean relu(1 + D(G(x)))."""
  return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))


def generator_hinge_loss(fake_logits):
  """Hinge loss for the generator (the VQGAN): -mean D(G(x))."""
  return -jnp.mean(fake_logits)


def adversarial_weight(step, start, warmup_steps, weight):
  """0 before `start`, then a linear ramp to `weight` over `warmup_steps` (warm-up)."""
  ramp = jnp.clip((step - start + 1) / max(warmup_steps, 1), 0.0, 1.0)
  return jnp.where(step >= start, weight * ramp, 0.0)


def load_feature_net(path):
  """Loads the perceptual loss's feature net from an .npz.

  Layout: `conv{i}/kernel` [kh, kw, c_in, c_out] and `conv{i}/bias` [c_out] for i = 0, 1, ...
  (applied in order, each followed by ReLU; SAME padding), optional `conv{i}/pool` (non-zero:
  2x2 max-pool after that layer), optional `mean` and `std` [3] normalising the [0, 1] input.
  A VGG16 converted to this layout gives the usual "VGG perceptual loss".

  Returns:
    dict(layers=[(kernel, bias, pool)], mean [3], std [3]).
  """
  if not path or not os.path.isfile(path):
    raise FileNotFoundError(
        f'loss.perceptual_weights={path!r} is not a file; the perceptual loss needs a feature '
        'net .npz (conv{i}/kernel, conv{i}/bias; see itit/vqgan_training/losses.py), or set '
        'loss.perceptual_weight=0.')
  with np.load(path) as npz:
    arrays = {k: np.asarray(npz[k], np.float32) for k in npz.files}
  layers = []
  while f'conv{len(layers)}/kernel' in arrays:
    i = len(layers)
    kernel = arrays[f'conv{i}/kernel']
    bias = arrays.get(f'conv{i}/bias', np.zeros(kernel.shape[-1:], np.float32))
    expected_in = 3 if i == 0 else layers[-1][0].shape[-1]
    if kernel.ndim != 4 or kernel.shape[2] != expected_in or bias.shape != kernel.shape[-1:]:
      raise ValueError(f'{path}: conv{i}/kernel {kernel.shape} / bias {bias.shape} do not chain '
                       f'([kh, kw, {expected_in}, c_out] and [c_out] expected).')
    layers.append((kernel, bias, bool(arrays.get(f'conv{i}/pool', 0))))
  if not layers:
    raise ValueError(f'{path} has no conv0/kernel: not a feature net .npz (see load_feature_net).')
  return dict(layers=layers, mean=arrays.get('mean', np.zeros(3, np.float32)),
              std=arrays.get('std', np.ones(3, np.float32)))


def _features(feature_net, images):
  """images [B, H, W, 3] in [0, 1] -> list of per-layer features, unit-normalised over channels."""
  x = (images - feature_net['mean']) / feature_net['std']
  features = []
  for kernel, bias, pool in feature_net['layers']:
    x = jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    x = jax.nn.relu(x + bias)
    features.append(x * jax.lax.rsqrt(jnp.sum(x**2, axis=-1, keepdims=True) + 1e-10))
    if pool:
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
  return features


def perceptual_loss(feature_net, images, reconstructions):
  """LPIPS-style distance (without learned heads), summed over layers -> scalar."""
  pairs = zip(_features(feature_net, images), _features(feature_net, reconstructions))
  return sum(jnp.mean(jnp.sum((a - b)**2, axis=-1)) for a, b in pairs)

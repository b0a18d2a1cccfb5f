r"""Trains the VQGAN image tokenizer.

  python -m itit.train_tokenizer --config=configs/vqgan_shapes.py --workdir=DIR \
      [--config.total_steps=...]

Re-running the same command in the same workdir resumes from the last checkpoint and ends with
bitwise the same parameters as an uninterrupted run: the batch of step s is a pure function of
(config.seed, s), and so is every random choice of the step.

The workdir gets: checkpoints/ (Orbax), metrics.jsonl + tensorboard/ (scalars), images/
(reconstruction grids: originals above, reconstructions below), eval.json (held-out evaluation),
tokenizer.msgpack + tokenizer_config.json (`vqgan.load_tokenizer(DIR)` reads them).
"""
import functools
import json
import os
import signal

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from itit import errors
from itit import metric_writer
from itit import vqgan_losses
from itit.data import images as image_io
from itit.data import shapes
from itit.models import vqgan

_CONFIG = errors.config_flag('Tokenizer config (configs/vqgan_*.py).')
_WORKDIR = errors.string_flag('workdir', 'Output directory; re-running resumes in it.')


def _image_files(config):
  """Sorted image paths under data.dir -> (train files, held-out files)."""
  root = config.data.dir
  if not root or not os.path.isdir(root):
    raise ValueError(f"data.dir={root!r} is not a directory; pass --config.data.dir=/images "
                     f"(or use data.source='shapes').")
  files = sorted(os.path.join(d, f) for d, _, names in os.walk(root) for f in names
                 if f.lower().endswith(image_io.IMAGE_EXTENSIONS))
  if len(files) <= config.data.num_eval:
    raise ValueError(f'{root} has {len(files)} images, not more than data.num_eval='
                     f'{config.data.num_eval}; add images or lower data.num_eval.')
  return files[:-config.data.num_eval], files[-config.data.num_eval:]


def _load_images(paths, size):
  """Decodes image files -> uint8 [N, size, size, 3], skipping bad ones (see itit/data/images)."""
  images = []
  for path in paths:
    with open(path, 'rb') as f:
      data = f.read()
    try:
      images.append(image_io.load_image(data, size=size))
    except image_io.BadInput:
      continue
  return np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)


def train_batch(config, step, train_files=None):
  """The training images of `step`: uint8 [batch_size, H, W, 3], a pure function of (seed, step)."""
  rng = np.random.default_rng([config.seed, step])
  size = config.model.image_size
  if config.data.source == 'shapes':
    return np.stack([shapes.render(shapes.sample_scene(rng, config.data.max_objects), size, rng)
                     for _ in range(config.batch_size)])
  images = np.zeros((0, size, size, 3), np.uint8)
  while len(images) < config.batch_size:  # bad files are skipped; draw more
    picks = rng.integers(0, len(train_files), config.batch_size - len(images))
    images = np.concatenate([images, _load_images([train_files[i] for i in picks], size)])
  return images


def eval_set(config, eval_files=None):
  """Held-out images uint8 [N, H, W, 3] and, for the shapes world, its exact batch parser."""
  if config.data.source == 'shapes':
    scenes = shapes.make_splits(config.seed, num_test=config.data.num_eval)['test']
    images = np.stack([shapes.render(s, config.model.image_size) for s in scenes])
    return images, shapes.parse_images
  if config.data.source != 'folder':
    raise ValueError(f"data.source must be 'shapes' or 'folder', got {config.data.source!r}.")
  return _load_images(eval_files, config.model.image_size), None


def init_state(config):
  """The train state: step, params, opt_state, code_counts [K], EMA codebook statistics (if
  codebook.ema_decay), discriminator params and optimizer state (if loss.adversarial_weight)."""
  rng = jax.random.PRNGKey(config.seed)
  params = vqgan.init_params(config, rng)
  state = dict(step=jnp.zeros((), jnp.int32), params=params,
               opt_state=make_optimizer(config).init(params),
               code_counts=jnp.zeros((config.model.codebook_size,), jnp.float32))
  if config.codebook.ema_decay:  # as if each code had quantized one encoder output: itself
    state.update(ema_counts=jnp.ones((config.model.codebook_size,), jnp.float32),
                 ema_sums=jnp.copy(params['quantizer']['codebook']))
  if config.loss.adversarial_weight:
    size = config.model.image_size
    disc_params = _discriminator(config).init(
        jax.random.fold_in(rng, 1), jnp.zeros((1, size, size, 3)))['params']
    state.update(disc_params=disc_params,
                 disc_opt_state=optax.adam(config.loss.disc_lr, b1=config.optimizer.b1,
                                           b2=config.optimizer.b2).init(disc_params))
  return state


def make_optimizer(config):
  opt = config.optimizer
  if opt.schedule == 'cosine':
    lr = optax.warmup_cosine_decay_schedule(0.0, opt.lr, opt.warmup_steps,
                                            max(config.total_steps, opt.warmup_steps + 1))
  elif opt.schedule == 'constant':
    lr = optax.linear_schedule(0.0, opt.lr, max(opt.warmup_steps, 1))
  else:
    raise ValueError(f"optimizer.schedule must be 'cosine' or 'constant', got {opt.schedule!r}")
  return optax.chain(optax.clip_by_global_norm(opt.grad_clip), optax.adam(lr, opt.b1, opt.b2))


def _discriminator(config):
  return vqgan_losses.PatchDiscriminator(config.loss.disc_filters, config.loss.disc_layers)


def make_train_step(config, feature_net=None):
  """Returns step(state, images float [B, H, W, 3] in [0, 1]) -> (state, metrics)."""
  model = vqgan.VQGAN(config.model)
  tx = make_optimizer(config)
  loss_cfg, code_cfg = config.loss, config.codebook
  disc = _discriminator(config)
  disc_tx = optax.adam(loss_cfg.disc_lr, b1=config.optimizer.b1, b2=config.optimizer.b2)
  restart_until = int(code_cfg.restart_until * config.total_steps)

  def loss_fn(params, state, images):
    reconstructions, aux = model.apply({'params': params}, images)
    rec_loss = vqgan_losses.reconstruction_loss(images, reconstructions, loss_cfg.l1_weight,
                                                loss_cfg.l2_weight)
    loss = rec_loss + aux['quantizer_loss']
    metrics = dict(reconstruction_loss=rec_loss, psnr=-10 * jnp.log10(
        jnp.mean((jnp.clip(reconstructions, 0, 1) - images)**2)))
    if loss_cfg.perceptual_weight:
      metrics['perceptual_loss'] = vqgan_losses.perceptual_loss(feature_net, images,
                                                                reconstructions)
      loss += loss_cfg.perceptual_weight * metrics['perceptual_loss']
    if loss_cfg.adversarial_weight:
      fake_logits = disc.apply({'params': state['disc_params']}, reconstructions)
      metrics['generator_loss'] = vqgan_losses.generator_hinge_loss(fake_logits)
      loss += vqgan_losses.adversarial_weight(
          state['step'], loss_cfg.adversarial_start, loss_cfg.adversarial_warmup,
          loss_cfg.adversarial_weight) * metrics['generator_loss']
    for name in ('codebook_loss', 'commitment_loss', 'codebook_usage', 'perplexity'):
      metrics[name] = aux[name]
    return loss, (metrics, reconstructions, aux)

  def step_fn(state, images):
    step = state['step']
    params = state['params']
    (loss, (metrics, reconstructions, aux)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(params, state, images)
    updates, opt_state = tx.update(grads, state['opt_state'], params)
    params = optax.apply_updates(params, updates)
    metrics.update(loss=loss, l2_grads=optax.tree.norm(grads),
                   l2_params=optax.tree.norm(params), l2_updates=optax.tree.norm(updates))

    features = jax.lax.stop_gradient(aux['features'])
    new_state = dict(state, step=step + 1, opt_state=opt_state)
    codebook = params['quantizer']['codebook']
    if code_cfg.ema_decay:  # EMA k-means replaces the codebook's gradient step
      new_state['ema_counts'], new_state['ema_sums'], codebook = vqgan_losses.ema_codebook_update(
          state['ema_counts'], state['ema_sums'], aux['tokens'], features, code_cfg.ema_decay)

    # Dead-code restarts, on a fixed step grid so a resumed run restarts at the same steps.
    code_counts = state['code_counts'] + aux['code_counts']
    restart = ((step + 1) % code_cfg.restart_every == 0) & (step < restart_until)
    restarted, num_dead = vqgan_losses.restart_dead_codes(
        codebook, code_counts, features,
        jax.random.fold_in(jax.random.PRNGKey(config.seed), step), code_cfg.restart_min_count,
        code_cfg.get('restart_sampling', 'uniform'))
    new_state['params'] = dict(params, quantizer=dict(
        codebook=jnp.where(restart, restarted, codebook)))
    if code_cfg.ema_decay:  # a re-seeded code starts its average afresh, from its new value
      reseeded = restart & (code_counts < code_cfg.restart_min_count)
      new_state['ema_counts'] = jnp.where(reseeded, 1.0, new_state['ema_counts'])
      new_state['ema_sums'] = jnp.where(reseeded[:, None], restarted, new_state['ema_sums'])
    metrics['restarted_codes'] = jnp.where(restart, num_dead, 0)
    new_state['code_counts'] = jnp.where(restart, 0.0, code_counts)

    if loss_cfg.adversarial_weight:
      fakes = jax.lax.stop_gradient(reconstructions)

      def disc_loss_fn(disc_params):
        logits = lambda x: disc.apply({'params': disc_params}, x)
        return vqgan_losses.discriminator_hinge_loss(logits(images), logits(fakes))
      disc_loss, disc_grads = jax.value_and_grad(disc_loss_fn)(state['disc_params'])
      disc_updates, disc_opt_state = disc_tx.update(disc_grads, state['disc_opt_state'])
      active = step >= loss_cfg.adversarial_start  # the discriminator waits for its start
      keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(active, n, o), new, old)
      new_state['disc_params'] = keep(optax.apply_updates(state['disc_params'], disc_updates),
                                      state['disc_params'])
      new_state['disc_opt_state'] = keep(disc_opt_state, state['disc_opt_state'])
      metrics['discriminator_loss'] = disc_loss
    return new_state, metrics

  return jax.jit(step_fn, donate_argnums=0)


def evaluate(params, config, images, parse_images=None):
  """Reconstructs held-out images -> dict of metrics (exact-scene accuracy for the shapes world)."""
  batch = config.eval_batch_size
  tokens = vqgan.tokenizer_fn(params, config, batch)(images)
  reconstructions = vqgan.detokenizer_fn(params, config, batch)(tokens)
  counts = np.bincount(tokens.ravel(), minlength=config.model.codebook_size)
  probs = counts[counts > 0] / counts.sum()
  diff = reconstructions.astype(np.float32) / 255 - images.astype(np.float32) / 255
  results = dict(num_images=len(images), codebook_usage=float(np.mean(counts > 0)),
                 codes_used=int(np.sum(counts > 0)), codebook_size=config.model.codebook_size,
                 perplexity=float(np.exp(-np.sum(probs * np.log(probs)))),
                 l1=float(np.mean(np.abs(diff))),
                 psnr=float(-10 * np.log10(max(np.mean(diff**2), 1e-12))))
  if parse_images is not None:  # parse(decode(encode(x))) == parse(x), scene for scene
    matches = [a == b for a, b in zip(parse_images(reconstructions), parse_images(images))]
    results['exact_scene_accuracy'] = float(np.mean(matches))
  return results, reconstructions


def reconstruction_grid(images, reconstructions, count=8):
  """Originals above reconstructions: uint8 [2 * H * s, count * W * s, 3], tiles at >= 64 px."""
  scale = max(1, 64 // images.shape[1])
  rows = [np.concatenate(list(x[:count]), axis=1) for x in (images, reconstructions)]
  grid = np.concatenate(rows, axis=0)
  return np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (resuming from workdir's last checkpoint), evaluates, writes the tokenizer."""
  os.makedirs(workdir, exist_ok=True)
  train_files, eval_files = (_image_files(config) if config.data.source == 'folder'
                             else (None, None))
  feature_net = None
  if config.loss.perceptual_weight:
    feature_net = vqgan_losses.load_feature_net(config.loss.perceptual_weights)
  eval_images, parse_images = eval_set(config, eval_files)

  manager = ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, 'checkpoints')),
      options=ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints, create=True))
  abstract_state = jax.eval_shape(functools.partial(init_state, config))
  last = manager.latest_step()
  if last is None:
    state = init_state(config)
  else:
    state = manager.restore(last, args=ocp.args.StandardRestore(abstract_state))
    print(f'Resuming from {workdir}/checkpoints step {last}.', flush=True)
  step = int(state['step'])

  train_step = make_train_step(config, feature_net)
  writer = metric_writer.MetricWriter(workdir)
  progress = metric_writer.Progress(config.total_steps, step)
  preempted = []
  previous_handler = signal.signal(signal.SIGTERM, lambda *_: preempted.append(True))
  to_float = lambda x: jnp.asarray(x, jnp.float32) / 255.0
  log_metrics = []
  try:
    while step < config.total_steps and not preempted:
      state, metrics = train_step(state, to_float(train_batch(config, step, train_files)))
      step += 1
      log_metrics.append(metrics)
      if step % config.log_every == 0 or step == config.total_steps:
        means = {k: float(np.mean([m[k] for m in log_metrics])) for k in log_metrics[0]}
        means['restarted_codes'] = float(sum(m['restarted_codes'] for m in log_metrics))
        if not all(np.isfinite(v) for v in means.values()):
          raise FloatingPointError(f'non-finite metrics between steps {step - len(log_metrics)}'
                                   f' and {step}: {means}')
        log_metrics = []
        writer.write_scalars(step, means)
        progress.report(step, {k: means[k] for k in ('loss', 'psnr', 'codebook_usage')})
      if step % config.image_every == 0 or step == config.total_steps:
        results, reconstructions = evaluate(state['params'], config, eval_images[:64],
                                            parse_images)
        writer.write_scalars(step, {f'eval/{k}': v for k, v in results.items()})
        writer.write_images(step, {'reconstructions': reconstruction_grid(
            eval_images, reconstructions)})
      if step % config.checkpoint_every == 0 or step == config.total_steps:
        manager.save(step, args=ocp.args.StandardSave(state))
    if preempted:
      manager.save(step, args=ocp.args.StandardSave(state), force=True)
  finally:
    manager.wait_until_finished()
    signal.signal(signal.SIGTERM, previous_handler)
    writer.flush()
  if preempted:
    manager.close()
    writer.close()
    raise SystemExit(f'SIGTERM: saved step {step} to {workdir}/checkpoints; re-run to resume.')

  results, _ = evaluate(state['params'], config, eval_images, parse_images)
  results['step'] = step
  results['sha256'] = vqgan.save_tokenizer(workdir, state['params'], config)
  with open(os.path.join(workdir, 'eval.json'), 'w') as f:
    json.dump(results, f, indent=2)
  writer.write_scalars(step, {f'final/{k}': v for k, v in results.items()
                              if isinstance(v, (int, float))})
  manager.close()
  writer.close()
  print(json.dumps(results), flush=True)
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required.')
  errors.quiet_library_logs()
  train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)

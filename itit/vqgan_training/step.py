"""The VQGAN tokenizer's train state, optimizer, jitted train step and held-out evaluation.

The state is a plain dict (Orbax saves and restores it as is): step, params, opt_state,
code_counts, plus the EMA codebook statistics and the discriminator when the config turns them on.
Every random choice of a step derives from (config.seed, step), so a resumed run repeats an
uninterrupted one bitwise.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from itit.models import vqgan
from itit.vqgan_training import losses


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
  """Global-norm clipping, then Adam on a warmup + cosine or warmup + constant learning rate."""
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
  """The adversarial term's patch discriminator (built alike at init and in the step)."""
  return losses.PatchDiscriminator(config.loss.disc_filters, config.loss.disc_layers)


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
    rec_loss = losses.reconstruction_loss(images, reconstructions, loss_cfg.l1_weight,
                                          loss_cfg.l2_weight)
    loss = rec_loss + aux['quantizer_loss']
    metrics = dict(reconstruction_loss=rec_loss, psnr=-10 * jnp.log10(
        jnp.mean((jnp.clip(reconstructions, 0, 1) - images)**2)))
    if loss_cfg.perceptual_weight:
      metrics['perceptual_loss'] = losses.perceptual_loss(feature_net, images, reconstructions)
      loss += loss_cfg.perceptual_weight * metrics['perceptual_loss']
    if loss_cfg.adversarial_weight:
      fake_logits = disc.apply({'params': state['disc_params']}, reconstructions)
      metrics['generator_loss'] = losses.generator_hinge_loss(fake_logits)
      loss += losses.adversarial_weight(
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
      new_state['ema_counts'], new_state['ema_sums'], codebook = losses.ema_codebook_update(
          state['ema_counts'], state['ema_sums'], aux['tokens'], features, code_cfg.ema_decay)

    # Dead-code restarts, on a fixed step grid so a resumed run restarts at the same steps.
    code_counts = state['code_counts'] + aux['code_counts']
    restart = ((step + 1) % code_cfg.restart_every == 0) & (step < restart_until)
    restarted, num_dead = losses.restart_dead_codes(
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
        return losses.discriminator_hinge_loss(logits(images), logits(fakes))
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

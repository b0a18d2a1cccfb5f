"""Tests for itit/train_tokenizer.py and itit/vqgan_training/: resume, restarts, loss terms, and
image folders that cannot feed a run (too small, unreadable, empty), refused at start in one line
and never looped over."""
import json
import os
import shutil
import subprocess
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

import conftest
from configs import vqgan_shapes
from itit import errors
from itit import train_tokenizer
from itit.data import records
from itit.data import sources
from itit.vqgan_training import data as vqgan_data
from itit.vqgan_training import losses
from itit.vqgan_training import step as vqgan_step


def tiny_config(image_dir):
  config = vqgan_shapes.get_config()
  config.model.update(dict(image_size=8, filters=8, channel_multipliers=[1, 2],
                           num_res_blocks=1, embedding_dim=4, codebook_size=16))
  config.data.update(dict(source='folder', dir=str(image_dir), num_eval=4))
  config.update(dict(total_steps=4, batch_size=4, log_every=2, image_every=4,
                     checkpoint_every=2, eval_batch_size=4))
  config.optimizer.warmup_steps = 1
  config.codebook.update(dict(restart_every=3, restart_until=1.0))
  return config


@pytest.fixture(scope='module')
def image_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp('images')
  rng = np.random.default_rng(0)
  for i in range(12):
    pixels = np.zeros((64, 64, 3), np.uint8) + rng.integers(0, 256, 3, dtype=np.uint8)
    pixels[16:40, 8 + 2 * i:32 + 2 * i] = rng.integers(0, 256, 3, dtype=np.uint8)
    Image.fromarray(pixels).save(folder / f'{i:02d}.png')
  return folder


@pytest.mark.slow  # two tokenizer runs (~32 s idle); the ITIT resume tests run fast
def test_resume_ends_with_bitwise_identical_params(image_dir, tmp_path, capsys, compile_cache):
  config = tiny_config(image_dir)
  workdir = tmp_path / 'run'
  results = train_tokenizer.train_and_evaluate(config, str(workdir))
  uninterrupted = (workdir / 'tokenizer.msgpack').read_bytes()
  assert results['step'] == 4 and 0 < results['codebook_usage'] <= 1
  assert results['num_images'] == 4 and np.isfinite(results['psnr'])
  for name in ('eval.json', 'tokenizer_config.json', 'metrics.jsonl',
               'images/reconstructions_4.png'):
    assert (workdir / name).exists(), name
  steps = [json.loads(line)['step'] for line in open(workdir / 'metrics.jsonl')]
  assert steps[:2] == [2, 4]

  # Lose the last checkpoint (as if killed after step 2's save): the re-run resumes at step 2.
  shutil.rmtree(workdir / 'checkpoints' / '4')
  os.remove(workdir / 'tokenizer.msgpack')
  capsys.readouterr()
  train_tokenizer.train_and_evaluate(config, str(workdir))
  assert 'Resuming from' in capsys.readouterr().out
  assert (workdir / 'tokenizer.msgpack').read_bytes() == uninterrupted


def test_restart_dead_codes_replaces_exactly_the_unused_codes():
  codebook = jnp.arange(8.0).reshape(4, 2)
  features = jnp.full((2, 3, 2), 100.0) + jnp.arange(6.0).reshape(2, 3, 1)
  new, num_dead = losses.restart_dead_codes(
      codebook, jnp.array([5.0, 0.0, 3.0, 0.0]), features, jax.random.PRNGKey(0), min_count=1)
  assert int(num_dead) == 2
  np.testing.assert_array_equal(new[jnp.array([0, 2])], codebook[jnp.array([0, 2])])
  rows = {tuple(r) for r in np.asarray(features).reshape(-1, 2)}
  assert tuple(np.asarray(new[1])) in rows and tuple(np.asarray(new[3])) in rows


def test_train_step_restarts_codes_no_encoder_output_picked(image_dir):
  config = tiny_config(image_dir)
  config.codebook.update(dict(restart_every=1, ema_decay=0.0))  # step 0's lr is 0: only
  config.model.codebook_size = 128  # restarts move codes; 128 codes > 64 tokens: some unused
  state = vqgan_step.init_state(config)
  images = jnp.asarray(vqgan_data.train_batch(config, 0, sorted(
      str(p) for p in image_dir.iterdir())), jnp.float32) / 255
  new_state, metrics = vqgan_step.make_train_step(config)(
      jax.tree.map(jnp.copy, state), images)
  used = np.asarray(metrics['codebook_usage']) * 128
  assert 0 < int(metrics['restarted_codes']) == 128 - round(float(used))
  old = np.asarray(state['params']['quantizer']['codebook'])
  new = np.asarray(new_state['params']['quantizer']['codebook'])
  changed = np.any(new != old, axis=1)
  assert changed.sum() == int(metrics['restarted_codes'])
  assert float(new_state['code_counts'].sum()) == 0.0  # counts start over after a restart


def test_ema_update_moves_picked_codes_to_their_mean_and_keeps_the_others():
  codebook = jnp.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
  features = jnp.array([[2.0, 0.0], [4.0, 0.0], [9.0, 9.0]])
  counts, sums, new = losses.ema_codebook_update(
      jnp.ones(3), codebook, jnp.array([0, 0, 2]), features, decay=0.5)
  np.testing.assert_allclose(counts, [1.5, 0.5, 1.0])
  np.testing.assert_allclose(new[0], [(0.5 * 0 + 0.5 * 6.0) / 1.5, 0.0])  # toward mean (3, 0)
  np.testing.assert_allclose(new[1], [1.0, 1.0])  # unpicked: count and sum decay together
  np.testing.assert_allclose(new[2], [7.0, 7.0])


def test_perceptual_loss_from_a_user_npz(tmp_path):
  rng = np.random.default_rng(0)
  path = tmp_path / 'features.npz'
  np.savez(path, **{'conv0/kernel': rng.normal(size=(3, 3, 3, 4)).astype(np.float32),
                    'conv0/bias': np.zeros(4, np.float32), 'conv0/pool': np.array(1),
                    'conv1/kernel': rng.normal(size=(3, 3, 4, 5)).astype(np.float32),
                    'mean': np.full(3, 0.5, np.float32)})
  net = losses.load_feature_net(str(path))
  assert len(net['layers']) == 2 and net['layers'][0][2] and not net['layers'][1][2]
  images = jnp.asarray(rng.uniform(size=(2, 8, 8, 3)), jnp.float32)
  assert float(losses.perceptual_loss(net, images, images)) == 0.0
  assert float(losses.perceptual_loss(net, images, 1.0 - images)) > 0.1
  with pytest.raises(FileNotFoundError, match='perceptual_weights'):
    losses.load_feature_net(str(tmp_path / 'missing.npz'))
  np.savez(tmp_path / 'bad.npz', **{'conv0/kernel': np.zeros((3, 3, 4, 4), np.float32)})
  with pytest.raises(ValueError, match='do not chain'):
    losses.load_feature_net(str(tmp_path / 'bad.npz'))


@pytest.mark.slow  # compiles a second, larger train step (~20 s); the GAN term is optional
def test_discriminator_waits_for_its_start_then_trains(image_dir):
  config = tiny_config(image_dir)
  config.loss.update(dict(adversarial_weight=0.1, adversarial_start=1, adversarial_warmup=2,
                          disc_filters=8, disc_layers=2))
  step = vqgan_step.make_train_step(config)
  state = vqgan_step.init_state(config)
  initial = jax.tree.map(np.asarray, state['disc_params'])
  images = jnp.asarray(vqgan_data.train_batch(config, 0, sorted(
      str(p) for p in image_dir.iterdir())), jnp.float32) / 255
  state, metrics = step(state, images)
  jax.tree.map(np.testing.assert_array_equal, state['disc_params'], initial)
  assert np.isfinite(metrics['discriminator_loss']) and np.isfinite(metrics['generator_loss'])
  state, _ = step(state, images)
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()),
                       state['disc_params'], initial)
  assert max(jax.tree.leaves(moved)) > 0
  assert float(losses.adversarial_weight(jnp.array(1), 1, 2, 0.1)) == pytest.approx(0.05)
  assert float(losses.adversarial_weight(jnp.array(0), 1, 2, 0.1)) == 0.0


def test_folder_source_errors_name_the_field(tmp_path):
  config = tiny_config(tmp_path / 'nowhere')
  with pytest.raises(ValueError, match='data.dir'):
    train_tokenizer.train_and_evaluate(config, str(tmp_path / 'run'))
  with pytest.raises(ValueError, match='unknown preset'):
    vqgan_shapes.get_config('fast')
  assert vqgan_shapes.get_config('quick').total_steps < vqgan_shapes.get_config().total_steps


def test_error_weighted_restarts_seed_only_from_badly_coded_outputs():
  codebook = jnp.array([[0.0, 0.0], [50.0, 50.0], [60.0, 60.0]])
  # 90 outputs exactly on code 0 (zero error), 10 far from every code.
  on_code = jnp.zeros((90, 2))
  far = jnp.stack([jnp.arange(10.0) * 3 - 200, jnp.full(10, 7.0)], -1)
  features = jnp.concatenate([on_code, far])
  counts = jnp.array([90.0, 0.0, 0.0])
  for seed in range(5):
    new, num_dead = losses.restart_dead_codes(
        codebook, counts, features, jax.random.PRNGKey(seed), min_count=1, sampling='error')
    assert int(num_dead) == 2
    np.testing.assert_array_equal(new[0], codebook[0])
    far_rows = {tuple(r) for r in np.asarray(far)}
    assert tuple(np.asarray(new[1])) in far_rows and tuple(np.asarray(new[2])) in far_rows
  # Uniform sampling lands on the zero-error outputs most of the time.
  hits = sum(tuple(np.asarray(losses.restart_dead_codes(
      codebook, counts, features, jax.random.PRNGKey(seed), 1)[0][1])) == (0.0, 0.0)
             for seed in range(20))
  assert hits >= 10
  with pytest.raises(ValueError, match='restart_sampling'):
    losses.restart_dead_codes(codebook, counts, features, jax.random.PRNGKey(0), 1, 'x')


def write_pngs(folder, count, side, prefix=''):
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(count + side)
  for i in range(count):
    pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(os.path.join(folder, f'{prefix}{i:02d}.png'))
  return str(folder)


def test_too_small_images_are_refused_at_start_in_one_line_or_upscaled(tmp_path):
  config = tiny_config(write_pngs(tmp_path / 'small', 6, 16))
  config.data.update(dict(num_eval=2, min_size=32))
  with pytest.raises(errors.UserError) as refused:
    train_tokenizer.train_and_evaluate(config, str(tmp_path / 'run'))
  message = str(refused.value)
  assert '\n' not in message
  assert 'no usable training image' in message and 'too_small 4' in message
  assert 'lower --config.data.min_size (now 32)' in message
  # Below the model's size but not below data.min_size: upscaled.
  config.data.min_size = 16
  config.model.image_size = 32
  train_files, eval_files = vqgan_data.image_files(config)
  assert vqgan_data.train_batch(config, 0, train_files).shape == (4, 32, 32, 3)
  assert vqgan_data.eval_set(config, eval_files)[0].shape == (2, 32, 32, 3)


def test_an_unusable_held_out_set_is_refused_with_counts_by_reason(image_dir, tmp_path):
  held = tmp_path / 'held'
  write_pngs(held, 1, 8)
  (held / 'broken.png').write_bytes(b'not a png')
  config = tiny_config(image_dir)
  config.data.update(dict(eval_dir=str(held), min_size=16))
  with pytest.raises(errors.UserError, match=r'no usable held-out image among 2 files: skipped 2 '
                     r'inputs: not_image 1 .*too_small 1 .*data.min_size'):
    train_tokenizer.train_and_evaluate(config, str(tmp_path / 'run'))


def test_a_batch_that_cannot_be_filled_fails_instead_of_spinning(tmp_path):
  config = tiny_config(write_pngs(tmp_path / 'small', 3, 8))
  config.data.min_size = 16
  files = sorted(str(p) for p in (tmp_path / 'small').iterdir())
  outcome = []

  def draw():
    try:
      vqgan_data.train_batch(config, 3, files)
    except errors.UserError as e:
      outcome.append(str(e))

  thread = threading.Thread(target=draw, daemon=True)
  thread.start()
  thread.join(timeout=60)
  assert not thread.is_alive(), 'train_batch kept drawing files'
  limit = vqgan_data.MAX_DRAWS_PER_IMAGE * config.batch_size
  assert outcome and outcome[0].startswith(f'step 3: {limit} files drawn')
  assert f'too_small {limit}' in outcome[0]


def test_held_out_images_never_train_and_match_prepare(tmp_path):
  root = tmp_path / 'data'
  write_pngs(root, 30, 16)
  write_pngs(root / 'test', 3, 16)
  config = tiny_config(root)
  config.data.update(dict(eval_dir=str(root / 'test'), min_size=16, num_eval=0))
  with pytest.raises(errors.UserError, match='lies inside data.dir'):
    vqgan_data.image_files(config)
  # By fraction: the files itit.prepare holds out of the same folder (records.is_heldout).
  config.data.update(dict(eval_dir='', heldout_fraction=0.3))
  train, held_out = vqgan_data.image_files(config)
  relative = lambda paths: sorted(os.path.relpath(p, root).replace(os.sep, '/') for p in paths)
  prepared = [r.key for r in sources.image_folder(root, size=16, min_size=16, part='heldout',
                                                  heldout_fraction=0.3,
                                                  skips=sources.SkipCounter())]
  assert relative(held_out) == prepared
  assert all(records.is_heldout(r, 0.3) for r in prepared)
  assert not set(relative(train)) & set(prepared) and len(train) + len(held_out) == 33


def test_the_command_line_refuses_too_small_images_in_one_line(tmp_path):
  """The reported hang: 24px images, configs/vqgan_folder.py (min_size 32); SIGTERM is handled
  by the command, so only finishing by itself counts (the timeout kills, it does not stop)."""
  folder = write_pngs(tmp_path / 'garments', 8, 24)
  result = subprocess.run(
      [sys.executable, '-m', 'itit.train_tokenizer', '--config=configs/vqgan_folder.py',
       f'--workdir={tmp_path / "run"}', f'--config.data.dir={folder}'],
      cwd=conftest.REPO, env=conftest.repo_env(), capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: no usable training image') and 'too_small' in last, (
      result.stderr[-2000:])

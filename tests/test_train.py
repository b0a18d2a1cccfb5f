"""End-to-end training on tiny shards: runs, resumes bitwise, guards NaNs and bad data."""
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import tiny
from itit.trainer import checkpointing
from itit.trainer import loop
from itit.trainer import optimizer as optimizer_lib
from itit.trainer import state as state_lib
from itit.trainer import step as step_lib
from tools import loss_gradients
import conftest  # pylint: disable=g-bad-import-order

# The runs here repeat a few programs (a run, its resume, the NaN guards): each compiles once.
pytestmark = pytest.mark.usefixtures('compile_cache')

# The tiny run: 6 steps, metrics every 2, checkpoints at 3 and 6, no evaluation until the end.
TRAIN = {'total_steps': 6, 'log_every': 2, 'checkpoint_every': 3, 'optimizer.warmup_steps': 2,
         'optimizer.lr': 1e-3, 'eval_every': 0}


@pytest.fixture(scope='module')
def data_dir(shapes_spiece, tmp_path_factory):
  return conftest.write_pooled_shards(tmp_path_factory.mktemp('shards'), shapes_spiece(60),
                                      ('paired', 'test'), num_test=16, sha256='test')


def tiny_config(data_dir, **overrides):
  return conftest.apply_overrides(tiny.get_config('row3'),
                                  {'data.dir': data_dir, **TRAIN, **overrides})


def final_params(workdir):
  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'))
  step = manager.latest_step()
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return step, restored['state']['params']


@pytest.fixture(scope='module')
def straight_run(data_dir, tmp_path_factory):
  """(workdir, results) of the tiny run trained straight through, once for the module: the
  logging test reads it and the resume test compares against it."""
  workdir = str(tmp_path_factory.mktemp('straight') / 'run')
  return workdir, loop.train_and_evaluate(tiny_config(data_dir), workdir)


def test_trains_logs_and_evaluates(straight_run):
  workdir, results = straight_run
  assert set(results) >= {'i2t/i2t_token_accuracy', 't2i/t2i_masked_token_accuracy'}
  assert all(0.0 <= results[k] <= 1.0 for k in results if 'accuracy' in k)
  lines = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert [l['step'] for l in lines if 'loss' in l] == [2, 4, 6]
  last_train = [l for l in lines if 'loss' in l][-1]
  for key in ('loss', 'l2_grads', 'l2_params', 'l2_updates', 'lr', 'steps_per_s',
              'examples_per_s', 'i2t/i2t_loss', 't2i/t2i_loss', 'i2t/i2i_loss'):
    assert np.isfinite(last_train[key]), key
  assert lines[-1]['eval/i2t/i2t_token_accuracy'] == results['i2t/i2t_token_accuracy']
  assert os.path.isfile(os.path.join(workdir, 'eval.json'))
  assert final_params(workdir)[0] == 6
  assert checkpointing.all_steps(workdir) == [3, 6]


@pytest.mark.slow  # compiles each loss's gradient; test_loss_gradients covers the norms fast
def test_gradient_diagnostic_reads_the_runs_checkpoints(straight_run):
  # The per-loss gradient diagnostic reads the run's kept checkpoints and training batches.
  workdir, _ = straight_run
  rows = loss_gradients.run_summaries(workdir, [3, 6], num_batches=1, log=lambda _: None)
  assert [r['step'] for r in rows] == [3, 6] and rows[0]['losses'] == ['i2t', 't2i']
  assert all(0 < r[f'{n}/norm'] < np.inf for r in rows for n in ('i2t', 't2i'))
  assert rows[0]['i2t/norm'] != rows[1]['i2t/norm']  # other parameters, same batch


def test_resume_is_bitwise(data_dir, straight_run, tmp_path):
  straight, _ = straight_run
  resumed = str(tmp_path / 'resumed')
  out = loop.train_and_evaluate(tiny_config(data_dir, max_steps_per_run=4), resumed)
  assert out == {'stopped_at_step': 4}
  loop.train_and_evaluate(tiny_config(data_dir), resumed)
  step_a, params_a = final_params(straight)
  step_b, params_b = final_params(resumed)
  assert step_a == step_b == 6
  for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow  # a program of its own; test_reliability's NaN tests cover the guard fast
def test_nan_halts_naming_the_step(data_dir, tmp_path):
  config = tiny_config(data_dir, **{'optimizer.lr': float('nan')})
  config.optimizer.grad_clip = 0.0
  with pytest.raises(FloatingPointError, match='non-finite loss or gradient at step'):
    loop.train_and_evaluate(config, str(tmp_path / 'nan'))


@pytest.mark.slow  # a program of its own; test_reliability's NaN tests cover the guard fast
def test_nan_skip_policy_keeps_params(data_dir, tmp_path):
  config = tiny_config(data_dir, nan_policy='skip', **{'optimizer.lr': float('nan')})
  workdir = str(tmp_path / 'skip')
  loop.train_and_evaluate(config, workdir)
  lines = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert [l['skipped_steps'] for l in lines if 'loss' in l] == [2, 4, 6]
  _, params = final_params(workdir)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


def test_refuses_mismatched_model(data_dir, tmp_path):
  config = tiny_config(data_dir, **{'model.image_vocab_size': 64})
  with pytest.raises(ValueError, match='image_vocab_size=32'):
    loop.train_and_evaluate(config, str(tmp_path / 'bad'))


def test_refuses_mesh_that_does_not_match_devices(data_dir, tmp_path):
  config = tiny_config(data_dir, **{'mesh.data': jax.device_count() + 1})
  with pytest.raises(ValueError, match=f'needs {jax.device_count() + 1} devices'):
    loop.train_and_evaluate(config, str(tmp_path / 'mesh'))


def _random_t5(path, seed):
  torch = pytest.importorskip('torch', reason='the T5 test needs torch (pip install .[test])')
  transformers = pytest.importorskip('transformers', reason='needs transformers (.[test])')
  torch.manual_seed(seed)
  config = transformers.T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=1,
                                 num_heads=2, feed_forward_proj='gated-gelu')
  transformers.T5EncoderModel(config).save_pretrained(path)
  return str(path)


@pytest.mark.slow  # a T5 run of its own (~1 min); test_t5 checks the encoder itself fast
def test_frozen_t5_stays_out_of_state_and_resume_checks_it(data_dir, tmp_path):
  from itit.models import t5_loader
  t5_dir = _random_t5(tmp_path / 't5', seed=0)
  config = tiny_config(data_dir, max_steps_per_run=3)
  config.model.text_encoder.update(kind='t5', path=t5_dir,
                                   t5=t5_loader.text_encoder_config(t5_dir))
  workdir = str(tmp_path / 't5run')
  assert loop.train_and_evaluate(config, workdir) == {'stopped_at_step': 3}
  _, params = final_params(workdir)
  assert 'text_encoder' not in params and 'encoder_text_projection' in params
  meta = json.load(open(os.path.join(workdir, 'checkpoints', '3', 'meta', 'metadata')))
  assert meta['text_encoder'] == t5_loader.t5_identity(t5_dir)
  other = _random_t5(tmp_path / 't5_other', seed=1)
  config.model.text_encoder.path = other
  with pytest.raises(ValueError, match='is not the T5 checkpoint this run was trained with'):
    loop.train_and_evaluate(config, workdir)


@pytest.mark.slow  # three training runs; test_resume_is_bitwise covers resume in the fast tier
def test_rbg_prng_resumes_bitwise_and_refuses_another_impl(data_dir, tmp_path):
  straight = str(tmp_path / 'straight')
  loop.train_and_evaluate(tiny_config(data_dir, prng_impl='rbg'), straight)
  resumed = str(tmp_path / 'resumed')
  assert loop.train_and_evaluate(tiny_config(data_dir, prng_impl='rbg', max_steps_per_run=3),
                                  resumed) == {'stopped_at_step': 3}
  with pytest.raises(ValueError, match="trained with prng_impl='rbg'.*--config.prng_impl=rbg"):
    loop.train_and_evaluate(tiny_config(data_dir), resumed)
  loop.train_and_evaluate(tiny_config(data_dir, prng_impl='rbg'), resumed)
  manager = ocp.CheckpointManager(os.path.join(straight, 'checkpoints'))
  state = manager.restore(6, args=ocp.args.Composite(state=ocp.args.StandardRestore()))['state']
  assert str(jax.random.key_impl(state['rng'])) == 'rbg'  # the key the step draws from
  for a, b in zip(jax.tree.leaves(final_params(straight)[1]),
                  jax.tree.leaves(final_params(resumed)[1])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow  # two row-14 runs with synthesis (~2 min)
def test_reused_pseudo_pairs_resume_bitwise_and_refuse_another_side_of_one(data_dir, tmp_path):
  # Row 14 reading the paired shards as its unpaired streams; each pseudo pair serves 2 steps.
  row14 = lambda **changes: conftest.apply_overrides(tiny.get_config('row14'), {
      'data.dir': data_dir, 'data.unpaired_image': 'paired', 'data.unpaired_text': 'paired',
      'cycle.synthesis_steps': 2, 'cycle.reuse': 2, **TRAIN, **changes})
  straight = str(tmp_path / 'straight')
  loop.train_and_evaluate(row14(), straight)
  resumed = str(tmp_path / 'resumed')
  # Stopped at step 3: step 3 trains on the pair step 2 made, so the kept pair must come back.
  assert loop.train_and_evaluate(row14(max_steps_per_run=3), resumed) == {'stopped_at_step': 3}
  manager = ocp.CheckpointManager(os.path.join(resumed, 'checkpoints'))
  kept = manager.restore(3, args=ocp.args.Composite(state=ocp.args.StandardRestore()))['state']
  pairs = kept['pseudo_pairs']
  assert pairs['t2i2t']['pseudo_image'].shape == (4, 16)
  assert pairs['i2t2i']['pseudo_text'].shape == (4, 8)
  assert np.any(np.asarray(pairs['i2t2i']['pseudo_text']) != 0)  # made, not the initial zeros
  with pytest.raises(ValueError, match=r'trained with cycle\.reuse=2 and this config asks for 1: '
                                       r'its checkpoints hold the kept pseudo pairs'):
    loop.train_and_evaluate(row14(**{'cycle.reuse': 1}), resumed)
  loop.train_and_evaluate(row14(), resumed)
  for a, b in zip(jax.tree.leaves(final_params(straight)[1]),
                  jax.tree.leaves(final_params(resumed)[1])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_checkpoint_from_before_the_kept_pseudo_pairs_restores(tmp_path):
  config = tiny.get_config('row3')
  tx, _ = optimizer_lib.make_optimizer(config.optimizer, config.total_steps)
  state = state_lib.init_train_state(config, tx, state_lib.seed_key_data(config))
  assert state.pseudo_pairs is None
  # What such a checkpoint holds: the same fields, without 'pseudo_pairs'.
  older = {name: getattr(state, name) for name in ('step', 'params', 'opt_state', 'rng',
                                                   'first_nonfinite_step', 'skipped_steps')}
  checkpointer = checkpointing.Checkpointer(str(tmp_path / 'checkpoints'), async_save=False)
  checkpointer.save(5, older, {'config': {}})
  checkpointer.wait()
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  restored, _ = checkpointer.restore(5, abstract)
  assert isinstance(restored, state_lib.TrainState) and restored.pseudo_pairs is None
  as_data = lambda s: s.replace(rng=jax.random.key_data(s.rng))
  for a, b in zip(jax.tree.leaves(as_data(restored)), jax.tree.leaves(as_data(state))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # A config that keeps pseudo pairs cannot continue it: one line, not Orbax's tree diff.
  wanting = abstract.replace(pseudo_pairs={'i2t2i': {
      'pseudo_text': jax.ShapeDtypeStruct((4, 8), np.int32)}})
  with pytest.raises(ValueError, match=r"predates the state fields \['pseudo_pairs'\] this "
                                       r'config needs'):
    checkpointer.restore(5, wanting)


def _rows_each_loss_reads(paired_split):
  """One (unjitted) train step whose two paired 'losses' report the example ids they read."""
  config = tiny.get_config('row3')
  tx, schedule = optimizer_lib.make_optimizer(config.optimizer, config.total_steps)
  state = state_lib.init_train_state(config, tx, state_lib.seed_key_data(config))

  def spy(params, batch, rng):
    del rng
    # A loss that depends on the parameters (so there is a gradient) and reports its examples.
    weight = jax.tree.leaves(params)[0].sum()
    return 0.0 * weight, {'examples': batch['text_ids'][:, 0]}

  ids = np.arange(8, dtype=np.int32)
  paired = {'image_tokens': np.zeros((8, 16), np.int32),
            'text_ids': np.stack([ids, ids + 100], axis=1)}
  _, metrics = step_lib.train_step(state, {'paired': paired}, loss_fns={
      't2i': ('paired', spy), 'i2t': ('paired', spy)}, tx=tx, schedule=schedule,
      nan_policy='halt', paired_split=paired_split)
  return np.asarray(metrics['t2i/examples']), np.asarray(metrics['i2t/examples'])


def test_paper_split_gives_t2i_and_i2t_different_paired_examples():
  t2i, i2t = _rows_each_loss_reads(paired_split=True)
  np.testing.assert_array_equal(t2i, [0, 2, 4, 6])
  np.testing.assert_array_equal(i2t, [1, 3, 5, 7])


def test_shared_batch_gives_t2i_and_i2t_the_same_paired_examples():
  t2i, i2t = _rows_each_loss_reads(paired_split=False)
  np.testing.assert_array_equal(t2i, np.arange(8))
  np.testing.assert_array_equal(i2t, np.arange(8))


def test_paired_half_interleaves_rows():
  """Rows alternate between the halves, so each device's contiguous block holds both."""
  batch = {'text_ids': np.arange(12, dtype=np.int32).reshape(6, 2)}
  halves = [step_lib.paired_half(batch, h)['text_ids'] for h in (0, 1)]
  np.testing.assert_array_equal(halves[0], [[0, 1], [4, 5], [8, 9]])
  np.testing.assert_array_equal(halves[1], [[2, 3], [6, 7], [10, 11]])


def test_an_odd_paired_shard_is_refused_under_the_split(data_dir, tmp_path):
  config = tiny_config(data_dir, **{'batch.paired': 5, 'batch.paired_split': True})
  with pytest.raises(ValueError, match='batch.paired_split cannot halve'):
    loop.train_and_evaluate(config, str(tmp_path / 'odd'))
  assert not os.path.exists(tmp_path / 'odd')

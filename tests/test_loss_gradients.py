"""tools.loss_gradients: per-loss gradients add up to the train step's, and the summary's figures."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from itit.losses import registry
from itit.models import itit
from itit.trainer import step as step_lib
from tools import loss_gradients

TEXTS = np.array([[5, 9, 3, 1, 0, 0, 0, 0], [7, 8, 1, 0, 0, 0, 0, 0],
                  [4, 4, 4, 4, 4, 4, 4, 1], [6, 12, 1, 0, 0, 0, 0, 0]], np.int32)


@pytest.fixture(scope='module')
def row7(tiny_params):
  """Table 2 row 7 (T2I, I2T + I2I, T2T, unpaired I2I) on the tiny model, and a batch."""
  config = tiny.get_config('row7')
  config.model.dropout = 0.0
  model = itit.ITIT(config.model)
  images = np.random.RandomState(0).randint(0, config.model.image_vocab_size, (2, 4, 16))
  batch = {'paired': {'image_tokens': images[0].astype(np.int32), 'text_ids': TEXTS},
           'unpaired_image': {'image_tokens': images[1].astype(np.int32)},
           'unpaired_text': {'text_ids': TEXTS[::-1].copy()}}
  loss_fns = registry.make_loss_fns(config, model)
  grads = jax.jit(lambda p, b, r: loss_gradients.per_loss_gradients(p, b, r, loss_fns))(
      tiny_params, batch, jax.random.PRNGKey(3))
  return tiny_params, batch, loss_fns, grads


@pytest.mark.slow  # a train-step compile of its own (~20 s)
def test_per_loss_gradients_sum_to_the_train_step_gradient(row7):
  params, batch, loss_fns, grads = row7
  assert sorted(grads) == ['i2t', 't2i', 't2t', 'unpaired_i2i']
  rng = jax.random.PRNGKey(3)

  def total(p):  # the train step's sum, each loss with its own key (step_lib.loss_rng)
    return sum(fn(p, batch[stream], step_lib.loss_rng(rng, name))[0]
               for name, (stream, fn) in loss_fns.items())

  reference = jax.jit(jax.grad(total))(params)
  summed = jax.tree.map(lambda *g: sum(g), *grads.values())
  for got, want in zip(jax.tree.leaves(summed), jax.tree.leaves(reference)):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6)


def test_summary_norms_per_part_and_cosines(row7):
  _, _, _, grads = row7
  summary = jax.device_get(loss_gradients.gradient_summary(grads))
  flat = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])
  for name, grad in grads.items():
    np.testing.assert_allclose(summary[f'{name}/norm'], np.linalg.norm(flat(grad)), rtol=1e-5)
    parts = [summary[f'{name}/norm_{p}'] for p in itit.PARTS if f'{name}/norm_{p}' in summary]
    np.testing.assert_allclose(np.sqrt(np.sum(np.square(parts))), summary[f'{name}/norm'],
                               rtol=1e-5)
  # T2T masks and decodes text only: no gradient reaches the image decoder.
  assert summary['t2t/norm_image_decoder'] == 0.0 and summary['t2t/norm_text_decoder'] > 0
  assert summary['unpaired_i2i/norm_text_decoder'] == 0.0
  a, b = flat(grads['i2t']), flat(grads['t2i'])
  np.testing.assert_allclose(summary['cosine/i2t|t2i'],
                             a @ b / np.linalg.norm(a) / np.linalg.norm(b), rtol=1e-4, atol=1e-6)
  assert len([k for k in summary if k.startswith('cosine/')]) == 6  # every pair once
  same = jax.device_get(loss_gradients.gradient_summary({'a': grads['t2i'],
                                                          'b': jax.tree.map(jnp.negative,
                                                                            grads['t2i'])}))
  np.testing.assert_allclose(same['cosine/a|b'], -1.0, rtol=1e-5)


def test_part_of_names_every_module_and_refuses_strangers(row7):
  parts = {itit.part_of(name) for name in row7[0]}
  assert parts <= set(itit.PARTS) and {'encoder', 'image_decoder', 'text_decoder'} <= parts
  assert itit.part_of('encoder_position') == 'encoder'
  assert itit.part_of('text_decoder_head') == 'text_decoder'
  with pytest.raises(ValueError, match='none of'):
    itit.part_of('classifier')


def test_format_table_has_a_row_per_checkpoint():
  rows = [dict(step=100, losses=['a'], **{'a/norm': 1.5}), dict(step=200, losses=['a'])]
  table = loss_gradients.format_table(rows).splitlines()
  assert table[0] == '| step | a/norm |' and table[2] == '| 100 | 1.5 |'
  assert table[3] == '| 200 | – |'

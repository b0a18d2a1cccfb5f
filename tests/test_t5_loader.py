"""Tests for itit.models.t5_loader: parity with transformers' T5EncoderModel on real HF
checkpoints (random tiny ones made by save_pretrained), sharded and bfloat16 files, clear errors,
the content identity and the frozen split. The T5 tokenizer loader is tested in
tests/test_text_tokenizer.py.

Needs torch (CPU) and transformers (the project's `test` extra); skipped where they are absent.
"""
import copy
import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from configs import tiny
from itit.models import itit
from itit.models import t5
from itit.models import t5_loader

SKIP_REASON = ('the T5 parity tests need torch (CPU) and transformers: pip install -e ".[test]" '
               '(torch==2.13.0, transformers==5.24.0)')
torch = pytest.importorskip('torch', reason=SKIP_REASON)
transformers = pytest.importorskip('transformers', reason=SKIP_REASON)

VOCAB = 150
VARIANTS = ('relu', 'gated-gelu')


def save_random_t5(directory, feed_forward_proj, seed=0, model_class=None, **save_kwargs):
  torch.manual_seed(seed)
  config = transformers.T5Config(
      vocab_size=VOCAB, d_model=48, d_kv=12, d_ff=96, num_layers=2, num_heads=4,
      feed_forward_proj=feed_forward_proj, dropout_rate=0.0)
  model = (model_class or transformers.T5EncoderModel)(config).eval()
  model.save_pretrained(directory, **save_kwargs)
  return model


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
  """Per variant: (torch model, single-file directory, sharded directory)."""
  root = tmp_path_factory.mktemp('t5')
  made = {}
  for variant in VARIANTS:
    single, sharded = str(root / f'{variant}_single'), str(root / f'{variant}_sharded')
    model = save_random_t5(single, variant)
    model.save_pretrained(sharded, max_shard_size='20KB')
    made[variant] = (model, single, sharded)
  return made


def padded_batch(seed=0, lengths=(20, 7, 1, 13)):
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, VOCAB, (len(lengths), max(lengths)))
  mask = np.arange(ids.shape[1])[None] < np.array(lengths)[:, None]
  return np.where(mask, ids, 0).astype(np.int32), mask


def torch_features(model, ids, mask):
  with torch.no_grad():
    return model(input_ids=torch.tensor(ids, dtype=torch.long),
                 attention_mask=torch.tensor(mask, dtype=torch.long)).last_hidden_state.numpy()


def jax_encoder(section):
  model_config = tiny.get_config().model
  model_config.text_encoder.update(kind='t5', t5=section)
  model_config.text_vocab_size = section.vocab_size
  return t5.make_t5_encoder(model_config, jnp.float32)


@pytest.mark.parametrize('variant', VARIANTS)
def test_parity_single_and_sharded(checkpoints, variant):
  model, single, sharded = checkpoints[variant]
  assert len(t5_loader.weight_files(sharded)) > 1
  section = t5_loader.text_encoder_config(single)
  assert section.feed_forward_proj == variant and section.width == 48
  params = t5_loader.load_t5_params(single, section, progress=False)
  params_sharded = t5_loader.load_t5_params(sharded, section, progress=False)
  jax.tree.map(np.testing.assert_array_equal, params, params_sharded)

  encoder = jax_encoder(section)
  apply = jax.jit(lambda p, text, mask: encoder.apply({'params': p}, text, mask)[0])
  for seed in range(2):
    ids, mask = padded_batch(seed)
    expected = torch_features(model, ids, mask)
    features = np.asarray(apply(params, ids, mask))
    np.testing.assert_allclose(features[mask], expected[mask], atol=1e-5, rtol=0)
    features_one_hot = np.asarray(apply(params, jax.nn.one_hot(ids, VOCAB), mask))
    np.testing.assert_array_equal(features_one_hot, features)


def test_full_seq2seq_checkpoint_reads_the_encoder_only(tmp_path):
  directory = str(tmp_path / 'seq2seq')
  model = save_random_t5(directory, 'gated-gelu', seed=1,
                         model_class=transformers.T5ForConditionalGeneration)
  section = t5_loader.text_encoder_config(directory)
  params = t5_loader.load_t5_params(directory, section, progress=False)
  ids, mask = padded_batch(2)
  with torch.no_grad():
    expected = model.encoder(input_ids=torch.tensor(ids, dtype=torch.long),
                             attention_mask=torch.tensor(mask, dtype=torch.long))
  features, _ = jax_encoder(section).apply({'params': params}, ids, mask)
  np.testing.assert_allclose(np.asarray(features)[mask],
                             expected.last_hidden_state.numpy()[mask], atol=1e-5, rtol=0)


def test_bfloat16_checkpoint(checkpoints, tmp_path):
  model, single, _ = checkpoints['gated-gelu']
  directory = str(tmp_path / 'bf16')
  copy.deepcopy(model).to(torch.bfloat16).save_pretrained(directory)
  params = t5_loader.load_t5_params(directory, t5_loader.text_encoder_config(single),
                                    progress=False)
  query = model.encoder.block[1].layer[0].SelfAttention.q.weight.detach()
  expected = query.to(torch.bfloat16).float().numpy().T.reshape(48, 4, 12)
  np.testing.assert_array_equal(params['block_1']['attention']['query']['kernel'], expected)
  assert params['embedding'].dtype == np.float32


def edited_copy(source, target, edit):
  """Copies a single-file checkpoint with its tensors passed through `edit(dict)`."""
  os.makedirs(target)
  shutil.copy(os.path.join(source, 'config.json'), target)
  tensors = load_file(os.path.join(source, 'model.safetensors'))
  edit(tensors)
  save_file(tensors, os.path.join(target, 'model.safetensors'))
  return target


def test_missing_unexpected_and_misshaped_tensors_are_named(checkpoints, tmp_path):
  _, single, _ = checkpoints['relu']
  section = t5_loader.text_encoder_config(single)

  def break_it(tensors):
    del tensors['encoder.block.1.layer.1.DenseReluDense.wo.weight']
    tensors['encoder.block.0.layer.0.SelfAttention.k.weight'] = np.zeros((48, 40), np.float32)
    tensors['encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight'] = (
        np.zeros((32, 4), np.float32))

  broken = edited_copy(single, str(tmp_path / 'broken'), break_it)
  with pytest.raises(ValueError) as error:
    t5_loader.load_t5_params(broken, section, progress=False)
  message = str(error.value)
  assert '3 problems' in message
  assert ('missing encoder.block.1.layer.1.DenseReluDense.wo.weight (not in model.safetensors)'
          in message)
  assert ('encoder.block.0.layer.0.SelfAttention.k.weight in model.safetensors has shape '
          '(48, 40), expected (48, 48)') in message
  assert ('unexpected encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight '
          '(in model.safetensors)') in message


def test_config_mismatch_and_missing_files(checkpoints, tmp_path):
  _, single, _ = checkpoints['relu']
  section = t5_loader.text_encoder_config(single)
  section.feed_forward_proj = 'gated-gelu'
  with pytest.raises(ValueError, match="feed_forward_proj='gated-gelu' but config.json has"):
    t5_loader.load_t5_params(single, section, progress=False)
  with pytest.raises(FileNotFoundError, match='config.json'):
    t5_loader.text_encoder_config(str(tmp_path))
  (tmp_path / 'config.json').write_text(json.dumps({'model_type': 't5'}))
  with pytest.raises(FileNotFoundError, match='model.safetensors.index.json'):
    t5_loader.weight_files(str(tmp_path))


def test_identity_follows_content(checkpoints, tmp_path):
  _, single, sharded = checkpoints['relu']
  identity = t5_loader.t5_identity(single)
  assert identity == t5_loader.t5_identity(single)
  assert identity['path'] == os.path.abspath(single) and len(identity['sha256']) == 64
  copy = str(tmp_path / 'copy')
  shutil.copytree(single, copy)
  t5_loader.check_t5_identity(identity, copy)  # same content elsewhere is accepted
  with open(os.path.join(copy, 'model.safetensors'), 'r+b') as f:
    f.seek(-1, os.SEEK_END)
    last = f.read(1)
    f.seek(-1, os.SEEK_END)
    f.write(bytes([last[0] ^ 1]))
  with pytest.raises(ValueError, match='is not the T5 checkpoint this run was trained with'):
    t5_loader.check_t5_identity(identity, copy)
  assert t5_loader.t5_identity(sharded)['sha256'] != identity['sha256']


def test_loaded_params_fit_itit_and_split_merge(checkpoints):
  model, single, _ = checkpoints['gated-gelu']
  config = tiny.get_config()
  config.model.text_encoder.update(kind='t5', path=single,
                                   t5=t5_loader.text_encoder_config(single))
  config.model.text_vocab_size = VOCAB
  net = itit.ITIT(config.model)
  ids, mask = padded_batch(3, lengths=(8, 3))
  image_tokens = jnp.zeros((2, 16), jnp.int32)
  shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), image_tokens,
                          jnp.zeros((2, 16), bool), ids, ids)
  initial = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype),
                         nn.meta.unbox(shapes['params']))
  trainable, frozen = t5_loader.split_frozen(initial)
  assert 'text_encoder' not in trainable and 'encoder' in trainable
  loaded = t5_loader.load_t5_params(single, config.model.text_encoder.t5, progress=False)
  assert jax.tree.structure(loaded) == jax.tree.structure(frozen)
  params = t5_loader.merge(trainable, loaded)
  features = net.apply({'params': params}, ids, jnp.asarray(mask), deterministic=True,
                       method=itit.ITIT.encode_text)
  np.testing.assert_allclose(np.asarray(features)[mask], torch_features(model, ids, mask)[mask],
                             atol=1e-5, rtol=0)
  with pytest.raises(ValueError, match='already hold'):
    t5_loader.merge(params, loaded)

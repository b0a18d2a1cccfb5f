"""Pluggable evaluators (big_vision's pattern): `shapes`, `cycle`, `coco_captions`, `coco_fid`,
`folder` (a captioned test folder of any images: itit/evaluation/folder.py).

Each evaluator is built once from an `EvalContext` (the run's model, tokenizers and `eval.*`
settings) and then `run(params, rng=None, step=None) -> {metric: value}`; a `Suite` runs several.
The training loop runs `eval.evaluators` every `eval_every` steps and at the end (`maybe_suite`);
`python -m itit.evaluate` runs any of them on a saved checkpoint.

Settings (`default_config`; a run's `eval` block and command-line overrides are merged on top):
  evaluators             comma list run during training; '' = 'shapes' when eval.shapes is on
  seed                   sampling seed of the evaluators (each folds in its own name)
  num_examples, batch_size, beam_size, num_steps, guidance_scale, temperature
                         shapes and cycle: pairs evaluated, batch, captioning beam (1 = greedy),
                         parallel-decoding steps, guidance tau, confidence-noise temperature
  sample_temperature, top_k
                         shapes and cycle: the T2I sampling distribution's temperature and
                         top-k filter (0 = off); 1.0 and 0 are MaskGIT's plain sampling
  train_matched_drop     shapes and cycle: T2I hides up to model.num_dropped masked tokens from
                         the encoder, as training does (generate.generate_images)
  shapes_splits          shapes: comma list of split folders ('test' = data.test)
  cycle_split            cycle: the split whose pairs make the round trips
  inception, inception_batch_size
                         the FID network (.npz of `python -m tools.convert_inception`;
                         '' = no FID)
  fid_cache_dir          cycle: where the source images' FID statistics are cached
                         ('' = <workdir>/fid_cache)
  use_java               captioning metrics: None = Stanford PTB tokenizer + METEOR if Java is
                         present, False = Python tokenizer without METEOR
  coco.*                 coco_captions: dataset_json + images (Karpathy) or shards; split,
                         num_images (0 = all), beam_size (paper: 4), batch_size, metrics
  coco_fid.*             coco_fid: annotations, images, split, num_pairs (30000), seed,
                         batch_size, resolution (0 = the VQGAN's), cache_dir, save_every
  folder.*               folder: images (a captioned test folder), captions ('' = its own
                         captions.jsonl / .tsv), num_images (0 = all), beam_size (4), metrics
"""
from __future__ import annotations

import importlib
import os

import ml_collections

from itit import errors

NAMES = ('shapes', 'cycle', 'coco_captions', 'coco_fid', 'folder')
_CLASSES = {'shapes': ('shapes', 'ShapesEval'), 'cycle': ('cycle', 'CycleEval'),
            'coco_captions': ('coco_captions', 'CocoCaptionsEval'),
            'coco_fid': ('coco_fid', 'CocoFidEval'), 'folder': ('folder', 'FolderEval')}


def default_config() -> ml_collections.ConfigDict:
  """Every `eval.*` setting with its default (see the module docstring)."""
  return ml_collections.ConfigDict(dict(
      evaluators='',
      shapes=False,
      seed=0,
      num_examples=256,
      batch_size=64,
      beam_size=1,
      num_steps=24,
      guidance_scale=2.0,
      temperature=32.0,
      sample_temperature=1.0,
      top_k=0,
      train_matched_drop=False,
      shapes_splits='test,heldout_test',
      cycle_split='test',
      inception='',
      inception_batch_size=50,
      fid_cache_dir='',
      use_java=ml_collections.config_dict.placeholder(bool),
      coco=dict(dataset_json='', images='', shards='', split='test', num_images=0, beam_size=4,
                batch_size=32, metrics='CIDEr,BLEU-4,METEOR,ROUGE-L'),
      coco_fid=dict(annotations='', images='', split='', num_pairs=30000, seed=0, batch_size=32,
                    resolution=0, cache_dir='', save_every=2000),
      folder=dict(images='', captions='', num_images=0, beam_size=4,
                  metrics='CIDEr,BLEU-4,ROUGE-L'),
  ))


def _merge(target: ml_collections.ConfigDict, updates, prefix: str = 'eval') -> None:
  for key, value in dict(updates).items():
    if isinstance(value, (dict, ml_collections.ConfigDict)) and isinstance(
        target.get(key), ml_collections.ConfigDict):
      _merge(target[key], value, f'{prefix}.{key}')
      continue
    try:
      target[key] = value  # ConfigDict's own type check (an int may fill a float field)
    except TypeError:
      raise ValueError(f'{prefix}.{key}={value!r}: expected a {type(target[key]).__name__} '
                       f'like its default {target[key]!r}') from None


def merged_config(*updates) -> ml_collections.ConfigDict:
  """`default_config()` updated by each of `updates` in turn (a run's `eval`, overrides)."""
  config = default_config()
  for update in updates:
    if update:
      _merge(config, update)
  return config


def parse_names(names) -> list[str]:
  """'coco_captions, cycle' or a list -> checked evaluator names, in the given order."""
  if isinstance(names, str):
    names = names.split(',')
  names = [n.strip() for n in names if n.strip()]
  unknown = [n for n in names if n not in NAMES]
  if unknown:
    raise errors.UserError(f'unknown evaluator(s) {unknown}: choose from {", ".join(NAMES)} '
                           '(e.g. --eval=shapes,cycle)')
  return names


def make(name: str, context):
  """The evaluator `name` built on `context` (an `EvalContext`)."""
  module_name, class_name = _CLASSES[parse_names([name])[0]]
  module = importlib.import_module(f'itit.evaluation.{module_name}')
  return getattr(module, class_name)(context)


class Suite:
  """Several evaluators over one context; `run` merges their metrics, figures and notes."""

  def __init__(self, context, names):
    self.context = context
    self.evaluators = [make(name, context) for name in parse_names(names)]

  def run(self, params, rng=None, *, step: int | None = None):
    """-> ({metric: value}, {figure name: uint8 image}); `notes` holds the evaluators' caveats."""
    results, images = {}, {}
    for evaluator in self.evaluators:
      results.update(evaluator.run(params, rng, step=step))
      images.update(evaluator.images)
    return results, images

  @property
  def notes(self) -> list[str]:
    return [note for evaluator in self.evaluators for note in evaluator.notes]


def training_names(eval_config) -> list[str]:
  """The evaluators a training run asks for: `eval.evaluators`, else 'shapes' if eval.shapes."""
  names = eval_config.get('evaluators', '') or ('shapes' if eval_config.get('shapes') else '')
  return parse_names(names)


def maybe_suite(config, model, workdir: str = '') -> Suite | None:
  """The evaluators of a training config (`eval.*`), or None when it asks for none."""
  eval_config = merged_config(config.get('eval', None))
  names = training_names(eval_config)
  if not names:
    return None
  from itit.evaluation import common  # pylint: disable=g-import-not-at-top  (jax, tokenizers)
  context = common.EvalContext(config, model, eval_config, workdir=workdir,
                               out_dir=os.path.join(workdir, 'eval') if workdir else '')
  return Suite(context, names)

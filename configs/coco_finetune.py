r"""Fine-tunes a pretrained ITIT for COCO captioning: the paper's fine-tuned CIDEr (table 1).

  python -m itit.prepare --config=configs/prepare_coco.py:COCO_ROOT --out_dir=COCO_SHARDS \
      --config.image_tokenizer=VQGAN_DIR --config.text_tokenizer=SPIECE_OF_THE_PRETRAINED_RUN
  python -m itit.train --config=configs/coco_finetune.py:vit_b --workdir=FT \
      --config.init_from=PRETRAINED_WORKDIR[:STEP] --config.data.dir=COCO_SHARDS \
      --config.eval.coco.dataset_json=COCO_ROOT/dataset_coco.json --config.eval.coco.images=COCO_ROOT

`arg` names the pretrained run's model config (a file in configs/: vit_b (default), vit_l,
vit_h, shapes, tiny); the model must equal the pretrained one, whose parameters are loaded when
FT has no checkpoint yet (itit.train's resume order: FT's checkpoint, else init_from, else
scratch). Only the I2T loss is trained (no T2I, no I2I, no cycles) on Karpathy train + restval,
with a fresh optimizer. The paper gives no fine-tuning recipe; these are GIT-like values on the
paper's table 3 recipe: Adafactor, label smoothing 0.1, dropout 0.1, batch 512, a 10x lower peak
learning rate (1e-5, 500 warmup steps, cosine) for about 9 epochs (10K steps). Every 2,000 steps
and at the end, `coco_captions` scores the Karpathy test split with beam 4 (paper app. B).
"""
import importlib

from configs import base
from configs import common
from itit import evaluation

MODEL_CONFIGS = ('vit_b', 'vit_l', 'vit_h', 'shapes', 'tiny')


def get_config(arg=None):
  names = common.presets(arg, 'configs/coco_finetune.py', MODEL_CONFIGS, exclusive=[MODEL_CONFIGS])
  model_name = names[0] if names else 'vit_b'
  pretrained = importlib.import_module(f'configs.{model_name}').get_config()
  config = base.paper_config()
  config.model = pretrained.model
  config.init_from = ''  # the pretrained workdir, 'DIR' (latest step) or 'DIR:STEP'
  config.loss.update(dict(t2i=False, i2t=True, i2i=False, unpaired_text_loss='none',
                          unpaired_image_loss='none'))
  config.data.update(dict(paired='paired', test='test'))
  config.batch.update(dict(paired=512, paired_split=False))  # every example trains I2T
  config.total_steps = 10_000
  config.optimizer.update(dict(lr=1e-5, warmup_steps=500, schedule='cosine'))
  config.checkpoint_every = 2000
  config.eval_every = 2000
  config.eval_batches = 10
  config.eval = evaluation.merged_config(config.eval, dict(
      evaluators='coco_captions', shapes=False,
      # Without dataset_coco.json the test shards' own texts serve as references.
      coco=dict(shards='test', split='test', beam_size=4, batch_size=64)))
  return config

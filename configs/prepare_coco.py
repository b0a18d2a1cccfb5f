r"""Token shards of COCO's Karpathy splits: training pairs, val and test.

  python -m itit.prepare --config=configs/prepare_coco.py:COCO_ROOT --out_dir=DIR \
      --config.image_tokenizer=VQGAN_DIR --config.text_tokenizer=spiece.model

COCO_ROOT holds Karpathy's dataset_coco.json (from caption_datasets.zip) and the train2014/ and
val2014/ image folders. Streams: 'paired' = train + restval (113,287 images, 5 captions each),
'val' and 'test' (5,000 images each), each image's captions in consecutive records (the
coco_captions evaluator groups them). To fine-tune a pretrained run (configs/coco_finetune.py),
use ITS VQGAN and SentencePiece model: the shards must carry the same tokenizer identities.
"""
import os

import ml_collections

SPLITS = {'paired': 'train+restval', 'val': 'val', 'test': 'test'}


def get_config(arg=None):
  coco_root = arg or ''
  if not os.path.isdir(coco_root):
    raise ValueError(f'configs/prepare_coco.py: {coco_root!r} is not a directory (valid: the COCO '
                     'root with dataset_coco.json, train2014/ and val2014/, as '
                     '--config=configs/prepare_coco.py:COCO_ROOT)')
  config = ml_collections.ConfigDict()
  config.image_tokenizer = ''  # workdir of itit.train_tokenizer (or a converted MaskGIT VQGAN)
  config.text_tokenizer = ''  # the SentencePiece .model; empty: train one on text_corpus
  config.text_corpus = ''  # a glob of text files, used only when text_tokenizer is empty
  config.text_vocab_size = 32000
  config.max_text_len = 64
  config.image_size = 256
  config.min_image_size = 64
  config.records_per_shard = 10000
  config.batch_size = 256
  config.shapes = ml_collections.ConfigDict(dict(
      seed=0, paired_fraction=0.0, num_train=0, num_test=0))  # unused: no shapes stream
  config.streams = ml_collections.ConfigDict({
      name: dict(source='karpathy', kind='paired', split=split,
                 annotations=os.path.join(coco_root, 'dataset_coco.json'), images=coco_root)
      for name, split in SPLITS.items()})
  return config

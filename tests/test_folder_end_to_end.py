"""Real images through the generic paths, by the command lines, as the README's worked example.

24 photos of 32x32 cut from the sample images matplotlib ships (a portrait, a gift box, a logo;
`matplotlib.cbook.get_sample_data`), with templated captions written here under the `image` key
(what itit.sample writes), laid out as configs/prepare_folder.py reads a data folder: pairs/ (9
captioned), images/ (9 unpaired, plus one 16 px image that is too small), texts.txt (the 9
captions of the unpaired images, as unpaired texts) and test/ (6 captioned). Then
train_tokenizer (configs/vqgan_folder.py) -> prepare (configs/prepare_folder.py) -> train
(configs/folder.py, table 2 row 14, 2 steps of a shrunk model) -> sample -> evaluate (the
`folder` evaluator on test/). Mostly compiling: about 3 minutes on two CPU cores, hence `slow`.
"""
import json
import os
import subprocess
import sys
import time

from matplotlib import cbook
from PIL import Image
import pytest

import conftest
from itit.data import sources

SUBJECTS = [('grace_hopper.jpg', 'a portrait of a woman in uniform'),
            ('Minduka_Present_Blue_Pack.png', 'a blue gift box with a ribbon'),
            ('logo2.png', 'a blue and orange logo with letters')]
VIEWS = ['seen whole', 'seen up close', 'on the left', 'on the right', 'flipped', 'at the top',
         'at the bottom', 'in the middle']
SPLITS = ('pairs', 'images', 'test')  # view i of each subject goes to SPLITS[i % 3]


def _views(image):
  """The 8 VIEWS of a PIL image: crops, and one mirror image."""
  w, h = image.size
  s = min(w, h)
  boxes = [(0, 0, w, h), ((w - s // 2) // 2, (h - s // 2) // 2, (w + s // 2) // 2,
                          (h + s // 2) // 2),
           (0, 0, s, s), (w - s, h - s, w, h), None, (0, 0, w, h // 2 + 1), (0, h // 2, w, h),
           ((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2)]
  for box in boxes:
    yield image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if box is None else image.crop(box)


def build_data_folder(root):
  """Writes the data folder of the module docstring under `root`; returns it."""
  captions = {'pairs': [], 'test': []}
  texts = []
  for file_name, subject in SUBJECTS:
    with cbook.get_sample_data(file_name) as f:
      image = Image.open(f)
      image.load()
    rgba = image.convert('RGBA')
    image = Image.alpha_composite(Image.new('RGBA', rgba.size, 'white'), rgba).convert('RGB')
    for index, (view, words) in enumerate(zip(_views(image), VIEWS)):
      split = SPLITS[index % 3]
      name = f'{os.path.splitext(file_name)[0].lower()}_{index}.png'
      os.makedirs(os.path.join(root, split), exist_ok=True)
      view.resize((32, 32), Image.Resampling.BICUBIC).save(os.path.join(root, split, name))
      caption = f'{subject}, {words}'
      if split == 'images':
        texts.append(caption)
      else:
        captions[split].append({'image': name, 'caption': caption})
  for split, entries in captions.items():
    with open(os.path.join(root, split, 'captions.jsonl'), 'w') as f:
      f.writelines(json.dumps(entry) + '\n' for entry in entries)
  with open(os.path.join(root, 'texts.txt'), 'w') as f:
    f.writelines(text + '\n' for text in texts)
  Image.new('RGB', (16, 16), (200, 30, 30)).save(os.path.join(root, 'images', 'tiny.png'))
  return str(root)


def run(module, *args):
  """`python -m <module> args` from the repository root; returns its stdout, asserting success."""
  start = time.time()
  result = subprocess.run([sys.executable, '-m', module, *args], cwd=conftest.REPO,
                          env=conftest.repo_env(), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, f'{module} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}'
  print(f'{module}: {time.time() - start:.0f} s')
  return result.stdout


@pytest.mark.slow
def test_a_captioned_folder_of_real_images_trains_samples_and_evaluates(tmp_path):
  data = build_data_folder(tmp_path / 'data')
  assert sum(len(files) for _, _, files in os.walk(data)) == 24 + 1 + 2 + 1  # + tiny, captions
  vqgan, shards, workdir = (str(tmp_path / name) for name in ('vqgan', 'shards', 'run'))

  out = run('itit.train_tokenizer', '--config=configs/vqgan_folder.py', f'--workdir={vqgan}',
            f'--config.data.dir={data}/images', f'--config.data.eval_dir={data}/test',
            '--config.total_steps=4', '--config.batch_size=4', '--config.log_every=2',
            '--config.image_every=4', '--config.checkpoint_every=4', '--config.eval_batch_size=8')
  assert 'Training images: 9 of 10 checked are usable' in out and 'too_small 1' in out
  with open(os.path.join(vqgan, 'eval.json')) as f:
    assert json.load(f)['num_images'] == 6  # test/

  run('itit.prepare', f'--config=configs/prepare_folder.py:{data}', f'--out_dir={shards}',
      f'--config.image_tokenizer={vqgan}', '--config.batch_size=8')
  with open(os.path.join(shards, 'prepare_summary.json')) as f:
    summary = json.load(f)
  assert summary == {'paired': {'records': 9, 'skipped': {}},
                     'test': {'records': 6, 'skipped': {}},
                     'unpaired_image': {'records': 9, 'skipped': {'too_small': 1}},
                     'unpaired_text': {'records': 9, 'skipped': {}}}

  shrink = [f'--config.model.{name}=1' for name in ('depth', 'text_decoder_depth',
                                                     'image_decoder_depth')]
  run('itit.train', '--config=configs/folder.py:quick', f'--config.data.dir={shards}',
      f'--workdir={workdir}', '--config.total_steps=2', '--config.log_every=1',
      '--config.checkpoint_every=2', '--config.eval_batches=1', '--config.cycle.synthesis_steps=2',
      *[f'--config.batch.{stream}=4' for stream in ('paired', 'unpaired_image', 'unpaired_text')],
      *shrink)
  with open(os.path.join(workdir, 'eval.json')) as f:
    assert json.load(f)['step'] == 2

  samples = str(tmp_path / 'samples')
  prompts = ['a blue gift box with a ribbon, flipped', 'a portrait of a woman in uniform']
  run('itit.sample', f'--workdir={workdir}', *[f'--prompt={p}' for p in prompts],
      f'--images={data}/test', '--num_steps=2', '--beam_size=1', f'--out={samples}')
  for index in range(2):  # each generated image as its own PNG, beside the grid
    with Image.open(os.path.join(samples, 't2i', f'{index:03d}.png')) as image:
      assert image.size == (32, 32)
  assert os.path.isfile(os.path.join(samples, 't2i.png'))
  with open(os.path.join(samples, 't2i', 'captions.jsonl')) as f:
    assert [json.loads(line) for line in f] == [
        {'image': f'{i:03d}.png', 'caption': p} for i, p in enumerate(prompts)]
  # The captions of test/ are a captions file of test/ as prepare reads one (the `image` key).
  skips = sources.SkipCounter()
  records = list(sources.image_folder(os.path.join(data, 'test'), skips=skips, size=32,
                                      min_size=32,
                                      captions=os.path.join(samples, 'captions.jsonl')))
  assert len(records) + skips.counts['empty_text'] == 6 and set(skips.counts) <= {'empty_text'}

  out = run('itit.evaluate', f'--workdir={workdir}', '--eval=folder',
            f'--config.folder.images={data}/test', '--config.folder.beam_size=1',
            '--config.num_steps=2', '--config.batch_size=8')
  with open(os.path.join(workdir, 'eval', '2.json')) as f:
    result = json.load(f)
  metrics = result['metrics']
  assert metrics['folder/num_images'] == 6
  for name in ('CIDEr', 'BLEU-4', 'ROUGE-L', 't2i2t_cider', 'i2t2i_token_accuracy'):
    assert 0.0 <= metrics[f'folder/{name}'] <= 10.0, name
  assert any(n.startswith('folder: FID skipped: eval.inception is empty')
             for n in result['notes'])
  with open(os.path.join(workdir, 'eval', '2_folder_captions.jsonl')) as f:
    assert sorted(json.loads(line)['image'] for line in f) == sorted(
        entry for entry in os.listdir(os.path.join(data, 'test')) if entry.endswith('.png'))
  assert '| folder | CIDEr |' in out

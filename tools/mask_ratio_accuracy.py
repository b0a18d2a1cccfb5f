r"""T2I masked-token accuracy of a trained run at each mask ratio, as parallel decoding meets them.

  python -m tools.mask_ratio_accuracy --workdir=RUN [--step=S] [--split=test]

Parallel decoding starts all-masked and ends with a few masked tokens; the paper's T2I loss only
trains mask ratios >= 0.5. This masks `ratio` of each test image's tokens at random (the same
masks for every variant), predicts them from the rest and the paired caption (argmax of the
conditional logits), and prints per ratio: accuracy over masked tokens, over masked background
tokens (the split's most frequent code) and masked object tokens, and how often a background
token is predicted as an object (which grows objects into blobs) or an object token as
background. `--unconditional` predicts from the empty text instead: guidance's unconditional
branch, trained by I2I. Two encoder inputs: MAGE's (every masked token enters as [MASK], the
sampler's default) and the training-matched one (up to `model.num_dropped` masked tokens
hidden, `eval.train_matched_drop`). Results are printed as a Markdown table.
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from itit import errors
from itit.data import shards
from itit.models.itit import ITIT
from itit.models import masking
from itit.trainer import run as run_lib

RATIOS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 0.9, 1.0)


def predictor(model, params, drop_up_to: int, unconditional: bool = False):
  """(image tokens [B, N], text ids [B, L], mask [B, N]) -> argmax predictions [B, N];
  `unconditional`: with the empty text instead (guidance's unconditional branch)."""

  @jax.jit
  def predict(image_tokens, text_ids, mask):
    apply = functools.partial(model.apply, {'params': params}, deterministic=True)
    if unconditional:
      features, text_mask = apply(*text_ids.shape, method=ITIT.empty_text)
    else:
      features, text_mask = apply(text_ids, method=ITIT.encode_text), text_ids != 0
    encoded = apply(jnp.where(mask, 0, image_tokens), mask, features, text_mask,
                    num_dropped=0, drop_up_to=drop_up_to, method=ITIT.encode)
    return jnp.argmax(apply(encoded, method=ITIT.decode_image), -1)

  return predict


def ratio_scores(predicted, image_tokens, mask, background: int) -> dict[str, float]:
  """Accuracies over the masked positions; NaN where a group is empty."""
  right = predicted == image_tokens
  is_background = image_tokens == background
  mean = lambda values: float(values.mean()) if values.size else float('nan')
  return {
      'all': mean(right[mask]),
      'background': mean(right[mask & is_background]),
      'object': mean(right[mask & ~is_background]),
      'object_for_background': mean((predicted != background)[mask & is_background]),
      'background_for_object': mean((predicted == background)[mask & ~is_background]),
  }


def main(argv=None) -> None:
  parser = run_lib.run_argument_parser(__doc__)
  parser.add_argument('--unconditional', action='store_true',
                      help='predict from the empty text (guidance\'s unconditional logits)')
  args = parser.parse_args(argv)
  config, model, params, step = run_lib.load_run(args.workdir, args.step)
  source = shards.open_shards(os.path.join(config.data.dir, args.split))
  batch = source.read_batch(np.arange(min(args.num_examples, len(source))))
  image_tokens = np.asarray(batch['image_tokens'], np.int32)
  text_ids = np.asarray(batch['text_ids'], np.int32)
  codes, counts = np.unique(image_tokens, return_counts=True)
  background = int(codes[np.argmax(counts)])
  print(f'{args.workdir} step {step}, {len(image_tokens)} {args.split} examples; background '
        f'code {background} ({counts.max() / image_tokens.size:.1%} of tokens); '
        f'{"the empty text" if args.unconditional else "the paired captions"}\n')
  variants = {'MAGE input': predictor(model, params, 0, args.unconditional),
              'train-matched drop': predictor(model, params, config.model.num_dropped,
                                              args.unconditional)}
  columns = ('all', 'background', 'object', 'object_for_background', 'background_for_object')
  print('| mask ratio | encoder input | ' + ' | '.join(columns) + ' |')
  print('|---|---|' + '---:|' * len(columns))
  rng = jax.random.PRNGKey(args.seed)
  batch_size, num_tokens = image_tokens.shape
  for ratio in RATIOS:
    rng, mask_rng = jax.random.split(rng)
    mask = np.asarray(masking.random_mask(mask_rng, batch_size, num_tokens, ratio))
    for name, predict in variants.items():
      predicted = np.asarray(predict(image_tokens, text_ids, mask))
      scores = ratio_scores(predicted, image_tokens, mask, background)
      print(f'| {ratio:g} | {name} | ' + ' | '.join(f'{scores[c]:.3f}' for c in columns) + ' |',
            flush=True)


if __name__ == '__main__':
  errors.run_command(main)

r"""How local a shapes-world VQGAN's tokens are: the codes its plain-background patches get.

  python -m tools.token_stats --vqgan=VQGAN_WORKDIR [--num_scenes=500] [--num_train=20000]

The test scenes are those of `make_splits(0, num_train=NUM_TRAIN)`, the study's and the shapes
configs' split at the default (figures printed before `--num_train` existed used 100: another
test split, 74.9% background patches against 68.4%).

A tokenizer whose tokens describe their own patch gives every plain-background patch (about
three quarters of the shapes world's 4x4 patches) one code; one whose tokens depend on the whole
scene spreads them over many codes, and ITIT then has to learn a far harder token distribution.
Also prints the tokens of an empty corner for one circle of each colour at the opposite corner
(they should not change with the colour), and how far an object token is fixed by its 8
neighbours: a lookup table from the training scenes' tokens (the most frequent code after each
3x3 context) scored on the test scenes' object tokens (`neighbourhood_lookup_accuracy`). That
is a floor for what a T2I model that has learnt the tokens' local composition predicts for a
masked object token with its neighbours in view (tools.mask_ratio_accuracy at ratio 0.05),
overall and by the size and shape of the object a token shows (`object_labels`).
"""

import numpy as np

from itit import errors
from itit.data import shapes
from itit.data import shapes_splits
from itit.models import vqgan


def neighbourhood_lookup_accuracy(train_tokens, test_tokens, grid: int, background: int,
                                  codebook_size: int, groups=None) -> dict:
  """Predicts each test token from its 8 neighbours' codes by a table counted on train_tokens.

  train_tokens, test_tokens: [num_images, grid * grid] codes in [0, codebook_size). Positions
  off the image read as a code of their own, so the border is part of the context. The table
  gives, per context, its most frequent centre code (ties: the smaller code). Returns, over the
  test tokens whose code is not `background`: 'object_accuracy' (a context never seen in
  training counts as wrong), 'coverage' (the share with a seen context) and 'seen_accuracy'
  (accuracy on those), and 'object_tokens' (their number). With `groups` ([num_images,
  grid * grid] labels of the test tokens, None to leave one out) also 'by_group': {label:
  (object_accuracy, object_tokens)} over the labelled object tokens.
  """
  def contexts(tokens):
    codes = np.asarray(tokens, np.int64).reshape(-1, grid, grid)
    padded = np.pad(codes, ((0, 0), (1, 1), (1, 1)), constant_values=codebook_size)
    neighbours = [padded[:, dy:dy + grid, dx:dx + grid].reshape(-1)
                  for dy in range(3) for dx in range(3) if (dy, dx) != (1, 1)]
    return np.stack(neighbours, 1), codes.reshape(-1)

  train_contexts, train_codes = contexts(train_tokens)
  test_contexts, test_codes = contexts(test_tokens)
  # One integer per distinct context, shared by both sets (any codebook size fits).
  _, context_ids = np.unique(np.concatenate([train_contexts, test_contexts]), axis=0,
                             return_inverse=True)
  context_ids = context_ids.reshape(-1)
  train_keys, test_keys = context_ids[:len(train_codes)], context_ids[len(train_codes):]
  pairs, counts = np.unique(np.stack([train_keys, train_codes], 1), axis=0, return_counts=True)
  # Per context the most frequent code: sort by (context, -count, code), keep each first.
  order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))
  pairs = pairs[order]
  first = np.ones(len(pairs), bool)
  first[1:] = pairs[1:, 0] != pairs[:-1, 0]
  # The table, indexed by context id: -1 where a context never occurs in training.
  best_code = np.full(context_ids.max() + 1, -1, np.int64)
  best_code[pairs[first, 0]] = pairs[first, 1]
  is_object = test_codes != background
  predicted = best_code[test_keys[is_object]]
  seen = predicted >= 0
  right = predicted == test_codes[is_object]
  scores = {'object_accuracy': float(right.mean()), 'coverage': float(seen.mean()),
             'seen_accuracy': float(right[seen].mean()) if seen.any() else 0.0,
             'object_tokens': int(is_object.sum())}
  if groups is not None:
    groups = np.asarray(groups, object)
    if groups.size != is_object.size:
      raise ValueError(f'groups: {groups.size} labels for {is_object.size} test tokens')
    token_groups = groups.reshape(-1)[is_object]
    scores['by_group'] = {
        label: (float(right[token_groups == label].mean()), int(np.sum(token_groups == label)))
        for label in dict.fromkeys(g for g in token_groups if g is not None)}
  return scores


def image_patches(images: np.ndarray, grid: int) -> np.ndarray:
  """[num_images, size, size, 3] -> [num_images, grid * grid, pixels * 3], one row a token."""
  patch = images.shape[1] // grid
  patches = images.reshape(-1, grid, patch, grid, patch, 3).transpose(0, 1, 3, 2, 4, 5)
  return patches.reshape(len(images), grid * grid, -1)


def object_labels(scenes, patches) -> np.ndarray:
  """'<size> <shape>' of the one object each token's patch shows, found by colour.

  patches: [num_images, tokens, pixels * 3] uint8 of the scenes' images. A token showing no
  object, or both objects of a scene, and every token of a scene whose objects share a colour,
  get None.
  """
  labels = np.full(patches.shape[:2], None, object)
  for index, scene in enumerate(scenes):
    if len({obj.color for obj in scene.objects}) < len(scene.objects):
      continue
    pixels = patches[index].reshape(patches.shape[1], -1, 3)
    shows = np.stack([np.any(np.all(pixels == shapes.COLORS[obj.color], axis=-1), axis=-1)
                      for obj in scene.objects])
    for slot, obj in enumerate(scene.objects):
      labels[index, shows[slot] & (shows.sum(0) == 1)] = f'{obj.size} {obj.shape}'
  return labels


def main():
  parser = errors.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--vqgan', required=True, help='an itit.train_tokenizer workdir')
  parser.add_argument('--num_scenes', type=int, default=500)
  parser.add_argument('--num_train', type=int, default=20000,
                      help='training scenes (one jittered image each) for the lookup table')
  args = parser.parse_args()
  params, config = vqgan.load_tokenizer(args.vqgan)
  grid, size = vqgan.grid_size(config), config.image_size
  patch = size // grid
  tokenize = vqgan.tokenizer_fn(params, config, 100)
  splits = shapes_splits.make_splits(0, paired_fraction=1.0, num_train=args.num_train,
                              num_test=args.num_scenes)
  images = np.stack([image for image, _ in shapes.examples(splits['test'], 0, size)])
  tokens = np.asarray(tokenize(images)).reshape(len(images), -1)
  patches = image_patches(images, grid)
  background = np.all(patches == np.asarray(shapes.BACKGROUND, np.uint8).repeat(
      patch * patch)[None, None], axis=-1)
  codes, counts = np.unique(tokens[background], return_counts=True)
  print(f'{len(images)} scenes: {background.mean():.1%} of patches are plain background; they '
        f'use {len(codes)} codes, the most common {counts.max() / counts.sum():.1%} of them; '
        f'{np.mean([len(set(row)) for row in tokens]):.1f} distinct codes per image, '
        f'{len(np.unique(tokens))} codes in all')
  corner = []
  for color in shapes.COLORS:
    scene = shapes.Scene((shapes.Obj(color, 'circle', 'small', 'top left'),))
    corner.append(shapes.render(scene, size, np.random.default_rng(0)))
  corner_tokens = np.asarray(tokenize(np.stack(corner))).reshape(len(corner), grid, grid)
  print('bottom-right 2x2 tokens for a small circle at the top left, per colour:')
  for color, row in zip(shapes.COLORS, corner_tokens[:, -2:, -2:].reshape(len(corner), -1)):
    print(f'  {color:8s} {row.tolist()}')

  train_images = np.stack([image for image, _ in shapes.examples(splits['paired'], 0, size)])
  train_tokens = np.asarray(tokenize(train_images)).reshape(len(train_images), -1)
  background_code = int(codes[np.argmax(counts)])
  lookup = neighbourhood_lookup_accuracy(train_tokens, tokens, grid, background_code,
                                         config.codebook_size,
                                         groups=object_labels(splits['test'], patches))
  print(f'object tokens from their 8 neighbours (a table of {len(train_images)} training '
        f'scenes, {lookup["object_tokens"]} test object tokens): {lookup["object_accuracy"]:.1%} '
        f'right; {lookup["coverage"]:.1%} have a context seen in training, '
        f'{lookup["seen_accuracy"]:.1%} of those right; by the object a token shows:')
  for label in sorted(lookup['by_group']):
    accuracy, count = lookup['by_group'][label]
    print(f'  {label:16s} {accuracy:6.1%} of {count} tokens')


if __name__ == '__main__':
  errors.run_command(main)

r"""Which attribute values a trained shapes-world run confuses, in both directions.

  python -m tools.attribute_confusion --workdir=RUN [--step=S] [--attribute=shape --by=size]
      [--sample_temperature=0.1 --guidance_scale=0 ...]

Captions the split's first images and draws its first captions exactly as the `shapes`
evaluator does (the run's `eval` sampler settings, overridable here), parses both, and prints
Markdown confusion tables of one attribute (rows: the scene's value, columns: the value of the
matched generated object, or `missing`), split by a second attribute: for the generated images
(T2I), the captions (I2T) and the VQGAN reconstructions of the split's own tokens (the ceiling
of T2I). The diagonal over a table is `itit.evaluation.scenes.scene_metrics`' accuracy of the
attribute.
"""
from __future__ import annotations

import os

import jax

from itit import errors
from itit.data import shapes
from itit.data import shapes_parse
from itit.evaluation import scenes
from itit.evaluation import shapes as shapes_evaluation
from itit.trainer import run as run_lib

SAMPLER_FLAGS = {'num_steps': int, 'guidance_scale': float, 'temperature': float,
                 'sample_temperature': float, 'top_k': int}


def confusion_markdown(counts: dict, title: str) -> str:
  """One table of `attribute_confusion` counts (without `by`): row-normalised percentages,
  the row's object count and its accuracy."""
  columns = list(next(iter(counts.values())))
  lines = [f'**{title}**', '', '| scene \\ generated | ' + ' | '.join(columns)
           + ' | objects | right |', '|---|' + '---:|' * (len(columns) + 2)]
  for value, row in counts.items():
    total = sum(row.values())
    cells = [f'{100 * row[c] / total:.0f}%' if total else '–' for c in columns]
    right = f'{100 * row[value] / total:.1f}%' if total else '–'
    lines.append(f'| {value} | ' + ' | '.join(cells) + f' | {total} | {right} |')
  all_right = sum(row[value] for value, row in counts.items())
  all_objects = sum(sum(row.values()) for row in counts.values())
  lines += ['', f'All: {100 * all_right / max(all_objects, 1):.1f}% of {all_objects} objects.']
  return '\n'.join(lines)


def main(argv=None) -> None:
  parser = run_lib.run_argument_parser(__doc__)
  parser.add_argument('--attribute', default='shape', choices=shapes.ATTRIBUTES)
  parser.add_argument('--by', default=None, choices=shapes.ATTRIBUTES + ('none',),
                      help="split by this attribute (default: size, or shape for --attribute=size)")
  for name, kind in SAMPLER_FLAGS.items():
    parser.add_argument(f'--{name}', type=kind, default=None,
                        help=f"T2I sampler's {name} (default: the run's eval.{name})")
  args = parser.parse_args(argv)
  by = args.by or ('shape' if args.attribute == 'size' else 'size')
  by = None if by == 'none' else by
  if by == args.attribute:
    parser.error(f'--by must differ from --attribute ({args.attribute})')
  config, model, params, step = run_lib.load_run(args.workdir, args.step)
  settings = {name: config.eval[name] if getattr(args, name) is None else getattr(args, name)
              for name in SAMPLER_FLAGS}
  settings['top_k'] = settings['top_k'] or None
  evaluator = shapes_evaluation.ShapesSplitEval(
      model, os.path.join(config.data.dir, args.split), num_examples=args.num_examples,
      batch_size=config.eval.batch_size, beam_size=config.eval.beam_size,
      image_kwargs=dict(settings, train_matched_drop=config.eval.train_matched_drop))
  true_scenes = evaluator.scenes
  predictions = {
      'T2I (generated images)': shapes_parse.parse_images(
          evaluator.images(params, jax.random.PRNGKey(args.seed))),
      'I2T (captions)': [shapes_parse.parse_caption(c) for c in evaluator.captions(params)],
      'VQGAN reconstructions (the T2I ceiling)': shapes_parse.parse_images(
          evaluator.detokenize(evaluator.image_tokens)),
  }
  sampler = ', '.join(f'{k}={v}' for k, v in settings.items())
  print(f'# {args.attribute} confusion of `{args.workdir}` at step {step}\n\n'
        f'{len(true_scenes)} scenes of the {args.split} split; T2I sampler: {sampler}.\n')
  for source, predicted in predictions.items():
    print(f'## {source}\n')
    exact = scenes.scene_metrics(predicted, true_scenes)['exact']
    print(f'Exact scenes: {100 * exact:.1f}%.\n')
    counts = scenes.attribute_confusion(predicted, true_scenes, args.attribute, by=by)
    groups = counts.items() if by else [('all objects', counts)]
    for group, table in groups:
      print(confusion_markdown(table, f'{by}: {group}' if by else group) + '\n')


if __name__ == '__main__':
  errors.run_command(main)

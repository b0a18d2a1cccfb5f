"""Metrics of predicted shapes-world scenes against the true ones.

A predicted scene comes from parsing a caption or an image (`itit.data.shapes_parse`); None
stands for one that could not be parsed. Objects are compared through `match_objects`, which
pairs each target object with the predicted object that agrees with it on most attributes.
"""
import itertools
from typing import Sequence

from itit.data import shapes

MISSING = 'missing'  # the predicted value of a target object that no predicted object matched


def _agreement(a: shapes.Obj, b: shapes.Obj | None) -> int:
  return 0 if b is None else sum(getattr(a, k) == getattr(b, k) for k in shapes.ATTRIBUTES)


def match_objects(predicted: shapes.Scene,
                  target: shapes.Scene) -> tuple[shapes.Obj | None, ...]:
  """The predicted object matched to each target object (None where there are too few).

  Distinct predicted objects are assigned to target objects so that the number of agreeing
  attributes, summed, is largest; ties go to the first assignment in canonical order.
  """
  options = list(range(len(predicted.objects))) + [None] * len(target.objects)
  best, best_score = (None,) * len(target.objects), -1
  for assignment in itertools.permutations(options, len(target.objects)):
    picked = [None if i is None else predicted.objects[i] for i in assignment]
    score = sum(_agreement(t, p) for t, p in zip(target.objects, picked))
    if score > best_score:
      best, best_score = tuple(picked), score
  return best


def scene_metrics(predicted: Sequence[shapes.Scene | None],
                  target: Sequence[shapes.Scene]) -> dict[str, float]:
  """Accuracies of predicted scenes (None = unparseable: wrong everywhere) against targets.

  color / shape / size / region: over all target objects, whether the matched predicted object
  (`match_objects`) has that attribute right; a target object left unmatched is wrong, extra
  predicted objects cost nothing here (they cost count and exact).
  relation: per scene; a 1-object target needs exactly 1 predicted object, a 2-object target
  needs the relation between the predictions matched to its objects to be its relation.
  count: per scene, the number of objects. exact: per scene, the predicted scene is the target.
  """
  if len(predicted) != len(target) or not target:
    raise ValueError(f'scene_metrics: got {len(predicted)} predictions for {len(target)} '
                     f'targets; pass equally many, at least one.')
  hits = dict.fromkeys(shapes.ATTRIBUTES, 0)
  relation = count = exact = num_objects = 0
  for p, t in zip(predicted, target):
    num_objects += len(t.objects)
    if p is None:
      continue
    matched = match_objects(p, t)
    for k in shapes.ATTRIBUTES:
      hits[k] += sum(m is not None and getattr(m, k) == getattr(o, k)
                     for m, o in zip(matched, t.objects))
    if len(t.objects) == 2:
      relation += None not in matched and shapes.relation_of(*matched) == t.relation
    else:
      relation += len(p.objects) == len(t.objects)
    count += len(p.objects) == len(t.objects)
    exact += p == t
  metrics = {k: v / max(num_objects, 1) for k, v in hits.items()}
  metrics.update(relation=relation / len(target), count=count / len(target),
                 exact=exact / len(target))
  return metrics


def attribute_confusion(predicted: Sequence[shapes.Scene | None],
                        target: Sequence[shapes.Scene], attribute: str,
                        by: str | None = None) -> dict:
  """Counts of (target value, predicted value) of one attribute over all target objects.

  The predicted object is the one `match_objects` pairs with the target object, as in
  `scene_metrics`; an unmatched target object (or an unparseable scene) counts as `MISSING`.
  `by`: another attribute; the counts are then split by that attribute's target value.

  Returns {target value: {predicted value or MISSING: count}} over the attribute's values in
  canonical order (every cell present, zeros included), or with `by`:
  {by value: that dict}. The diagonal over all counts is `scene_metrics`' accuracy of the
  attribute.
  """
  values = shapes.ATTRIBUTE_VALUES
  if attribute not in values or (by is not None and (by not in values or by == attribute)):
    raise ValueError(f'attribute_confusion: attribute={attribute!r}, by={by!r}; use two '
                     f'different ones of {", ".join(values)} (by may be None)')
  if len(predicted) != len(target):
    raise ValueError(f'attribute_confusion: got {len(predicted)} predictions for '
                     f'{len(target)} targets')

  def empty():
    return {t: dict.fromkeys(values[attribute] + (MISSING,), 0) for t in values[attribute]}

  counts = {g: empty() for g in values[by]} if by else empty()
  for p, t in zip(predicted, target):
    matched = match_objects(p, t) if p is not None else (None,) * len(t.objects)
    for m, o in zip(matched, t.objects):
      table = counts[getattr(o, by)] if by else counts
      table[getattr(o, attribute)][MISSING if m is None else getattr(m, attribute)] += 1
  return counts

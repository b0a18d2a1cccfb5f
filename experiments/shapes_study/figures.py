"""The shapes-world study's figures: accuracy curves of the scaling and sweep series, and the
stacked cycle chains. matplotlib is imported only when a figure is drawn."""
from __future__ import annotations

import numpy as np

from experiments.shapes_study import tables


def _pyplot():
  """matplotlib's pyplot on the file-only Agg backend, imported when a figure is drawn."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  return pyplot


def _percent(results, name: str, metric: str) -> list[float]:
  """The cell's `metric` in percent, one value per seed that has it."""
  return [100 * r['metrics'][metric] for r in results.get(name, []) if metric in r['metrics']]


def scaling_plot(cells, results, path: str) -> str:
  """OUT/scaling.png: caption and T2I accuracy against the extra scenes."""
  return accuracy_plot(tables.scaling_series, cells, results, path,
                       'extra training scenes beyond the paired set', log_x=False)


def sweep_plot(cells, results, path: str) -> str:
  """OUT/paired_sweep.png: rows 3 and 14 against the number of paired scenes."""
  return accuracy_plot(tables.sweep_series, cells, results, path,
                       'paired training scenes (row 14: every other training scene unpaired)',
                       log_x=True)


def summary_plot(cells, results, path: str, reference: str = 'row3',
                 bound: str = 'all_paired') -> str:
  """OUT/summary.png, the lead plot: per cell, exact captions and exact drawings as bars (mean
  over seeds) with every seed as a dot; dashed lines at the reference's and the bound's means."""
  plt = _pyplot()
  shown = [c for c in cells if results.get(c.name)]
  figure, axes = plt.subplots(1, len(tables.LEAD_METRICS), figsize=(13, 4.8), sharey=True)
  for ax, (metric, label) in zip(np.atleast_1d(axes), tables.LEAD_METRICS):
    for x, cell in enumerate(shown):
      values = _percent(results, cell.name, metric)
      if not values:
        continue
      color = {reference: 'grey', bound: 'C2'}.get(cell.name, 'C0')
      ax.bar(x, np.mean(values), color=color, alpha=0.45)
      ax.plot(np.full(len(values), x), values, 'o', color=color, markersize=4)
    for name, color in ((reference, 'grey'), (bound, 'C2')):
      values = _percent(results, name, metric)
      if values:
        ax.axhline(np.mean(values), color=color, linestyle='--', linewidth=1,
                   label=f'{name} mean')
    ax.set_xticks(range(len(shown)), [c.name for c in shown], rotation=35, ha='right')
    ax.set_ylim(0, 100)
    ax.set_title(f'{label} of the test scenes (bars: mean; dots: seeds)')
    ax.grid(axis='y', alpha=0.3)
  np.atleast_1d(axes)[0].legend(fontsize=8, loc='upper left')
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)
  return path


def accuracy_plot(series_fn, cells, results, path: str, xlabel: str, log_x: bool) -> str:
  """Caption and T2I accuracy of `series_fn`'s curves: exact scenes (top) and graded figures
  (below: teacher-forced caption tokens, T2I and caption colour, CIDEr), which still move at
  budgets where exact scenes are rare; seen scenes solid, held-out dotted."""
  plt = _pyplot()
  panels = (('i2t_exact', 'captioning: exact-scene accuracy %'),
            ('t2i_exact', 'T2I: exact-scene accuracy %'),
            ('i2t_tf_valid_accuracy', 'captioning: teacher-forced valid-token accuracy %'),
            ('t2i_color', 'T2I: objects of the right colour %'),
            ('i2t_color', 'captioning: objects of the right colour %'),
            ('i2t_cider', 'captioning: CIDEr-D x100'))
  figure, axes = plt.subplots(3, 2, figsize=(11, 12.6))
  axes = axes.ravel()
  for ax, (metric, title) in zip(axes, panels):
    for split, style in (('shapes', '-'), ('shapes_heldout_test', ':')):
      series = series_fn(cells, results, f'{split}/{metric}')
      for (name, points), color in zip(series.items(), ('C0', 'C1', 'C2', 'C3')):
        if points:
          x, mean, std = (np.asarray(v) for v in zip(*points))
          label = f'{name}, {"seen" if split == "shapes" else "held-out"} scenes'
          ax.errorbar(x, mean, yerr=std, fmt='o' + style, color=color, label=label, capsize=3)
    if log_x:
      ax.set_xscale('log')
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  figure.tight_layout()
  figure.savefig(path, dpi=110)
  plt.close(figure)
  return path


def compose_figures(figures, target: str) -> str:
  """Stacks [(title, png path)] into one PNG at the images' own resolution."""
  plt = _pyplot()
  images = [plt.imread(path) for _, path in figures]
  # Inches at 100 dpi (pixels 1:1), at least 6 so the titles fit above narrow chains.
  width = max(6.0, max(image.shape[1] for image in images) / 100)
  heights = [image.shape[0] / 100 + 0.4 for image in images]  # + the title
  figure, axes = plt.subplots(len(figures), 1, figsize=(width, sum(heights)), squeeze=False,
                              gridspec_kw=dict(height_ratios=heights))
  for ax, (title, _), image in zip(axes[:, 0], figures, images):
    ax.imshow(image)
    ax.set_title(title, fontsize=9)
    ax.axis('off')
  figure.tight_layout()
  figure.savefig(target, dpi=100)
  plt.close(figure)
  return target


def cost_plot(cells, results, costs: dict, path: str, limit: float = 1.5) -> str:
  """OUT/cost.png: exact captions and drawings (mean ± std over seeds) of each cell of `costs`
  against its ITIT-B FLOP ratio over row 3; a dashed line at `limit` (the cost target)."""
  plt = _pyplot()
  shown = [c for c in cells if results.get(c.name) and c.name in costs]
  figure, axes = plt.subplots(1, len(tables.LEAD_METRICS), figsize=(12, 4.8), sharey=True)
  for ax, (metric, label) in zip(np.atleast_1d(axes), tables.LEAD_METRICS):
    for index, cell in enumerate(shown):
      values = _percent(results, cell.name, metric)
      if not values:
        continue
      mean, std = tables.mean_std(values)
      x = costs[cell.name]['itit_b']
      ax.errorbar([x], [mean], yerr=[std], fmt='o', color=f'C{index % 10}', capsize=3,
                  label=cell.name)
      ax.annotate(cell.name, (x, mean), textcoords='offset points', xytext=(5, 4), fontsize=7)
    ax.axvline(limit, color='grey', linestyle='--', linewidth=1)
    ax.set_xlabel('row-14 step FLOPs / row-3 step FLOPs at ITIT-B (equal total batch)')
    ax.set_ylim(0, 100)
    ax.set_title(f'{label} of the test scenes')
    ax.grid(alpha=0.3)
  np.atleast_1d(axes)[0].legend(fontsize=7, loc='lower left')
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)
  return path

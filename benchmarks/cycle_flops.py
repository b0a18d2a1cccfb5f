r"""Analytic FLOPs of the ITIT step (table 2 row 14) over the paired-only step (row 3) for
synthesis settings from the paper's to cheap ones: fewer parallel-decoding steps, no guidance,
and pseudo pairs reused for several steps (`cycle.reuse`).

Counts come from `itit.losses.registry.train_step_flops` (matmul FLOPs; 3x forward for trained
parts, 1x for synthesis), at equal total batch: row 14 reads --batch examples from each of its
three streams, row 3 reads 3 x --batch pairs (`benchmarks.benchmark.row_config`).

  python -m benchmarks.cycle_flops --config=configs/vit_b.py --batch=32
  python -m benchmarks.cycle_flops --config=configs/shapes.py:laptop --settings=s24g,s4,s4_r2

A setting is `s<steps>` (unguided), `s<steps>g` (guidance tau = 2, the paper's) and an
optional `_r<reuse>`; 'paper' is s24g, 'fast_cycles' the preset of that name
(configs/base.py's FAST_CYCLES, the cheap-cycles study's recommendation).
"""
from __future__ import annotations

import argparse
import re

from benchmarks.benchmark import load_config
from benchmarks.benchmark import row_config
from configs import base
from itit.losses import registry

DEFAULT_SETTINGS = ('paper,s24,s8g,s8,s4,s2,s24g_r2,s24g_r4,s24g_r8,s8_r2,s8_r4,s4_r2,s4_r4')
PAPER_GUIDANCE = 2.0


def parse_setting(name: str) -> dict:
  """'s8g_r4' -> {'synthesis_steps': 8, 'guidance_scale': 2.0, 'reuse': 4}; 'paper' is s24g,
  'fast_cycles' the preset's FAST_CYCLES."""
  if name == 'fast_cycles':
    return dict(base.FAST_CYCLES)
  match = re.fullmatch(r's(\d+)(g?)(?:_r(\d+))?', 's24g' if name == 'paper' else name)
  if not match or int(match.group(1)) < 1 or (match.group(3) and int(match.group(3)) < 1):
    raise ValueError(f'setting {name!r}: use s<steps>[g][_r<reuse>] (steps, reuse >= 1; g: '
                     "guidance 2), 'paper' or 'fast_cycles'")
  return dict(synthesis_steps=int(match.group(1)),
              guidance_scale=PAPER_GUIDANCE if match.group(2) else 0.0,
              reuse=int(match.group(3) or 1))


def step_flops(config, batch: int, setting: str | dict) -> dict:
  """{'row14': FLOPs of a row-14 step, 'row3': of the row-3 step, 'ratio', 'synthesis_share'}
  (all devices together) with the synthesis `setting` (a name, or config.cycle fields)."""
  itit = row_config(config, 14, batch)
  itit.cycle.update(parse_setting(setting) if isinstance(setting, str) else setting)
  paired = row_config(config, 3, batch)
  cycle = registry.train_step_flops(itit, registry.enabled_losses(itit))
  base = registry.train_step_flops(paired, registry.enabled_losses(paired))['total']
  return dict(row14=cycle['total'], row3=base, ratio=cycle['total'] / base,
              synthesis_share=cycle['synthesis'] / cycle['total'])


def table(config, batch: int, settings) -> str:
  lines = ['| setting | synthesis steps | guidance | reuse | row 14 TFLOP / step | '
           'row 14 / row 3 | synthesis share |', '|---|---:|---:|---:|---:|---:|---:|']
  for setting in settings:
    s, figures = parse_setting(setting), step_flops(config, batch, setting)
    lines.append(f'| {setting} | {s["synthesis_steps"]} | {s["guidance_scale"]:g} | '
                 f'{s["reuse"]} | {figures["row14"] / 1e12:.3g} | {figures["ratio"]:.2f}x | '
                 f'{100 * figures["synthesis_share"]:.0f}% |')
  row3 = step_flops(config, batch, settings[0])['row3']
  return '\n'.join(lines) + f'\n\nrow 3 (pairs only, {3 * batch} a step): {row3 / 1e12:.3g} TFLOP'


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/vit_b.py')
  parser.add_argument('--batch', type=int, default=32, help='examples per stream of row 14')
  parser.add_argument('--settings', default=DEFAULT_SETTINGS)
  args = parser.parse_args(argv)
  if args.batch < 1:
    parser.error(f'--batch={args.batch}: must be >= 1')
  settings = [s for s in args.settings.split(',') if s]
  try:
    for setting in settings:
      parse_setting(setting)
  except ValueError as e:
    parser.error(str(e))
  try:
    config = load_config(args.config, [])
  except (ImportError, ValueError, TypeError) as e:  # a missing file, an unknown preset
    parser.error(f'--config={args.config}: {e}')
  print(f'{args.config}, {args.batch} examples per stream (row 3: {3 * args.batch} pairs)\n')
  print(table(config, args.batch, settings))
  return 0


if __name__ == '__main__':
  raise SystemExit(main())

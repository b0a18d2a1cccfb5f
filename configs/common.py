"""What every config file shares: the `--config=FILE:ARG` argument, parsed one way.

ARG is a comma-separated list of presets, e.g. `--config=configs/vit_b.py:row3` or
`--config=configs/shapes.py:row14,quick`. Every config file passes its `arg` through `presets`
(or, for a file whose argument is a value such as a path, checks the value itself), so an
unknown or ignored argument is refused with the list of valid ones instead of silently training
something else. tests/test_configs.py runs every file in configs/ through this contract.
"""
from __future__ import annotations

from typing import Sequence


def split_arg(arg: str | None) -> list[str]:
  """`'row14,quick'` -> `['row14', 'quick']`; None or '' -> []."""
  return [name.strip() for name in (arg or '').split(',') if name.strip()]


def presets(arg: str | None, config_file: str, valid: Sequence[str],
            exclusive: Sequence[Sequence[str]] = ()) -> list[str]:
  """The presets of `arg`, each checked against `valid`.

  Args:
    arg: what follows the colon in `--config=FILE:ARG` (None: nothing).
    config_file: the file's path as users write it, for the message.
    valid: every preset the file documents.
    exclusive: groups of presets of which at most one may be given (e.g. the table-2 rows).
  Raises:
    ValueError: one line naming the bad preset and listing the valid ones.
  """
  names = split_arg(arg)
  for name in names:
    if name not in valid:
      hint = f'valid: {", ".join(valid)}' if valid else 'it takes no argument'
      raise ValueError(f'{config_file}: unknown preset {name!r} ({hint})')
  for group in exclusive:
    given = [name for name in names if name in group]
    if len(given) > 1:
      raise ValueError(f'{config_file}: presets {", ".join(given)} exclude each other; give one')
  return names

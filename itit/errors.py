"""Errors a user fixes (a config, a path, the data), and the command-line handling of them.

A `UserError` carries one line that names the file or field and the fix; the CLIs print it as
`error: ...` and exit with status 1, without a traceback. Anything else (a bug) keeps its
traceback. Each class also subclasses the builtin a caller would expect (ValueError,
FileNotFoundError, FloatingPointError), so `except ValueError` still catches them.
"""
from __future__ import annotations

import re
import sys
from typing import Callable, Sequence

from absl import flags
from absl import logging
from ml_collections import config_flags


class UserError(ValueError):
  """A problem in the config, the data or a path: its message is the whole report."""


class MissingFileError(UserError, FileNotFoundError):
  """A file or folder the config points at does not exist."""


class CorruptFileError(UserError):
  """A file exists but its bytes are damaged (a checksum or length does not match)."""


class TrainingDiverged(UserError, FloatingPointError):
  """A non-finite loss or gradient under nan_policy='halt'."""


# What the CLIs report in one line. SystemExit passes through on its own.
ONE_LINE_ERRORS = (UserError,)


def exit_on_user_error(fn: Callable[[], object], also: tuple[type, ...] = ()) -> object:
  """Runs `fn()`; a `UserError` (or one of `also`) becomes `error: <message>` and status 1."""
  try:
    return fn()
  except ONE_LINE_ERRORS + tuple(also) as e:
    message = ' '.join(str(e).split())  # one line, whatever the message held
    print(f'error: {message}', file=sys.stderr, flush=True)
    raise SystemExit(1) from None


def _config_override(argv: Sequence[str], field: str) -> str:
  """The `--config.a.b=value` argument that names `field`, for the message."""
  for arg in argv:
    name = arg.split('=', 1)[0].lstrip('-')
    if name.startswith('config.') and field in name.split('.')[1:]:
      return arg
  return f'--config...{field}'


def config_flag(help_text: str) -> flags.FlagHolder:
  """The `--config=FILE` flag (a locked ConfigDict) of a CLI module.

  The CLI modules (itit.train, itit.prepare) each define it at import; when one process imports
  several of them (the test suite does) the first definition is shared instead of raising
  DuplicateFlagError.
  """
  if 'config' in flags.FLAGS:
    return flags.FlagHolder(flags.FLAGS, flags.FLAGS['config'])
  return config_flags.DEFINE_config_file('config', None, help_text, lock_config=True)


def string_flag(name: str, help_text: str) -> flags.FlagHolder:
  """A string flag (default None) shared by the CLI modules that define it, like `config_flag`."""
  if name in flags.FLAGS:
    return flags.FlagHolder(flags.FLAGS, flags.FLAGS[name])
  return flags.DEFINE_string(name, None, help_text)


def quiet_library_logs() -> None:
  """absl logging at WARNING unless --verbosity is given: Orbax logs every save and restore at
  INFO, dozens of lines that would bury the CLIs' own output."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing, with a one-line error for a `--config.x=v` naming no config field.

  ml_collections raises AttributeError / KeyError from inside flag parsing for an unknown field,
  which absl would print as a traceback. Pass as `app.run(main, flags_parser=parse_flags)`.
  """
  try:
    return flags.FLAGS(list(argv))
  except (AttributeError, KeyError) as e:
    text = str(e.args[0]) if e.args else str(e)
    lines = [line.strip(' \'"\\') for line in text.replace('\\n', '\n').split('\n')]
    field = re.sub(r'^[\'"]+|[\'"]+$', '', lines[0])
    hint = ' '.join(line for line in lines[1:] if line)
    print(f'error: {_config_override(argv, field)}: the config has no field {field!r}'
          f'{"; " + hint if hint else ""} (the fields are those of the --config file)',
          file=sys.stderr, flush=True)
    raise SystemExit(2) from None
  except flags.Error as e:
    print(f'error: {" ".join(str(e).split())}', file=sys.stderr, flush=True)
    raise SystemExit(2) from None

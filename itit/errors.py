"""Errors a user fixes (a config, a path, the data), and the command-line handling of them.

A `UserError` carries one line that names the file or field and the fix. Every command line
(`python -m itit.X`, `python -m tools.X`, `python -m experiments.shapes_study`) runs its `main`
inside one error boundary, `run_command` (absl commands through `run_app`): an expected failure
prints ONE line `error: <cause> (<what to do>)` to stderr and exits non-zero (1; 2 for a usage or
flag error), without a traceback. Expected failures are a `UserError`, a path the user gave that
does not exist or is of the wrong kind (`PATH_ERRORS`), a usage error, a `--config` file that
does not exist or whose preset is refused. Anything else is a bug and keeps its traceback; set
ITIT_TRACEBACK=1 to get the traceback of an expected failure too. A failed command removes the
folders it created that are still empty (a workdir or an output folder made before the failure).

Each class also subclasses the builtin a caller would expect (ValueError, FileNotFoundError,
FloatingPointError), so `except ValueError` still catches them.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, Callable, Iterable, Sequence

from absl import app
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


# The environment variable that turns the one-line reports back into tracebacks (any value but
# '' or '0'), for debugging an expected failure.
TRACEBACK_ENV = 'ITIT_TRACEBACK'

# Builtin failures that come from a path the user gave (a file that is not there, a folder given
# for a file or the reverse, no permission): one line `<path>: <reason> (check the path)`.
PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)

# What the CLIs report in one line. SystemExit passes through on its own.
ONE_LINE_ERRORS = (UserError, app.UsageError) + PATH_ERRORS


def tracebacks_wanted() -> bool:
  """Whether ITIT_TRACEBACK asks for the traceback of expected failures too."""
  return os.environ.get(TRACEBACK_ENV, '').strip() not in ('', '0')


def one_line(error: BaseException) -> str:
  """The report of an expected failure, as one line (without the `error: ` prefix)."""
  if isinstance(error, OSError) and not isinstance(error, UserError) and error.filename:
    message = f'{error.filename}: {error.strerror or error} (check the path)'
  elif isinstance(error, app.UsageError):
    message = f'{error} (--help lists the flags)'
  else:
    message = str(error)
  return ' '.join(message.split())


def report(message: str, code: int = 1):
  """Prints `error: <message>` (one line) to stderr and exits with `code`."""
  print(f'error: {" ".join(str(message).split())}', file=sys.stderr, flush=True)
  raise SystemExit(code)


def _missing_folders(paths: Iterable[str | None]) -> list[str]:
  """For each path, its topmost ancestor (or itself) that does not exist yet: what a command
  that creates the path creates."""
  missing = []
  for path in paths:
    if not path:
      continue
    path = os.path.abspath(path)
    top = None
    while not os.path.lexists(path):
      top, parent = path, os.path.dirname(path)
      if parent == path:
        break
      path = parent
    if top:
      missing.append(top)
  return missing


def _remove_empty_folders(top: str) -> None:
  """Removes `top` and the folders below it that hold no file (never a file or a link)."""
  if not os.path.isdir(top) or os.path.islink(top):
    return
  for directory, _, _ in os.walk(top, topdown=False):
    try:
      os.rmdir(directory)
    except OSError:
      pass  # holds a file (or a link): keep it


def _exit_code(error: BaseException) -> int:
  if isinstance(error, SystemExit):
    code = error.code
    return 0 if code is None else (code if isinstance(code, int) else 1)
  return 1


def run_command(main: Callable[..., Any], *args, outputs: Callable[[], Iterable[str | None]] |
                None = None, also: tuple[type, ...] = ()) -> Any:
  """Runs `main(*args)` inside the command-line error boundary (the module docstring).

  Args:
    main: the command's main function; its return value is returned.
    outputs: returns the folders the command writes (its workdir, out_dir); those that did not
      exist before are removed again if the command fails and leaves them without a file.
    also: further exception classes reported in one line (e.g. a data source's error).
  """
  created = []
  try:
    created = _missing_folders(outputs() if outputs else ())
    return main(*args)
  except BaseException as e:  # pylint: disable=broad-except
    if _exit_code(e):
      for top in created:
        _remove_empty_folders(top)
    if (isinstance(e, SystemExit) or tracebacks_wanted()
        or not isinstance(e, ONE_LINE_ERRORS + tuple(also))):
      raise
    print(f'error: {one_line(e)}', file=sys.stderr, flush=True)
    raise SystemExit(2 if isinstance(e, app.UsageError) else 1) from None


def run_app(main: Callable[[list[str]], Any], *, outputs=None, also: tuple[type, ...] = ()):
  """`app.run(main)` of an absl command, with `parse_flags` and inside `run_command`."""
  app.run(lambda argv: run_command(main, argv, outputs=outputs, also=also),
          flags_parser=parse_flags)


class ArgumentParser(argparse.ArgumentParser):
  """argparse's parser whose usage errors are one `error: ...` line (status 2), as the absl
  commands' flag errors are."""

  def error(self, message):
    report(f'{message} (--help lists the arguments)', 2)


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


def _config_file_arg(argv: Sequence[str]) -> tuple[str, str] | None:
  """(the `--config=FILE[:ARG]` argument, FILE) when the command takes a config FILE."""
  if 'config' not in flags.FLAGS or (
      type(flags.FLAGS['config'].parser).__name__ != 'ConfigFileFlagParser'):
    return None
  for i, arg in enumerate(argv[1:], start=1):
    if arg.startswith('--config='):
      value = arg.split('=', 1)[1]
    elif arg == '--config' and i + 1 < len(argv):
      value, arg = argv[i + 1], f'--config={argv[i + 1]}'
    else:
      continue
    return arg, value.split(':', 1)[0]
  return None


def _config_file_cause(error: BaseException) -> BaseException | None:
  """The exception a config file's get_config raised, under ml_collections' re-raised copy of
  it (whose message is the traceback text) and absl's IllegalFlagValueError."""
  while error is not None:
    if str(error).startswith('Error whilst parsing config file'):
      return error.__cause__ or error.__context__
    error = error.__cause__ or error.__context__
  return None


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing, with one-line errors for a `--config=FILE` that does not exist, a
  preset the config file refuses, and a `--config.x=v` naming no config field.

  ml_collections defers a missing config file's error to the first use of the config, wraps a
  config file's ValueError in the traceback text, and raises AttributeError / KeyError from
  inside flag parsing for an unknown field; absl would print each as a traceback. Pass as
  `app.run(main, flags_parser=parse_flags)` (`run_app` does).
  """
  config_arg = _config_file_arg(argv)
  if config_arg and not os.path.isfile(config_arg[1]) and not tracebacks_wanted():
    what = 'is a folder, not a' if os.path.isdir(config_arg[1]) else 'no such'
    report(f'{config_arg[0]}: {what} config file (give a file of configs/, e.g. '
           '--config=configs/tiny.py)', 2)
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
    cause = _config_file_cause(e)
    if cause is not None:  # raised by the config file's get_config
      if not isinstance(cause, ValueError) or tracebacks_wanted():
        raise  # a bug in the config file
      report(str(cause), 2)
    print(f'error: {" ".join(str(e).split())}', file=sys.stderr, flush=True)
    raise SystemExit(2) from None

"""Imports a file of scripts/ (not a package) as a module, for the tests of the scripts."""
import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(name: str, module_name: str | None = None):
  """scripts/<name>.py as a fresh module (its `if __name__ == '__main__'` block not run)."""
  spec = importlib.util.spec_from_file_location(
      module_name or name, os.path.join(REPO, 'scripts', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module

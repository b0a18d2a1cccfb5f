"""The library's layout rules: no import cycles, no library module imports a command line, the
configs or anything outside the library, and no library file grows past ~400 lines."""
import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The command-line modules (`python -m itit.<name>`): thin layers over the library.
COMMANDS = ('itit.train', 'itit.train_tokenizer', 'itit.prepare', 'itit.sample', 'itit.evaluate',
            'itit.compile_check')
MAX_LINES = 420


def _library_modules() -> dict[str, str]:
  """Dotted module name -> path, for every file of itit/."""
  modules = {}
  for root, _, files in os.walk(os.path.join(REPO, 'itit')):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(root, name)
        dotted = os.path.relpath(path, REPO)[:-3].replace(os.sep, '.')
        modules[dotted.removesuffix('.__init__')] = path
  return modules


def _imports(path: str) -> set[str]:
  """Every module a file imports, at any depth (function-level imports included): for
  `from a.b import c`, 'a.b.c' when that is a module, else 'a.b'."""
  found = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      found.add(node.module)
      found.update(f'{node.module}.{alias.name}' for alias in node.names)
  return found


MODULES = _library_modules()
GRAPH = {name: {m for m in _imports(path) if m in MODULES and m != name}
         for name, path in MODULES.items()}


def test_the_import_graph_has_no_cycle():
  state, cycles = {}, []

  def visit(module, stack):
    state[module] = 'open'
    stack.append(module)
    for imported in sorted(GRAPH[module]):
      # A package's __init__ is what `from itit import evaluation` names; its own submodules
      # importing their package is not a cycle of files.
      if module.startswith(imported + '.'):
        continue
      if state.get(imported) == 'open':
        cycles.append(stack[stack.index(imported):] + [imported])
      elif imported not in state:
        visit(imported, stack)
    stack.pop()
    state[module] = 'done'

  for module in sorted(GRAPH):
    if module not in state:
      visit(module, [])
  assert not cycles, cycles


def test_no_library_module_imports_a_command_line_or_code_outside_the_library():
  problems = []
  for name, path in sorted(MODULES.items()):
    for imported in sorted(_imports(path)):
      top = imported.split('.')[0]
      if top in ('configs', 'experiments', 'tools', 'benchmarks', 'tests'):
        problems.append(f'{name} imports {imported}')
      if imported in COMMANDS and imported != name:
        problems.append(f'{name} imports the command {imported}')
  assert not problems, problems


def test_the_data_layer_and_the_models_do_not_know_each_other_upwards():
  """Models import nothing of the data, training or evaluation layers."""
  problems = [f'{name} imports {imported}' for name, imports in sorted(GRAPH.items())
              if name.startswith('itit.models') for imported in sorted(imports)
              if imported.startswith(('itit.data', 'itit.trainer', 'itit.evaluation',
                                      'itit.losses', 'itit.decoding'))]
  assert not problems, problems


@pytest.mark.parametrize('name', sorted(MODULES))
def test_library_files_stay_short(name):
  with open(MODULES[name]) as f:
    lines = sum(1 for _ in f)
  assert lines <= MAX_LINES, f'{MODULES[name]}: {lines} lines; split it by topic'


def test_the_top_level_holds_commands_and_packages_only():
  top_level = sorted(name for name in MODULES if name.count('.') == 1
                     and os.path.isfile(os.path.join(REPO, *name.split('.')) + '.py'))
  assert set(top_level) == set(COMMANDS) | {'itit.errors'}, top_level

"""`python -m experiments.shapes_study [flags]`: runs the study (cli.py says what it does)."""
import sys

from experiments.shapes_study import cli
from itit import errors

if __name__ == '__main__':
  sys.exit(errors.run_command(cli.main))

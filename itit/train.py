r"""Trains ITIT: `python -m itit.train --config=configs/shapes.py --workdir=DIR`.

Re-running the same command in the same workdir resumes from the last checkpoint, with the
optimizer state, RNG and input iterators exactly where they were. Resume order: the workdir's
last checkpoint, else the parameters of `config.init_from` (another run's checkpoint: 'WORKDIR'
for its latest step or 'WORKDIR:STEP'; fresh optimizer state, step 0), else from scratch.

Outputs in the workdir: checkpoints/, metrics.jsonl, tensorboard/, eval.json, config.json. The
training library is `itit.trainer` (the loop: `itit.trainer.loop.train_and_evaluate`).
"""
from absl import app

from itit import errors
from itit.trainer import distributed
from itit.trainer import loop

_CONFIG = errors.config_flag('Training config file.')
_WORKDIR = errors.string_flag('workdir', 'Where checkpoints, metrics and samples go.')


def main(argv):
  errors.quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _WORKDIR.value is None or _CONFIG.value is None:
    raise app.UsageError('--config and --workdir are required')
  distributed.initialize()
  loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  errors.run_app(main, outputs=lambda: [_WORKDIR.value])

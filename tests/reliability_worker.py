"""`python -m itit.train` with a fault injected at a chosen point (for tests/test_reliability.py).

  python tests/reliability_worker.py --config=configs/tiny.py --workdir=DIR ... (itit.train flags)

Faults, from the environment:
  ITIT_SIGTERM_AT_BATCH=k   the process sends itself SIGTERM while reading batch k (1-based),
                            as a preemption notice arrives mid-step
  ITIT_KILL_AFTER_SAVE=k    SIGKILL right after the checkpoint save of step k was started, while
                            Orbax still writes it in the background (prints whether its temporary
                            folder was there)
"""
import functools
import glob
import os
import signal

from itit import errors
from itit import train
from itit.trainer import checkpointing
from itit.trainer import train_data


def _sigterm_at_batch(batch_number: int) -> None:
  next_batch = train_data.TrainData.next_batch
  calls = [0]

  @functools.wraps(next_batch)
  def wrapped(self):
    calls[0] += 1
    if calls[0] == batch_number:
      os.kill(os.getpid(), signal.SIGTERM)
    return next_batch(self)

  train_data.TrainData.next_batch = wrapped


def _kill_after_save(step_to_kill: int) -> None:
  save = checkpointing.Checkpointer.save

  @functools.wraps(save)
  def wrapped(self, step, *args, **kwargs):
    result = save(self, step, *args, **kwargs)
    if step == step_to_kill:
      partial = glob.glob(os.path.join(self.directory, f'{step}.orbax-checkpoint-tmp*'))
      print(f'killing during the save of step {step}; temporary folder present: {bool(partial)}',
            flush=True)
      os.kill(os.getpid(), signal.SIGKILL)
    return result

  checkpointing.Checkpointer.save = wrapped


if __name__ == '__main__':
  if os.environ.get('ITIT_SIGTERM_AT_BATCH'):
    _sigterm_at_batch(int(os.environ['ITIT_SIGTERM_AT_BATCH']))
  if os.environ.get('ITIT_KILL_AFTER_SAVE'):
    _kill_after_save(int(os.environ['ITIT_KILL_AFTER_SAVE']))
  errors.run_app(train.main)

"""A run stopped as a command: SIGTERM checkpoints and exits 75, kill -9 keeps the last periodic
checkpoint, and the same command resumes each to the weights of an uninterrupted run.

In-process: Ctrl-C (test_run_record.py); two workers and a signal (test_multi_worker.py).
"""
import os
import random
import re
import signal
import subprocess
import sys

from absl.testing import flagsaver
import pytest

from official_resnet import main
from official_resnet import run_lock
from official_resnet import run_state
from official_resnet import trainer as trainer_lib
import cli_fixtures
import trainer_fixtures as fixtures

STEPS, CHECKPOINT_STEPS = 16, 4


def _flags(data, model_dir):
  return cli_fixtures.colour_flags(data, str(model_dir), train_steps=STEPS,
                                   checkpoint_steps=CHECKPOINT_STEPS, steps_per_loop=1,
                                   log_steps=1, mode="train", num_classes=2, batch_size=2)


@pytest.mark.slow
def test_sigterm_then_kill_9_then_the_same_command_resumes_to_the_same_weights(tmp_path):
  # Two images, a global batch of two: whichever order the pipeline reads them in, a step
  # changes only in the last bit (where a kernel puts each image), so runs can match closely.
  data = fixtures.write_colour_folder(str(tmp_path / "data"), 1, 1, num_classes=2)
  with flagsaver.flagsaver():
    cli_fixtures.parse(*_flags(data, tmp_path / "uninterrupted"))
    assert main.run()["step"] == STEPS

  model_dir = tmp_path / "interrupted"
  command = [sys.executable, "-m", "official_resnet.main", *_flags(data, model_dir)]
  # One step drawn once, before the first periodic checkpoint: which step does not matter to
  # the code, and each draw costs two processes.
  at_step = random.Random(0).randrange(2, CHECKPOINT_STEPS)
  first = subprocess.Popen(command, cwd=cli_fixtures.REPO, env=cli_fixtures.subprocess_env(),
                           stderr=subprocess.PIPE, text=True)
  log = cli_fixtures.signal_at_step(first, at_step)
  assert first.returncode == trainer_lib.EXIT_PREEMPTED == 75, log[-3000:]
  stopped = re.search(rf"Stopped by SIGTERM at step (\d+) of {STEPS} with a checkpoint", log)
  assert stopped, log[-3000:]
  stopped_at = int(stopped.group(1))
  assert at_step <= stopped_at < STEPS
  # The periodic checkpoints before the signal, then the signal's.
  assert cli_fixtures.checkpoint_steps(model_dir) == [
      *range(CHECKPOINT_STEPS, stopped_at, CHECKPOINT_STEPS), stopped_at]
  assert not os.path.exists(model_dir / run_state.STATS_FILE)
  assert not os.path.exists(run_lock.lock_path(str(model_dir)))
  assert "Traceback" not in log

  # The same command resumes; kill -9 once it has logged the step after its next periodic
  # checkpoint (saved after that step's log line): no handler, no checkpoint of its own.
  next_checkpoint = (stopped_at // CHECKPOINT_STEPS + 1) * CHECKPOINT_STEPS
  second = subprocess.Popen(command, cwd=cli_fixtures.REPO, env=cli_fixtures.subprocess_env(),
                            stderr=subprocess.PIPE, text=True)
  log = cli_fixtures.signal_at_step(second, next_checkpoint + 1, signum=signal.SIGKILL)
  assert second.returncode == -signal.SIGKILL, log[-3000:]
  assert f"Resumed from {model_dir}/ckpt-{stopped_at} at step {stopped_at}" in log
  killed_at = cli_fixtures.checkpoint_steps(model_dir)[-1]
  assert next_checkpoint <= killed_at < STEPS
  assert not os.path.exists(model_dir / run_state.STATS_FILE)

  with flagsaver.flagsaver():
    cli_fixtures.parse(*_flags(data, model_dir))
    stats = main.run()
  assert (stats["start_step"], stats["step"]) == (killed_at, STEPS)
  # Weights, optimizer slots (Keras 3 keeps SGD's momentum buffers in the optimizer's
  # _variables) and counters all end where the uninterrupted run's did.
  compared = cli_fixtures.assert_same_variables(model_dir, tmp_path / "uninterrupted", atol=1e-6)
  assert any(key.startswith("optimizer/_variables/") for key in compared)

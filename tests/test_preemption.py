"""A run stopped by SIGTERM or kill -9 resumes, by the same command, to the weights of an
uninterrupted run (with --seed).

SIGTERM in-process (this process signals itself at a logged step: the command's handler,
checkpoint and exit status), mid-epoch, on one replica and on two; kill -9 as a command, the
one thing that needs a process of its own, resumed at an epoch boundary. Elsewhere: Ctrl-C
keeps every evaluation (test_run_record.py); a signal to one of two workers, and exit status
75 as a process's (test_multi_worker.py).
"""
import logging
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

# 16 training images, a global batch of 8: two steps an epoch, a checkpoint at each epoch's end.
STEPS, CHECKPOINT_STEPS = 8, 2


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
  return fixtures.write_colour_folder(str(tmp_path_factory.mktemp("colours")), 4, 1)


def _flags(data, model_dir, strategy="off"):
  return cli_fixtures.colour_flags(data, str(model_dir), train_steps=STEPS,
                                   checkpoint_steps=CHECKPOINT_STEPS, steps_per_loop=1,
                                   log_steps=1, mode="train", distribution_strategy=strategy)


def _run(caplog, command):
  """The command's stats, in-process; its INFO logs in caplog."""
  caplog.clear()
  with flagsaver.flagsaver():
    cli_fixtures.parse(*command)
    caplog.set_level(logging.INFO, logger="absl")
    return main.run()


@pytest.fixture(scope="module")
def uninterrupted(colours, tmp_path_factory):
  """strategy -> the model_dir of an uninterrupted run under it (each run once)."""
  model_dirs = {}

  def model_dir(strategy):
    if strategy not in model_dirs:
      model_dirs[strategy] = tmp_path_factory.mktemp(f"uninterrupted_{strategy}")
      with flagsaver.flagsaver():
        cli_fixtures.parse(*_flags(colours, model_dirs[strategy], strategy))
        assert main.run()["step"] == STEPS
    return model_dirs[strategy]

  return model_dir


def _assert_same_state(model_dir, reference_dir):
  # Weights, optimizer slots (Keras 3 keeps SGD's momentum buffers in the optimizer's
  # _variables) and counters all end where the uninterrupted run's did.
  compared = cli_fixtures.assert_same_variables(model_dir, reference_dir, atol=1e-6)
  assert any(key.startswith("optimizer/_variables/") for key in compared)


@pytest.mark.slow  # three runs of VGG16, on two replicas for one of them
@pytest.mark.parametrize("strategy", ["off", "mirrored"])
def test_sigterm_saves_a_checkpoint_exits_75_and_the_same_command_resumes_mid_epoch(
    strategy, colours, uninterrupted, tmp_path, caplog):
  model_dir = tmp_path / "run"
  command = _flags(colours, model_dir, strategy)
  handler = signal.getsignal(signal.SIGTERM)
  with flagsaver.flagsaver(), cli_fixtures.signal_self_at_step(3):
    cli_fixtures.parse(*command)
    caplog.set_level(logging.INFO, logger="absl")
    with pytest.raises(SystemExit) as exit_info:
      main.main(["official_resnet.main"])
  assert exit_info.value.code == trainer_lib.EXIT_PREEMPTED == 75
  assert "Received SIGTERM: stopping after the current steps, with a checkpoint." in caplog.text
  assert (f"Stopped by SIGTERM at step 3 of {STEPS} with a checkpoint of that step. Run the "
          "same command again to resume (exit status 75: preempted).") in caplog.text
  # The periodic checkpoint before the signal, then the signal's; the process's own handler
  # is back, the lock released, no stats of an unfinished run.
  assert cli_fixtures.checkpoint_steps(model_dir) == [2, 3]
  assert signal.getsignal(signal.SIGTERM) == handler
  assert not (model_dir / run_state.STATS_FILE).exists()
  assert not (model_dir / run_lock.LOCK_FILE).exists()

  stats = _run(caplog, command)
  assert (stats["start_step"], stats["step"]) == (3, STEPS)
  # Step 3 is the second step of epoch 1: the stream skips the batch that step trained on.
  assert "Skipping 1 batches to resume epoch 1 where it stopped." in caplog.text
  _assert_same_state(model_dir, uninterrupted(strategy))


@pytest.mark.slow
def test_kill_9_then_the_same_command_resumes_from_the_last_checkpoint(colours, uninterrupted,
                                                                       tmp_path, caplog):
  model_dir = tmp_path / "run"
  process = subprocess.Popen([sys.executable, "-m", "official_resnet.main",
                              *_flags(colours, model_dir)], cwd=cli_fixtures.REPO,
                             env=cli_fixtures.subprocess_env(), stderr=subprocess.PIPE, text=True)
  # Killed once it has logged step 3: its last checkpoint is step 2's (saved after that step's
  # log line; a later one if this process read the log late), at an epoch's end; no handler
  # runs, nothing else is saved.
  log = cli_fixtures.signal_at_step(process, 3, signum=signal.SIGKILL)
  assert process.returncode == -signal.SIGKILL, log[-3000:]
  killed_at = cli_fixtures.checkpoint_steps(model_dir)[-1]
  assert killed_at in (2, 4, 6)
  assert cli_fixtures.checkpoint_steps(model_dir) == list(range(2, killed_at + 1, 2))
  assert not (model_dir / run_state.STATS_FILE).exists()
  # The lock of the killed process is left behind; the same command takes it over.
  assert (model_dir / run_lock.LOCK_FILE).exists()

  stats = _run(caplog, _flags(colours, model_dir))
  assert (stats["start_step"], stats["step"]) == (killed_at, STEPS)
  assert "Skipping" not in caplog.text
  _assert_same_state(model_dir, uninterrupted("off"))

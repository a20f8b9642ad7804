"""Faults a run survives: non-finite steps, divergence, a second trainer, user errors.

Signals and kill -9: test_preemption.py (SIGTERM in-process, kill -9 as a command),
test_run_record.py (Ctrl-C, in-process), test_multi_worker.py (two workers)."""
import dataclasses
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap

from absl.testing import flagsaver
import numpy as np
import pytest
import tensorflow as tf

from official_resnet import config as config_lib
from official_resnet import main
from official_resnet import run as run_lib
from official_resnet import run_lock
from official_resnet import run_state
from official_resnet import trainer as trainer_lib
import cli_fixtures
import trainer_fixtures as fixtures

REPO = cli_fixtures.REPO

BATCH = 8
LEARNING_RATE = 0.05  # trainer_fixtures.experiment's constant rate


def _batches(bad_index=None, bad_value=np.nan):
  """Three global batches of random 32 px images; batch `bad_index` gets one bad image first."""
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 1, (3, BATCH, 32, 32, 3)).astype(np.float32)
  labels = rng.integers(0, len(fixtures.COLOURS), (3, BATCH)).astype(np.int32)
  if bad_index is not None:
    images[bad_index, 0] = bad_value
  return images, labels


def _run_steps(model_dir, strategy, nan_policy, batch_indices, bad_index=None, dtype="fp32",
               bad_value=np.nan, architecture="resnet18"):
  """A fresh seeded Trainer's train function over the chosen batches, in one call."""
  experiment = fixtures.experiment(model_dir, architecture=architecture, strategy=strategy,
                                   nan_policy=nan_policy)
  experiment = dataclasses.replace(
      experiment, model=dataclasses.replace(experiment.model,
                                            dtype_policy=config_lib.DTYPE_POLICIES[dtype]))
  trainer = trainer_lib.Trainer(experiment)
  images, labels = _batches(bad_index, bad_value)
  dataset = tf.data.Dataset.from_tensor_slices((images[batch_indices], labels[batch_indices]))
  iterator = iter(trainer.strategy.experimental_distribute_dataset(dataset))
  results = trainer.make_train_function()(iterator, tf.constant(len(batch_indices)))
  return trainer, {name: value.numpy() for name, value in results.items()}


@pytest.mark.parametrize("strategy", ["off", "mirrored"])
def test_skip_policy_leaves_out_a_bad_step_on_every_replica(tmp_path, strategy):
  # Under mirrored only replica 0 sees the NaN image; both must skip, or the all-reduce would
  # hang. The skipped step's NaN batch statistics must not reach BatchNorm's moving averages.
  skipped, results = _run_steps(tmp_path / "a", strategy, "skip", [0, 1, 2], bad_index=1)
  clean, clean_results = _run_steps(tmp_path / "b", strategy, "skip", [0, 2])
  assert len(skipped.moving_statistics()) == 40  # ResNet-18: 20 BatchNorm layers
  assert (results["nonfinite_steps"], results["first_nonfinite_step"]) == (1, 2)
  np.testing.assert_allclose(results["first_nonfinite_learning_rate"], LEARNING_RATE, rtol=1e-7)
  assert (clean_results["nonfinite_steps"], clean_results["first_nonfinite_step"],
          clean_results["first_nonfinite_learning_rate"]) == (0, 0, 0.0)
  assert (skipped.current_step(), int(skipped.optimizer.iterations.numpy())) == (3, 2)
  for name in ("loss_sum", "top_1_correct", "top_k_correct"):
    np.testing.assert_allclose(results[name], clean_results[name], rtol=1e-6, err_msg=name)
  assert results["examples"] == clean_results["examples"] == 2 * BATCH
  for mine, theirs in zip(skipped.model.weights, clean.model.weights):
    np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), err_msg=mine.path)
  for mine, theirs in zip(skipped.optimizer.variables, clean.optimizer.variables):
    np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), err_msg=mine.path)


def test_stop_policy_reports_the_first_bad_step(tmp_path):
  trainer, results = _run_steps(tmp_path, "off", "stop", [0, 1, 2], bad_index=1)
  # Step 2's NaN update poisons the weights, so step 3 is not finite either.
  assert (results["nonfinite_steps"], results["first_nonfinite_step"]) == (2, 2)
  np.testing.assert_allclose(results["first_nonfinite_learning_rate"], LEARNING_RATE, rtol=1e-7)
  assert not np.isfinite(results["loss_sum"])
  assert "the loss or its gradients became NaN" in str(trainer.divergence_error(2, LEARNING_RATE))


def test_fp16_leaves_gradient_overflow_to_loss_scaling(tmp_path):
  # Inf in float16; the float16 model turns it into huge but finite logits, so the loss stays
  # finite while the scaled gradients overflow.
  # VGG16 without BatchNorm: BatchNorm would turn the Inf into a NaN loss.
  trainer, results = _run_steps(tmp_path, "off", "stop", [0, 1, 2], bad_index=1,
                                dtype="fp16", bad_value=1e30, architecture="vgg16")
  assert (results["nonfinite_steps"], results["first_nonfinite_step"],
          results["first_nonfinite_learning_rate"]) == (0, 0, 0.0)
  assert np.isfinite(results["loss_sum"])
  # The loss-scale optimizer skipped step 2 by itself; the run is not stopped.
  assert (trainer.current_step(), int(trainer.optimizer.iterations.numpy())) == (3, 2)
  assert ("dtype=fp16: dynamic loss scaling already skips steps whose scaled gradients "
          "overflow; this was the loss itself") in str(trainer.divergence_error(2, LEARNING_RATE))


# --------------------------------------------------------------------------- divergence


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
  # 8 training images (2 per class), 12 evaluation images (3 per class).
  return fixtures.write_colour_folder(str(tmp_path_factory.mktemp("colours")), 2, 3)


def _constant(rate):
  return config_lib.ScheduleConfig(name="constant", base_learning_rate=rate, base_batch_size=None)


def test_divergence_stops_and_the_last_good_checkpoint_evaluates(tmp_path, colours):
  phases = (config_lib.PhaseConfig("calm", steps=4, schedule=_constant(LEARNING_RATE)),
            config_lib.PhaseConfig("wild", steps=8, schedule=_constant(1e6)))
  experiment = fixtures.experiment(tmp_path, colours, architecture="vgg16", phases=phases,
                                   steps_per_loop=1, checkpoint_steps=2)
  with pytest.raises(trainer_lib.DivergenceError) as error:
    run_lib.train_and_evaluate(experiment)
  message = str(error.value)
  match = re.match(r"Training diverged at step (\d+): the loss or its gradients became NaN or Inf "
                   r"at learning rate 1e\+06\. Stopped without saving or exporting after it; "
                   r"the last good checkpoint is (\S+)\. Lower --base_learning_rate", message)
  assert match, message
  bad_step, latest = int(match.group(1)), match.group(2)
  assert 5 <= bad_step <= 12
  # Every second step saved up to the bad one, nothing after it.
  assert cli_fixtures.checkpoint_steps(tmp_path) == list(range(2, bad_step, 2))
  assert latest == tf.train.latest_checkpoint(str(tmp_path))
  assert not os.path.exists(tmp_path / run_state.STATS_FILE)
  assert not os.path.exists(run_lock.lock_path(str(tmp_path)))
  reader = tf.train.load_checkpoint(latest)
  for key in reader.get_variable_to_shape_map():
    if key.endswith("VARIABLE_VALUE") and reader.get_variable_to_dtype_map()[key].is_floating:
      assert np.all(np.isfinite(reader.get_tensor(key))), key
  stats = run_lib.evaluate_checkpoint(experiment)
  assert stats["step"] == cli_fixtures.checkpoint_steps(tmp_path)[-1]
  assert stats["eval_examples"] == 12 and np.isfinite(stats["eval_loss"])


# --------------------------------------------------------------------------------- lock


def test_a_second_trainer_on_a_live_model_dir_is_refused(tmp_path):
  with run_lock.RunLock(str(tmp_path)):
    with pytest.raises(run_lock.RunLockedError,
                       match=rf"model_dir {tmp_path} is in use by another trainer \(host "
                             rf"{re.escape(socket.gethostname())}, pid {os.getpid()}, started "
                             r"\d{4}-\d\d-\d\d [\d:]{8}\)\. Stop that run or use another"):
      run_lib.train_and_evaluate(fixtures.experiment(tmp_path))
    # Refused before anything was written.
    assert os.listdir(tmp_path) == [run_lock.LOCK_FILE]
  assert not os.listdir(tmp_path)


LOCK_HOLDER = textwrap.dedent("""
    import sys, time
    from official_resnet import run_lock
    run_lock.RunLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(600)
""")


@pytest.mark.slow
def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path, caplog):
  holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(tmp_path)], cwd=REPO,
                            env=cli_fixtures.subprocess_env(), stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline() == "locked\n"
  with pytest.raises(run_lock.RunLockedError, match=rf"pid {holder.pid},"):
    run_lock.RunLock(str(tmp_path)).acquire()
  holder.kill()
  assert holder.wait() == -signal.SIGKILL
  left = json.loads((tmp_path / run_lock.LOCK_FILE).read_text())
  assert left["pid"] == holder.pid
  # absl's logger, which a flag parse earlier in the process may have left at WARNING.
  caplog.set_level(logging.INFO, logger="absl")
  with run_lock.RunLock(str(tmp_path)):
    mine = json.loads((tmp_path / run_lock.LOCK_FILE).read_text())
    assert (mine["pid"], mine["host"]) == (os.getpid(), socket.gethostname())
  assert f'"pid": {holder.pid}' in caplog.text and "Taking over" in caplog.text
  assert not os.listdir(tmp_path)


# ---------------------------------------------------------------------------- user errors


def _error_case(name, tmp_path):
  """(command-line flags, the start of the one line main must print) for each mistake."""
  smoke = f"--flagfile={cli_fixtures.SMOKE}"
  model_dir = f"--model_dir={tmp_path / 'model'}"
  if name == "flagfile line without --":
    (tmp_path / "bad.cfg").write_text("--num_classes=4\nbatch_size=8\n")
    return ([f"--flagfile={tmp_path / 'bad.cfg'}"],
            "Unexpected arguments (flags need --name=value). Received: ['batch_size=8'] "
            "(--helpshort lists the flags.)")
  if name == "flag combination":
    return ([smoke, model_dir, "--loss_scale=huge"],
            "--loss_scale must be 'dynamic' or a positive number. Received: 'huge'")
  if name == "missing data":
    return ([smoke, model_dir, "--source=folder", f"--data_dir={tmp_path / 'nowhere'}"],
            f"data_dir must be an existing folder of images. Received: '{tmp_path / 'nowhere'}'")
  if name == "nothing to evaluate":
    return [smoke, model_dir, "--mode=eval"], "mode 'eval' needs a checkpoint in model_dir"
  if name == "wrong weights file":
    (tmp_path / "weights.h5").write_text("not HDF5")
    # keras.applications .h5 files are ResNet v1: the variant fits, the file does not.
    return ([smoke, model_dir, "--variant=v1", f"--init_checkpoint={tmp_path / 'weights.h5'}"],
            "`path` must be a Keras .h5 or .weights.h5 weights file; h5py cannot read it")
  raise AssertionError(name)


@pytest.mark.parametrize("name", ["flagfile line without --", "flag combination", "missing data",
                                  "nothing to evaluate", "wrong weights file"])
@pytest.mark.parametrize("verbosity", [0, 1])
def test_user_errors_print_one_line_and_a_traceback_only_when_asked(name, verbosity, tmp_path,
                                                                     caplog):
  args, expected = _error_case(name, tmp_path)
  with flagsaver.flagsaver():
    cli_fixtures.FLAGS.unparse_flags()
    argv = cli_fixtures.FLAGS(["official_resnet.main", *args, f"--verbosity={verbosity}"])
    with pytest.raises(SystemExit) as exit_info:
      main.main(argv)
  assert exit_info.value.code == 1
  errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
  assert len(errors) == 1 and "\n" not in errors[0].getMessage()
  assert errors[0].getMessage().startswith(expected), errors[0].getMessage()
  assert (errors[0].exc_info is not None) == (verbosity >= 1)


def test_a_refused_second_trainer_prints_the_holder(tmp_path, caplog):
  with run_lock.RunLock(str(tmp_path)), flagsaver.flagsaver():
    cli_fixtures.parse(f"--flagfile={cli_fixtures.SMOKE}", f"--model_dir={tmp_path}")
    with pytest.raises(SystemExit) as exit_info:
      main.main(["official_resnet.main"])
  assert exit_info.value.code == 1
  assert f"is in use by another trainer (host {socket.gethostname()}, pid {os.getpid()}" in caplog.text


@pytest.mark.slow
def test_a_user_error_as_a_command_prints_no_traceback(tmp_path):
  args, expected = _error_case("missing data", tmp_path)
  result = subprocess.run([sys.executable, "-m", "official_resnet.main", *args], cwd=REPO,
                          env=cli_fixtures.subprocess_env(), capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  # Python's error lines (TF's C++ logs its own, e.g. about a missing CUDA driver).
  assert [line.split("] ", 1)[1] for line in result.stderr.splitlines()
          if re.match(r"E\d{4} .*\.py:\d+\] ", line)] == [expected]


# ------------------------------------------------------------------------ atomic writes


def test_a_failed_stats_write_keeps_the_previous_file(tmp_path):
  run_state.write_stats(str(tmp_path), {"step": 4})
  # json.dump raises on the object after it has written the start of the file.
  with pytest.raises(TypeError):
    run_state.write_stats(str(tmp_path), {"step": 8, "broken": object()})
  assert run_state.read_stats(str(tmp_path)) == {"step": 4}

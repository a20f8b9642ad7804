"""Two workers of a multi_worker_mirrored cluster on localhost, as commands (TF_CONFIG), against
one process with two replicas (mirrored) fed the same per-worker batches.

One scenario checks what only a cluster shows: a SIGTERM to one worker stops both at one
checkpoint (exit 75), a NaN seen by one worker is skipped by both, each coordination service
gets the --heartbeat_timeout asked for, the chief alone writes, and the same commands resume to
the weights of the one-process run. In-process instead: the signal path and exact resume
(test_preemption.py), skipping on every replica (test_faults.py), the resolvers
(test_distribute.py), synchronized BatchNorm and replica statistics (test_trainer.py).
"""
import os
import re
import subprocess
import sys

from absl.testing import flagsaver
import pytest

import input_pipeline
from official_resnet import main
from official_resnet import run_state
import cli_fixtures
import cluster_worker
import trainer_fixtures as fixtures

STEPS, BAD_STEP = cluster_worker.STEPS, cluster_worker.BAD_STEP
HEARTBEAT_TIMEOUT_S = 300.0


def _flags(data, model_dir):
  # ResNet-18 (BatchNorm) on the worker's BATCHES, float32 for the NaN: one step an epoch
  # (8 training images in the folder, a global batch of 8), one evaluation at the end.
  return cli_fixtures.colour_flags(
      data, str(model_dir), architecture="resnet18", normalize_on_device=False,
      nan_policy="skip", train_steps=STEPS, epochs_between_evals=STEPS, steps_per_loop=1,
      log_steps=1, checkpoint_steps=1000)


@pytest.mark.slow
def test_a_signal_stops_both_workers_and_they_resume_to_one_process_with_two_replicas(
    tmp_path, monkeypatch):
  data = fixtures.write_colour_folder(str(tmp_path / "data"), 2, 3)
  model_dir, export_dir = tmp_path / "cluster", tmp_path / "export"

  def start_pair():
    hosts = [f"localhost:{port}" for port in cli_fixtures.free_ports(2)]
    command = [sys.executable, cluster_worker.__file__, *_flags(data, model_dir),
               "--distribution_strategy=multi_worker_mirrored",
               f"--heartbeat_timeout={HEARTBEAT_TIMEOUT_S}", f"--export_dir={export_dir}"]
    return [subprocess.Popen(command, cwd=cli_fixtures.REPO,
                             env=cli_fixtures.cluster_env(hosts, index), stderr=subprocess.PIPE,
                             text=True) for index in range(2)]

  chief, worker = start_pair()
  log = cli_fixtures.signal_at_step(chief, 2, target=worker)
  worker_log = worker.communicate(timeout=300)[1]
  # The worker got the signal; the chief learns of it through the all-reduce and stops too.
  assert (chief.returncode, worker.returncode) == (75, 75), log[-2000:] + worker_log[-2000:]
  for process_log in (log, worker_log):
    assert (f"2 replicas in sync, heartbeat timeout {HEARTBEAT_TIMEOUT_S} s" in process_log)
  stopped = re.search(rf"Stopped by another worker's signal at step (\d+) of {STEPS}", log)
  assert stopped, log[-3000:]
  stopped_at = int(stopped.group(1))
  assert f"Stopped by SIGTERM at step {stopped_at} of {STEPS}" in worker_log
  assert 2 <= stopped_at < STEPS
  assert cli_fixtures.checkpoint_steps(model_dir) == [stopped_at]
  assert not os.path.exists(model_dir / run_state.STATS_FILE) and not os.path.exists(export_dir)

  pair = start_pair()
  try:
    # Meanwhile, the reference: one process, two replicas, the same batches, uninterrupted.
    monkeypatch.setattr(input_pipeline, "build_train_stream",
                        fixtures.train_stream_of(*cluster_worker.BATCHES))
    with flagsaver.flagsaver():
      cli_fixtures.parse(*_flags(data, tmp_path / "one_process"),
                         "--distribution_strategy=mirrored")
      reference = main.run()
    logs = [process.communicate(timeout=300)[1] for process in pair]
  finally:
    for process in pair:
      if process.poll() is None:
        process.kill()
  for process, process_log, stopped_log in zip(pair, logs, (log, worker_log)):
    assert process.returncode == 0, process_log[-3000:]
    assert f"Resumed from {model_dir}/ckpt-{stopped_at} at step {stopped_at}" in process_log
    # Only the second worker's batch held the NaN; both skipped that step (after the stop,
    # unless the signal came late).
    assert (f"Skipped 1 steps whose loss or gradients were NaN or Inf, the first at step "
            f"{BAD_STEP}") in stopped_log + process_log
  # The chief alone reports progress, keeps the checkpoint and exports.
  assert f"step {STEPS}/{STEPS}: loss" in logs[0] and f"step {STEPS}/{STEPS}" not in logs[1]
  stats = run_state.read_stats(str(model_dir))
  assert (stats["start_step"], stats["step"], stats["num_replicas"], stats["eval_examples"]) == (
      stopped_at, STEPS, 2, 12)
  assert os.listdir(export_dir) == ["1"] and not os.listdir(model_dir / "worker_tmp")
  assert os.path.exists(export_dir / "1" / "saved_model.pb")

  # Each BatchNorm replica normalizes its own rows in both; the float32 sums of the
  # all-reduce and the average of the moving statistics (also at the stop) are taken in
  # another order, so the last bits differ.
  assert reference["num_replicas"] == 2
  cli_fixtures.assert_same_variables(model_dir, tmp_path / "one_process", atol=1e-5, rtol=1e-5)
  # Each worker evaluated its shard; the figures are the whole validation set's.
  assert reference["eval_examples"] == 12
  assert stats["eval_loss"] == pytest.approx(reference["eval_loss"], abs=1e-4)
  assert stats["eval_top_1_accuracy"] == reference["eval_top_1_accuracy"]

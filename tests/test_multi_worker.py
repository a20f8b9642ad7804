"""Two workers of a multi_worker_mirrored cluster on localhost, as commands: a signal to one
stops both and the same command resumes them."""
import os
import re
import subprocess
import sys

import pytest
import tensorflow as tf

from official_resnet import run_state
import cli_fixtures


@pytest.mark.slow
def test_sigterm_to_one_of_two_tf_config_workers_stops_both_and_the_command_resumes(tmp_path):
  """The cluster command of the README (the smoke flagfile, ResNet-18 with BatchNorm, under
  multi_worker_mirrored with TF_CONFIG): a signal to one worker stops both at one
  checkpoint; the same command resumes both, finishes, evaluates and exports."""
  steps, at_step = 16, 4
  model_dir, export_dir = tmp_path / "model", tmp_path / "export"

  def start_pair(model_dir, *extra):
    hosts = [f"localhost:{port}" for port in cli_fixtures.free_ports(2)]
    command = [sys.executable, "-m", "official_resnet.main", f"--flagfile={cli_fixtures.SMOKE}",
               f"--model_dir={model_dir}", "--distribution_strategy=multi_worker_mirrored",
               "--steps_per_loop=1", "--log_steps=1", "--checkpoint_steps=1000", *extra]
    return [subprocess.Popen(command, cwd=cli_fixtures.REPO,
                             env=cli_fixtures.cluster_env(hosts, index), stderr=subprocess.PIPE,
                             text=True) for index in range(2)]

  def finish(pair):
    logs = [process.communicate(timeout=300)[1] for process in pair]
    for process, log in zip(pair, logs):
      assert process.returncode == 0, log[-3000:]
    return logs

  chief, worker = start_pair(model_dir, f"--export_dir={export_dir}")
  log = cli_fixtures.signal_at_step(chief, at_step, target=worker)
  worker_log = worker.communicate(timeout=300)[1]
  # The worker got the signal; the chief learns of it through the all-reduce and stops too.
  assert (chief.returncode, worker.returncode) == (75, 75), log[-2000:] + worker_log[-2000:]
  for process_log in (log, worker_log):
    assert "2 replicas in sync" in process_log
  stopped = re.search(rf"Stopped by another worker's signal at step (\d+) of {steps}", log)
  assert stopped, log[-3000:]
  stopped_at = int(stopped.group(1))
  assert f"Stopped by SIGTERM at step {stopped_at} of {steps}" in worker_log
  assert at_step <= stopped_at < steps
  assert cli_fixtures.checkpoint_steps(model_dir) == [stopped_at]
  assert not os.path.exists(model_dir / run_state.STATS_FILE) and not os.path.exists(export_dir)

  logs = finish(start_pair(model_dir, f"--export_dir={export_dir}"))
  for process_log in logs:
    assert f"Resumed from {model_dir}/ckpt-{stopped_at} at step {stopped_at}" in process_log
  # The chief alone reports progress.
  assert f"step {steps}/{steps}: loss" in logs[0] and f"step {steps}/{steps}" not in logs[1]
  stats = run_state.read_stats(str(model_dir))
  assert (stats["start_step"], stats["step"], stats["num_replicas"], stats["eval_examples"]) == (
      stopped_at, steps, 2, 128)
  # The chief exported the trained model; the other worker left nothing behind.
  assert os.listdir(export_dir) == ["1"] and not os.listdir(model_dir / "worker_tmp")
  assert "serving_default" in tf.saved_model.load(str(export_dir / "1")).signatures

  # The reference is an uninterrupted pair, not one process. Each BatchNorm replica
  # normalizes its worker's own images, which one process would not split so; and a
  # last-bit difference (one process sums a batch's gradients in another order) can move
  # every position of a feature map across a ReLU at once and grow from there (the
  # synchronized-BatchNorm test in test_trainer.py measures it). The stopped and the
  # uninterrupted pair split and order every batch alike; they differ only in when the
  # workers' moving statistics were averaged (also at the stop), a linear average either
  # way, so in the last bits (measured up to 2.9e-6 on a moving mean near 1.6).
  finish(start_pair(tmp_path / "uninterrupted"))
  cli_fixtures.assert_same_variables(model_dir, tmp_path / "uninterrupted", atol=1e-5, rtol=1e-5)

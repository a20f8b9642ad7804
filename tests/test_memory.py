"""The train step's memory: estimated before anything is built, checked against a measured
peak, and a run that cannot fit refused in seconds with a batch size that fits."""
import dataclasses
import logging
import os
import re
import resource
import subprocess
import sys
import textwrap

from absl.testing import flagsaver
import pytest
import tensorflow as tf

from official_resnet import main
from official_resnet import memory
import cli_fixtures
import trainer_fixtures as fixtures

GiB = memory.GiB

# Runs the command line, then prints the process' peak resident memory (memory's VmHWM: the
# pytest worker that starts this process has grown to 3.7 GiB by the end of the suite, which
# getrusage would report).
MEASURED_MAIN = textwrap.dedent("""
    import atexit, runpy, sys
    from official_resnet import memory
    atexit.register(lambda: print("peak_rss_bytes", memory.peak_resident_bytes(),
                                  file=sys.stderr, flush=True))
    sys.argv[0] = "official_resnet.main"
    runpy.run_module("official_resnet.main", run_name="__main__")
""")


def _estimate(args):
  """The StepMemory of the command's train step on one CPU replica."""
  with flagsaver.flagsaver():
    cli_fixtures.parse(*args)
    experiment = main.experiment_from_flags()
  return memory.estimate(experiment.model, experiment.train.optimizer.name,
                         experiment.train.ema_decay is not None, "CPU", 1)


@pytest.mark.slow
def test_the_estimate_bounds_a_measured_peak_within_its_factor(tmp_path):
  # Activations (about 0.4 GiB) as large as TensorFlow's own share, so both terms count.
  args = ["--source=synthetic", "--synthetic_num_examples=256", "--num_classes=10",
          "--architecture=resnet50", "--base_width=16", "--image_size=64", "--batch_size=128",
          "--mode=train", "--train_steps=2", "--steps_per_loop=1", "--log_steps=1",
          "--distribution_strategy=off", "--num_gpus=0", f"--model_dir={tmp_path / 'run'}"]
  result = subprocess.run([sys.executable, "-c", MEASURED_MAIN, *args], cwd=cli_fixtures.REPO,
                          env=cli_fixtures.subprocess_env(), capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  peak = int(re.search(r"peak_rss_bytes (\d+)", result.stderr).group(1))
  estimated = _estimate(args).bytes_needed(128)
  assert peak <= estimated <= memory.ESTIMATE_FACTOR * peak, (peak / GiB, estimated / GiB)


@pytest.mark.slow
def test_a_run_that_cannot_fit_is_refused_in_seconds_with_a_batch_that_fits(tmp_path):
  # The official defaults (ResNet-50, 224 px) at a batch no machine here holds.
  model_dir = tmp_path / "runs" / "b"
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  result = subprocess.run(
      [sys.executable, "-m", "official_resnet.main", "--batch_size=4096",
       f"--model_dir={model_dir}"], cwd=cli_fixtures.REPO, env=cli_fixtures.subprocess_env(),
      capture_output=True, text=True, timeout=300)
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  assert result.returncode == 1, result.stderr[-3000:]
  # The command's own work, from Python's start to the refusal: its CPU time, which other
  # jobs on a busy test machine do not stretch as they stretch its wall time.
  assert (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime) < 10
  assert not (tmp_path / "runs").exists()
  refusal = re.search(
      r"batch_size=4096 needs about ([\d.]+) GiB for a train step \(1 CPU replica, each "
      r"[\d.]+ GiB of activations and \d+ MiB of weights, gradients and optimizer slots, and "
      r"768 MiB for TensorFlow\), more than the ([\d.]+) GiB this machine has available "
      r"\(of ([\d.]+) GiB\); --batch_size=(\d+) fits \(about ([\d.]+) GiB\)\. --nocheck_memory "
      r"runs it anyway\. Nothing was written\.", result.stderr)
  assert refusal, result.stderr[-3000:]
  needed, available, total, fits, fits_needs = refusal.groups()
  assert float(total) == round(memory.host_memory()[1] / GiB, 1)
  step_memory = _estimate(["--batch_size=4096"])
  assert float(needed) == round(step_memory.bytes_needed(4096) / GiB, 1)
  # The largest multiple of 8 within what was available (as rounded in the message).
  fits = int(fits)
  assert fits % 8 == 0 and float(fits_needs) == round(step_memory.bytes_needed(fits) / GiB, 1)
  assert float(fits_needs) <= float(available) + 0.05
  assert step_memory.bytes_needed(fits + 8) / GiB > float(available) - 0.05


def test_largest_batch_and_the_message_on_gpus():
  step_memory = memory.StepMemory(device="GPU", replicas=2, global_replicas=2, parameters=2**20,
                                  activations_per_example=2**20, activation_bytes=4,
                                  weight_copies=4)
  # Per GPU: 16 MiB of weights and copies, 4 MiB per example of its half of the batch.
  assert step_memory.bytes_needed(64) == 16 * 2**20 + 32 * 4 * 2**20
  assert step_memory.largest_batch(16 * 2**20 + 100 * 4 * 2**20) == 192  # 200 -> a multiple of 16
  assert step_memory.largest_batch(16 * 2**20 + 5 * 4 * 2**20) == 10  # < 16: a multiple of 2
  assert step_memory.largest_batch(16 * 2**20) is None
  # One of the two replicas on this host's CPU: TensorFlow's share and its half of the batch.
  one_of_two = dataclasses.replace(step_memory, device="CPU", replicas=1)
  assert one_of_two.bytes_needed(64) == memory.RUNTIME_BYTES + 16 * 2**20 + 32 * 4 * 2**20
  with pytest.raises(ValueError, match=r"batch_size=64 needs about 144 MiB for a train step \(2 GPU "
                                       r"replicas, each 128 MiB of activations and 16 MiB of "
                                       r"weights, gradients and optimizer slots\), more than the "
                                       r"56 MiB each GPU has available \(of 80.0 GiB\); "
                                       r"--batch_size=16 fits \(about 48 MiB\)"):
    memory.check_fits(step_memory, 64, 56 * 2**20, 80 * GiB, "each GPU")
  with pytest.raises(ValueError, match=r"not even --batch_size=2 fits: use a smaller --image_size"):
    memory.check_fits(step_memory, 64, 16 * 2**20, 80 * GiB, "each GPU")


def test_on_a_gpu_the_step_must_fit_the_smallest_visible_gpu(tmp_path, monkeypatch, caplog):
  # nvidia-smi as on a machine with an 80 GiB and a 100 MiB GPU.
  fake = tmp_path / "bin" / "nvidia-smi"
  fake.parent.mkdir()
  fake.write_text("#!/bin/sh\nprintf '81920\\n100\\n'\n")
  fake.chmod(0o755)
  monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
  experiment = fixtures.experiment(tmp_path, batch_size=64)
  on_gpu = dataclasses.replace(experiment, runtime=dataclasses.replace(experiment.runtime,
                                                                       num_gpus=1))
  strategy = tf.distribute.get_strategy()
  assert memory.gpu_memory() == 100 * 2**20
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
  caplog.set_level(logging.INFO, logger="absl")
  memory.check_train_step(on_gpu, strategy)
  assert "Memory: the train step needs about" in caplog.text and "each GPU has 80.0 GiB" in caplog.text
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
  with pytest.raises(ValueError, match=r"batch_size=4096 needs about \d+ MiB for a train step \(1 "
                                       r"GPU replica, each .* more than the 100 MiB each GPU has "
                                       r"available \(of 100 MiB\); --batch_size=\d+ fits"):
    memory.check_train_step(dataclasses.replace(on_gpu, data=dataclasses.replace(
        on_gpu.data, batch_size=4096)), strategy)

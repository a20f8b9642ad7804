"""The command line: flagfiles, flag errors, a subprocess run, multi-worker processes, kill -9 and resume."""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

from absl import app
from absl import flags
from absl.testing import flagsaver
import numpy as np
import pytest
import tensorflow as tf

from official_resnet import main
from official_resnet import run_state
from official_resnet import trainer as trainer_lib
import trainer_fixtures as fixtures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(REPO, "configs", "smoke.cfg")
FLAGS = flags.FLAGS


def parse(*args):
  """Parses the flags as the command line would (inside a flagsaver context)."""
  FLAGS.unparse_flags()
  FLAGS(["official_resnet.main", *args])


def colour_flags(data_dir, model_dir, **overrides):
  """Flags for VGG16 (no BatchNorm) on 8 solid-colour images with a global batch of 8."""
  values = dict(source="folder", data_dir=data_dir, num_classes=4, image_size=32,
                normalization="unit", architecture="vgg16", base_width=8, batch_size=8,
                lr_schedule="constant", base_learning_rate=0.05, lr_base_batch_size=0,
                distribution_strategy="off", num_gpus=0, seed=3, model_dir=model_dir)
  values.update(overrides)
  return [f"--{name}={value}" for name, value in values.items()]


def subprocess_env():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  env["PYTHONPATH"] = os.pathsep.join([REPO, os.path.join(REPO, "tests"), env.get("PYTHONPATH", "")])
  return env


def test_smoke_config_runs_in_process(tmp_path):
  with flagsaver.flagsaver():
    parse(f"--flagfile={SMOKE}", f"--model_dir={tmp_path}")
    assert FLAGS.architecture == "resnet18" and FLAGS.source == "synthetic"
    stats = main.run()
  assert stats["step"] == 16 and stats["epochs"] == 4.0
  assert stats["eval_examples"] == 128
  assert run_state.read_stats(str(tmp_path)) == json.loads(json.dumps(stats))
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-16")
  assert run_state.read_run_config(str(tmp_path)).model.base_width == 8


@pytest.mark.parametrize("name,strategy,dtype,batch_size,peak_learning_rate", [
    ("imagenet_resnet50_gpu.cfg", "mirrored", "fp16", 1024, 0.4),
    ("imagenet_resnet50_tpu.cfg", "tpu", "bf16", 1024, 0.4),
    ("imagenet_resnet50_multiworker.cfg", "multi_worker_mirrored", "fp16", 4096, 1.6),
])
def test_imagenet_configs_describe_the_official_recipe(name, strategy, dtype, batch_size,
                                                        peak_learning_rate):
  with flagsaver.flagsaver():
    parse(f"--flagfile={os.path.join(REPO, 'configs', name)}", "--data_dir=/data/imagenet")
    experiment = main.experiment_from_flags()
  assert experiment.runtime.distribution_strategy == strategy and experiment.runtime.dtype == dtype
  assert (experiment.model.architecture, experiment.model.variant) == ("resnet50", "v1.5")
  assert (experiment.data.source, experiment.data.batch_size) == ("imagenet", batch_size)
  train = experiment.train
  assert (train.train_epochs, train.schedule.decay_epochs, train.schedule.warmup_epochs) == (
      90, (30, 60, 80), 5)
  assert train.schedule.peak_learning_rate(batch_size) == pytest.approx(peak_learning_rate)
  assert experiment.model.weight_decay == 1e-4 and train.optimizer.momentum == 0.9


@pytest.mark.parametrize("flag,value,allowed", [
    ("mode", "export_all", "<train_and_eval|train|eval|export|predict>"),
    ("distribution_strategy", "horovod", "<off|one_device|mirrored|multi_worker_mirrored|tpu>"),
    ("optimizer", "adagrad", "<sgd|adam|adamw|rmsprop|lamb|lars>"),
    ("lr_schedule", "linear", "<piecewise|cosine|constant|step|polynomial|exponential>"),
    ("dtype", "fp8", "<fp32|fp16|bf16>"),
    ("training_loop", "estimator", "<custom|fit>"),
    ("architecture", "resnet200", "<resnet18|resnet34|"),
])
def test_bad_flag_values_name_the_flag_and_its_values(flag, value, allowed):
  with flagsaver.flagsaver(), pytest.raises(flags.IllegalFlagValueError) as error:
    parse(f"--{flag}={value}")
  assert f"--{flag}={value}" in str(error.value) and allowed in str(error.value)


@pytest.mark.parametrize("args,message", [
    (["--training_loop=fit", "--distribution_strategy=multi_worker_mirrored"],
     r"training_loop='fit' works with distribution_strategy in \('off', 'one_device', 'mirrored'\)"),
    (["--distribution_strategy=mirrored", "--all_reduce_alg=ring"],
     r"all_reduce_alg \(with mirrored\) must be one of \('nccl', 'hierarchical_copy', "
     r"'reduction_to_one_device'\). Received: 'ring'"),
    (["--loss_scale=huge"], r"--loss_scale must be 'dynamic' or a positive number. Received: 'huge'"),
    (["--lr_decay_epochs=30,sixty"], r"--lr_decay_epochs must be comma-separated numbers"),
    (["--head_hidden_units=4096,x"], r"--head_hidden_units must be comma-separated integers"),
    (["--num_gpus=2", "--distribution_strategy=one_device"], r"uses at most one GPU"),
    (["--worker_hosts=a:1,b:2", "--task_index=5"], r"task_index must be in \[0, 2\)"),
])
def test_bad_flag_combinations_name_the_flags(args, message):
  with flagsaver.flagsaver():
    parse(*args)
    with pytest.raises(app.UsageError, match=message):
      main.run()


def test_batch_not_divisible_by_replicas_is_refused(tmp_path):
  with flagsaver.flagsaver():
    parse(f"--flagfile={SMOKE}", f"--model_dir={tmp_path}", "--distribution_strategy=mirrored",
          "--batch_size=31")
    with pytest.raises(ValueError, match=r"batch_size \(the global batch\) must be divisible by the "
                                         r"2 replicas in sync. Received: 31"):
      main.run()
  assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_smoke_config_runs_as_a_command(tmp_path):
  command = [sys.executable, "-m", "official_resnet.main", f"--flagfile={SMOKE}",
             f"--model_dir={tmp_path}"]
  result = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "step 16/16: loss" in result.stderr and "examples/s" in result.stderr
  stats = run_state.read_stats(str(tmp_path))
  assert stats["step"] == 16 and stats["eval_examples"] == 128
  bad = subprocess.run(command + ["--optimizer=lamb"], cwd=REPO, env=subprocess_env(),
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode != 0
  assert "--optimizer=lamb" in bad.stderr and "<sgd|adam|adamw>" in bad.stderr


def free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


# Runs main's flags through the Trainer and saves what the test compares.
WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from absl import flags
    from official_resnet import main, trainer
    flags.FLAGS(sys.argv[:-1])
    t = trainer.Trainer(main.experiment_from_flags())
    t.restore_or_initialize()
    stats = t.train()
    np.savez(sys.argv[-1] + ".npz", *[w.numpy() for w in t.model.weights])
    json.dump({"replicas": t.strategy.num_replicas_in_sync, "chief": t.is_chief, **stats},
              open(sys.argv[-1] + ".json", "w"))
""")


@pytest.mark.slow
def test_two_workers_match_one_process(tmp_path):
  data = fixtures.write_colour_folder(str(tmp_path / "data"), 2, 3)
  script = tmp_path / "worker.py"
  script.write_text(WORKER)
  hosts = ",".join(f"localhost:{port}" for port in free_ports(2))
  common = colour_flags(data, str(tmp_path / "multi"), train_steps=3, mode="train_and_eval",
                        epochs_between_evals=3)
  workers = [subprocess.Popen(
      [sys.executable, str(script), *common, "--distribution_strategy=multi_worker_mirrored",
       f"--worker_hosts={hosts}", f"--task_index={index}", str(tmp_path / f"worker{index}")],
      cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for index in range(2)]
  with flagsaver.flagsaver():
    parse(*colour_flags(data, str(tmp_path / "single"), train_steps=3, epochs_between_evals=3))
    single = trainer_lib.Trainer(main.experiment_from_flags())
  single.restore_or_initialize()
  single_stats = single.train()
  for worker in workers:
    output, _ = worker.communicate(timeout=400)
    assert worker.returncode == 0, output[-3000:]
  results = [json.loads((tmp_path / f"worker{i}.json").read_text()) for i in range(2)]
  assert [(r["replicas"], r["chief"]) for r in results] == [(2, True), (2, False)]
  weights = [np.load(tmp_path / f"worker{i}.npz") for i in range(2)]
  for index, expected in enumerate(single.model.weights):
    first, second = (w[f"arr_{index}"] for w in weights)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, expected.numpy(), atol=1e-5, rtol=0)
  # Each worker evaluates its shard; together, every image once.
  assert [r["eval_examples"] for r in results] == [12, 12] == [single_stats["eval_examples"]] * 2
  assert results[0]["eval_loss"] == pytest.approx(single_stats["eval_loss"], abs=1e-5)
  # Only the chief keeps checkpoints and writes the run's files.
  assert tf.train.latest_checkpoint(str(tmp_path / "multi")).endswith("ckpt-3")
  assert run_state.read_stats(str(tmp_path / "multi"))["step"] == 3


@pytest.mark.slow
def test_kill_9_then_the_same_command_resumes_to_the_same_weights(tmp_path):
  # Two images, a global batch of two: whichever order the pipeline reads them in, a step
  # changes only in the last bit (where a kernel puts each image), so runs can match closely.
  data = fixtures.write_colour_folder(str(tmp_path / "data"), 1, 1, num_classes=2)
  steps = 60
  args = dict(train_steps=steps, checkpoint_steps=5, steps_per_loop=1, log_steps=5, mode="train",
              num_classes=2, batch_size=2)
  with flagsaver.flagsaver():
    parse(*colour_flags(data, str(tmp_path / "reference"), **args))
    reference_stats = main.run()
  assert reference_stats["step"] == steps

  model_dir = tmp_path / "interrupted"
  command = [sys.executable, "-m", "official_resnet.main",
             *colour_flags(data, str(model_dir), **args)]
  first = subprocess.Popen(command, cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while tf.train.latest_checkpoint(str(model_dir)) is None:
    assert first.poll() is None and time.time() < deadline, "the run ended before a checkpoint"
    time.sleep(0.05)
  first.send_signal(signal.SIGKILL)
  assert first.wait() == -signal.SIGKILL
  killed_at = int(tf.train.latest_checkpoint(str(model_dir)).rsplit("-", 1)[1])
  assert 5 <= killed_at < steps
  assert not os.path.exists(model_dir / run_state.STATS_FILE)

  second = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=300)
  assert second.returncode == 0, second.stderr[-3000:]
  assert f"Resumed from {model_dir}/ckpt-{killed_at} at step {killed_at}" in second.stderr
  stats = run_state.read_stats(str(model_dir))
  assert (stats["start_step"], stats["step"]) == (killed_at, steps)
  # Weights, optimizer slots and counters all end where the uninterrupted run's did.
  resumed = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(model_dir)))
  reference = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path / "reference")))
  keys = reference.get_variable_to_shape_map()
  assert keys == resumed.get_variable_to_shape_map()
  # Keras 3 keeps SGD's momentum buffers in the optimizer's _variables.
  assert any(key.startswith("optimizer/_variables/") for key in keys)
  for key in (key for key in keys if key.endswith("VARIABLE_VALUE")):
    np.testing.assert_allclose(resumed.get_tensor(key), reference.get_tensor(key), atol=1e-6,
                               rtol=0, err_msg=key)

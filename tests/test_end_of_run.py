"""What a command shows a user: TF's known noise dropped from stderr, its real lines kept; the
summary at the end of training; TensorBoard scalars and the best checkpoint by default."""
import fcntl
import glob
import io
import json
import logging
import os
import pty
import re
import shlex
import struct
import subprocess
import sys
import termios
import textwrap

from absl import flags
from absl.testing import flagsaver
import pytest
import tensorflow as tf

from official_resnet import best_checkpoint
from official_resnet import main
from official_resnet import run_state
from official_resnet import run_summary
from official_resnet import tf_noise
import trainer_fixtures as fixtures
from cli_fixtures import REPO, parse, subprocess_env

FLAGS = flags.FLAGS

# TensorFlow 2.21's own lines on a CPU machine: at start-up (C++, fd 2) and at every
# checkpoint (Python).
TF_NOISE_LINES = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796586164.325175    7053 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results due to floating-point round-off errors from "
    "different computation orders. To turn them off, set the environment variable "
    "`TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796586164.325518    7053 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used.",
    "I0000 00:00:1796586164.500159    7053 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other "
    "operations, rebuild TensorFlow with the appropriate compiler flags.",
    "I1206 19:43:11.014821 140426931862400 functional_saver.py:440] Sharding callback duration: "
    "63 microseconds",
)
CUINIT_LINE = ("E0000 00:00:1796586177.905239    7053 cuda_platform.cc:52] failed call to cuInit: "
               "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)")
# Lines that look like TF's but say something: a real warning, an error, our own log lines.
REAL_LINES = (
    "W0000 00:00:1796586177.905239    7053 op_level_cost_estimator.cc:699] Error in "
    "PredictCost() for the op: op: \"CropAndResize\"",
    "E1206 19:43:11.014821 140426931862400 checkpointing.py:127] Saved ckpt-4, but not a "
    "Sharding callback duration: of anything",
    "I1206 19:43:11.034150 140426931862400 checkpointing.py:127] Saved /tmp/run/ckpt-4.",
    "To enable the following instructions, read the manual.",
)


def _filtered(lines, has_gpu):
  read_end, write_end = os.pipe()
  os.write(write_end, "".join(f"{line}\n" for line in lines).encode())
  os.close(write_end)
  sink = io.BytesIO()
  tf_noise.filter_lines(read_end, sink, tf_noise.noise_patterns(has_gpu=has_gpu))
  os.close(read_end)
  return sink.getvalue().decode().splitlines()


def test_filter_drops_known_noise_and_keeps_real_lines_in_order():
  mixed = [REAL_LINES[0], *TF_NOISE_LINES[:3], REAL_LINES[1], CUINIT_LINE, *TF_NOISE_LINES[3:],
           REAL_LINES[2], REAL_LINES[3]]
  assert _filtered(mixed, has_gpu=False) == list(REAL_LINES)
  # With an NVIDIA device, a failed cuInit is a real error.
  assert _filtered(mixed, has_gpu=True) == [*REAL_LINES[:2], CUINIT_LINE, *REAL_LINES[2:]]


# Writes to fd 2 as TF's C++ does, and through Python; then exits as `sys.argv[1]` says.
WRITER = textwrap.dedent("""
    import os, signal, sys
    from official_resnet import tf_noise
    print(tf_noise.filter_stderr(), os.environ.get("TF_CPP_MIN_LOG_LEVEL"), flush=True)
    for line in sys.argv[2:]:
      os.write(2, (line + "\\n").encode())
    sys.stderr.write("a Python line\\n")
    sys.stderr.write("an unfinished line")
    sys.stderr.flush()
    if sys.argv[1] == "kill":
      os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.parametrize("exit_by", ["exit", "kill"])
def test_stderr_filter_of_a_process_passes_on_every_real_line(exit_by):
  """Through fd 2 of a real process: nothing real lost, in order, even when it is killed."""
  lines = [REAL_LINES[0], *TF_NOISE_LINES, REAL_LINES[2]]
  env = {name: value for name, value in subprocess_env().items()
         if name not in ("TF_CPP_MIN_LOG_LEVEL", tf_noise.SHOW_NOISE_VARIABLE)}
  result = subprocess.run([sys.executable, "-c", WRITER, exit_by, *lines], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
  assert result.stdout == "True 1\n"
  assert result.stderr == f"{REAL_LINES[0]}\n{REAL_LINES[2]}\na Python line\nan unfinished line"
  shown = subprocess.run([sys.executable, "-c", WRITER, exit_by, *lines], cwd=REPO,
                         env=dict(env, OFFICIAL_RESNET_TF_NOISE="1"), capture_output=True,
                         text=True, timeout=60)
  assert shown.stdout == "False None\n"
  assert shown.stderr == "".join(f"{line}\n" for line in lines) + "a Python line\nan unfinished line"


# On a terminal: the filter keeps it one (its width too), so the progress bar still draws.
TERMINAL_WRITER = textwrap.dedent("""
    import os, sys
    from official_resnet import tf_noise
    tf_noise.filter_stderr()
    os.write(2, (sys.argv[1] + "\\n").encode())
    sys.stderr.write(f"terminal {sys.stderr.isatty()}, {os.get_terminal_size(2).columns} wide\\n")
    sys.stderr.write("\\r3/12 [==  ]")
    sys.stderr.flush()
""")


def test_on_a_terminal_the_filtered_stderr_is_a_terminal_as_wide():
  controller, terminal = pty.openpty()
  fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 123, 0, 0))
  env = {name: value for name, value in subprocess_env().items()
         if name != tf_noise.SHOW_NOISE_VARIABLE}
  process = subprocess.Popen([sys.executable, "-c", TERMINAL_WRITER, TF_NOISE_LINES[1]],
                             cwd=REPO, env=env, stderr=terminal)
  os.close(terminal)
  output = b""
  while True:
    try:
      chunk = os.read(controller, 1 << 16)
    except OSError:  # the process and its filter closed the terminal
      break
    if not chunk:
      break
    output += chunk
  os.close(controller)
  assert process.wait(timeout=60) == 0
  assert output.decode() == "terminal True, 123 wide\r\n\r3/12 [==  ]"


# TensorFlow's own start-up and a checkpoint save, then a line of ours.
TF_USER = textwrap.dedent("""
    import os, sys
    from official_resnet import tf_noise
    tf_noise.filter_stderr()
    from absl import logging
    import tensorflow as tf
    logging.use_absl_handler()  # as app.run does: TF's Python INFO lines show
    logging.set_verbosity(logging.INFO)
    tf.train.Checkpoint(v=tf.Variable(1.0)).save(os.path.join(sys.argv[1], "ckpt"))
    logging.warning("our own warning")
""")


@pytest.mark.slow
def test_tensorflow_start_up_and_checkpoint_noise_is_gone(tmp_path):
  env = {name: value for name, value in subprocess_env().items()
         if name != "TF_CPP_MIN_LOG_LEVEL"}
  logs = {}
  for show in ("1", "0"):
    result = subprocess.run([sys.executable, "-c", TF_USER, str(tmp_path / show)], cwd=REPO,
                            env=dict(env, OFFICIAL_RESNET_TF_NOISE=show), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    logs[show] = result.stderr.splitlines()
  noise = re.compile("|".join(tf_noise.noise_patterns()))
  # Unfiltered, TF prints its noise here: the test would prove nothing otherwise.
  shown = [line for line in logs["1"] if noise.search(line)]
  assert any("Sharding callback duration" in line for line in shown)
  assert any("absl::InitializeLog" in line for line in shown)
  # The rest, less times and thread ids, is what the filter lets through.
  assert [line.split("] ", 1)[-1] for line in logs["1"] if not noise.search(line)] == [
      line.split("] ", 1)[-1] for line in logs["0"]]
  assert logs["0"][-1].endswith("] our own warning")


def test_tensorboard_and_best_checkpoint_are_on_by_default(tmp_path):
  with flagsaver.flagsaver():
    parse(f"--model_dir={tmp_path}")
    default = main.experiment_from_flags().train
    parse(f"--model_dir={tmp_path}", "--best_metric=none", "--noenable_tensorboard")
    off = main.experiment_from_flags().train
  assert (default.enable_tensorboard, default.best_metric) == (True, "top_1_accuracy")
  assert (off.enable_tensorboard, off.best_metric) == (False, None)


def _summary(log):
  """The summary's lines, from the log line that opens it to the end of the log."""
  return log[log.index("] Run summary:\n"):].split("\n", 1)[1].splitlines()


def test_training_without_evaluation_keeps_no_best_checkpoint(tmp_path, caplog):
  """--mode=train: no evaluation, so no best checkpoint; the summary says so."""
  model_dir = str(tmp_path / "run")
  with flagsaver.flagsaver():
    parse("--mode=train", "--source=synthetic", "--synthetic_num_examples=16", "--num_classes=4",
          "--image_size=32", "--architecture=resnet18", "--base_width=8", "--batch_size=8",
          "--train_steps=2", "--distribution_strategy=off", "--num_gpus=0",
          f"--model_dir={model_dir}")
    # After parsing, which sets absl's level from --verbosity.
    caplog.set_level(logging.INFO, logger="absl")
    main.run()
  summary = caplog.text[caplog.text.index("Run summary:"):]
  assert "top-1: not evaluated (--mode=train or --skip_eval)" in summary
  assert f"checkpoints: {model_dir} (latest: ckpt-2)" in summary
  assert "best checkpoint" not in summary
  assert not os.path.exists(best_checkpoint.directory(model_dir))
  # Synthetic images: no files to predict on, so the command asks for the user's.
  assert f"--images={run_summary.IMAGES_PLACEHOLDER}" in summary


def _scalar_tags(directory):
  tags = set()
  for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      tags.update(value.tag for value in event.summary.value
                  if value.metadata.plugin_data.plugin_name == "scalars")
  return tags


@pytest.mark.slow
def test_the_readme_command_ends_with_a_summary_whose_paths_and_commands_work(tmp_path):
  """The README's folder command, as a user types it: the summary names the best and last
  top-1, files that exist, and next commands that run; TensorBoard has the scalars; none
  of TF's known noise shows."""
  data = fixtures.write_colour_folder(str(tmp_path / "colours"), 8, 4, seed=1, noise=40.0)
  model_dir, export_dir = str(tmp_path / "runs" / "colours"), str(tmp_path / "exports")
  env = {name: value for name, value in subprocess_env().items()
         if name != "TF_CPP_MIN_LOG_LEVEL"}
  command = [sys.executable, "-m", "official_resnet.main", f"--data_dir={data}",
             "--image_size=32", "--architecture=resnet18", "--base_width=8",
             f"--model_dir={model_dir}", "--train_epochs=4", "--epochs_between_evals=1",
             "--batch_size=8", f"--export_dir={export_dir}"]
  result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  log = result.stderr
  assert log.index("] Run stats: ") < log.index("] Run summary:")
  noise = re.compile("|".join(tf_noise.noise_patterns()))
  assert [line for line in log.splitlines() if noise.search(line)] == []

  stats = run_state.read_stats(model_dir)
  accuracies = [(entry["eval_top_1_accuracy"], entry["step"]) for entry in stats["history"]]
  assert [step for _, step in accuracies] == [4, 8, 12, 16]
  best_value = max(value for value, _ in accuracies)
  best_step = next(step for value, step in accuracies if value == best_value)
  record = best_checkpoint.read(model_dir)
  assert (record["step"], record["value"]) == (best_step, best_value)
  summary = _summary(log)
  assert summary[:5] == [
      f"  top-1: best {best_value:.4f} at step {best_step}, last {accuracies[-1][0]:.4f} at step 16",
      f"  checkpoints: {model_dir} (latest: ckpt-16)",
      f"  best checkpoint: {model_dir}/best/ckpt-{best_step} (top_1_accuracy {best_value:.4g} at "
      f"step {best_step}; --export_checkpoint=best exports it)",
      f"  export: {export_dir}/1",
      f"  TensorBoard scalars: {model_dir}/train, {model_dir}/eval"]
  for path in (f"{model_dir}/ckpt-16.index", f"{model_dir}/best/ckpt-{best_step}.index",
               f"{export_dir}/1/saved_model.pb"):
    assert os.path.isfile(path), path
  assert {"loss", "top_1_accuracy", "learning_rate"} <= _scalar_tags(f"{model_dir}/train")
  assert {"loss", "top_1_accuracy", "top_5_accuracy"} <= _scalar_tags(f"{model_dir}/eval")

  assert summary[5:] == [
      "Next:",
      f"  ./run.sh main --mode=eval --model_dir={model_dir}",
      f"  ./run.sh main --mode=export --model_dir={model_dir} --export_dir={export_dir}",
      f"  ./run.sh main --mode=predict --model_dir={model_dir} --images={data}/validation",
      f"  ./run.sh tensorboard --logdir={model_dir}"]
  # The predict command as printed, `./run.sh main` being python -m official_resnet.main.
  predict = shlex.split(summary[8])[2:]
  predicted = subprocess.run([sys.executable, "-m", "official_resnet.main", *predict], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=300)
  assert predicted.returncode == 0, predicted.stderr[-3000:]
  assert json.loads(predicted.stderr.split("Run stats: ", 1)[1].splitlines()[0]) == {
      "source": model_dir, "images": 16, "failed": 0}
  assert "Run summary" not in predicted.stderr

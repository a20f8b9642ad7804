"""The command: `python -m official_resnet.main --flagfile=configs/smoke.cfg [--flag=value ...]`.

The only module that reads absl FLAGS. It defines the flags of cli/flag_table.py, turns the
parsed flags into one ExperimentConfig (cli/settings.py) and runs one mode.

A mode is a function (ExperimentConfig, flag values) -> stats dict, listed in MODES (and its
name in flag_table.MODES); a new mode is one function and one entry. Modes that act on an
existing run (eval, export, predict, and training in a model_dir that holds one) take every
setting not given as a flag from the run's config.json.
"""
if __name__ == "__main__":
  # Before tensorflow is imported: its start-up lines go to fd 2 from C++ (tf_noise.py).
  from official_resnet import tf_noise
  tf_noise.filter_stderr()

import atexit
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from official_resnet import continuous_eval
from official_resnet import distribute
from official_resnet import memory
from official_resnet import official_flags
from official_resnet import predict
from official_resnet import progress
from official_resnet import run as run_lib
from official_resnet import run_lock
from official_resnet import run_summary
from official_resnet import run_state
from official_resnet import trainer
from official_resnet.cli import flag_table
from official_resnet.cli import settings
from official_resnet.cli import table
from official_resnet.cli import weights_flags

FLAGS = flags.FLAGS
table.define(flag_table.GROUPS, FLAGS)

USAGE = """Usage: ./run.sh main [--flagfile=configs/<recipe>.cfg] [--flag=value ...]
   or: python -m official_resnet.main [--flagfile=...] [--flag=value ...]

Trains, evaluates, exports or predicts (--mode); rerunning a command resumes its run.
The flags by what they set, the most used first. --helpfull lists every flag, also the
tensorflow/models names (docs/official_flags.md) and absl's own."""


def experiment_from_flags(flag_values=FLAGS):
  """The ExperimentConfig of the parsed flags (cli/settings.py)."""
  return settings.experiment_from_flags(flag_values)


def _export(experiment, flag_values):
  """Exports model_dir's run; without a checkpoint there, the weights given (--pretrained,
  --init_checkpoint) as they are."""
  if not experiment.export.export_dir:
    raise app.UsageError("--mode=export needs --export_dir, the folder that receives the "
                         "numbered versions. Received: --export_dir=None")
  model_dir = experiment.train.model_dir
  if tf.train.latest_checkpoint(model_dir):
    return {"export_path": run_lib.export_model_dir(experiment)}
  if not experiment.train.init_checkpoint:
    raise app.UsageError(
        "--mode=export needs a checkpoint in --model_dir, or weights to export as they are "
        f"(--pretrained, --init_checkpoint). Received: --model_dir={model_dir} without "
        f"checkpoints, {' and '.join(weights_flags.given_weights_flags(flag_values)) or 'no weights flag'}")
  return {"export_path": run_lib.export_weights(experiment)}


def _predict(experiment, flag_values):
  """Prints the top-k table or JSON to stdout (logs go to stderr)."""
  if not flag_values.images:
    raise app.UsageError("--mode=predict needs --images, image files or folders. "
                         "Received: --images=[]")
  source = experiment.export.export_dir or experiment.train.model_dir
  predictions = predict.predict(source, flag_values.images, experiment.export.top_k)
  print(predict.format_predictions(predictions, flag_values.output), flush=True)
  failed = [prediction.image for prediction in predictions if prediction.error]
  if failed:
    logging.error("%d of %d files could not be classified: %s", len(failed), len(predictions),
                  ", ".join(failed))
  return {"source": source, "images": len(predictions), "failed": len(failed)}


def _train(experiment, flag_values, evaluate):
  """Trains after the last checks: the step's memory (--check_memory), then --clean."""
  strategy = distribute.build_strategy(experiment.runtime)
  if flag_values.check_memory:
    # Before the model and model_dir: a run that cannot fit costs seconds and writes nothing.
    memory.check_train_step(experiment, strategy)
  if flag_values.clean:
    # After every check: a mistake deletes nothing.
    run_state.clean(experiment.train.model_dir)
  return run_lib.train_and_evaluate(experiment, evaluate=evaluate, strategy=strategy)


# mode -> function(ExperimentConfig, flag values) -> stats.
MODES = {
    "train_and_eval": lambda experiment, flag_values: _train(experiment, flag_values, True),
    "train": lambda experiment, flag_values: _train(experiment, flag_values, False),
    "eval": lambda experiment, _: run_lib.evaluate_checkpoint(experiment),
    "continuous_eval": lambda experiment, flag_values: continuous_eval.continuous_evaluate(
        experiment, timeout_s=flag_values.continuous_eval_timeout),
    "export": _export,
    "predict": _predict,
}
if tuple(MODES) != flag_table.MODES:
  raise ImportError(f"--mode's values {flag_table.MODES} differ from MODES {tuple(MODES)}")


def _mode(f):
  if f.skip_eval and f.mode == "eval":
    raise ValueError("--skip_eval leaves --mode=eval nothing to do. Received: --mode=eval --skip_eval")
  # The official --skip_eval: training without evaluations.
  return "train" if f.skip_eval and f.mode == "train_and_eval" else f.mode


def apply_process_settings(f):
  """What the official flags set for the whole process: environment, eager execution."""
  environment = {}
  if f.tf_gpu_thread_mode:
    environment = official_flags.gpu_thread_environment(f.tf_gpu_thread_mode,
                                                        f.per_gpu_thread_count)
  for name, value in environment.items():
    os.environ[name] = value
    logging.info("%s=%s", name, value)
  if f["batchnorm_spatial_persistent"].present:
    if f.batchnorm_spatial_persistent:
      os.environ["TF_USE_CUDNN_BATCHNORM_SPATIAL_PERSISTENT"] = "1"
    else:
      os.environ.pop("TF_USE_CUDNN_BATCHNORM_SPATIAL_PERSISTENT", None)
  eager = f.run_eagerly or not f.use_tf_function
  if eager:
    logging.info("Running the train and eval steps eagerly (--use_tf_function=false or "
                 "--run_eagerly): slow, for debugging.")
  tf.config.run_functions_eagerly(eager)


def run(flag_values=FLAGS):
  """Runs --mode with the parsed flags and returns its stats."""
  try:
    mode = _mode(flag_values)
    if flag_values.clean and mode not in settings.TRAIN_MODES:
      raise ValueError(f"--clean deletes model_dir before training; --mode={mode} would "
                       f"delete the run it acts on. Received: --mode={mode} --clean")
    experiment = settings.experiment_from_flags(flag_values)
    apply_process_settings(flag_values)
  except ValueError as error:
    raise app.UsageError(str(error)) from error
  stats = MODES[mode](experiment, flag_values)
  # The evaluation report has its own log line and files (model_dir/eval/).
  left_out = {"history", *(f"eval_{name}" for name in progress.REPORT_FIELDS)}
  logging.info("Run stats: %s", json.dumps({k: v for k, v in stats.items() if k not in left_out}))
  if mode in settings.TRAIN_MODES:
    logging.info("%s", run_summary.render(stats, experiment))
  return stats


# Mistakes the user can fix: one log line naming the problem and the fix; --verbosity=1 or
# higher adds the traceback.
USER_ERRORS = (ValueError, FileNotFoundError, app.UsageError, run_lock.RunLockedError)


def main(argv):
  try:
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments (flags need --name=value). Received: {argv[1:]}")
    stats = run()
    if stats.get("failed"):
      sys.exit(1)
  except trainer.Preempted as stop:
    logging.warning("%s", stop)
    sys.exit(trainer.EXIT_PREEMPTED)
  except USER_ERRORS as error:
    message = " ".join(str(error).split())
    if isinstance(error, app.UsageError):
      message += " (--helpshort lists the flags.)"
    if FLAGS.verbosity >= 1:
      logging.exception("%s", message)
    else:
      logging.error("%s", message)
    sys.exit(1)


HELP_FLAGS = ("--help", "--helpshort", "-help", "-helpshort", "-?", "-h")


def parse_flags(argv):
  """absl's parsing; --helpshort (and --help) print the flags in flag_table's groups instead
  of absl's one alphabetical list (--helpfull keeps that, with every flag)."""
  if any(argument in HELP_FLAGS for argument in argv[1:]):
    print(table.grouped_help(flag_table.GROUPS, FLAGS, USAGE))
    sys.exit(0)
  return app.parse_flags_with_usage(argv)


# Strategies whose processes end together through TF's coordination service: they exit as
# Python does, so that its shutdown runs.
CLUSTER_STRATEGIES = ("multi_worker_mirrored", "tpu")


def command_main(argv):
  """main() as the command runs it: a run that ends well in a process of its own then exits
  without the interpreter's teardown of TensorFlow (0.7 s of every command on 2 cores; what
  the run writes is written and closed by then). Failures exit as main() has them."""
  main(argv)
  if FLAGS.distribution_strategy in CLUSTER_STRATEGIES:
    return
  # CPython's own exit handlers (tf_noise's among them: it passes on the last lines).
  atexit._run_exitfuncs()  # pylint: disable=protected-access
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(0)  # pylint: disable=protected-access


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  app.run(command_main, flags_parser=parse_flags)

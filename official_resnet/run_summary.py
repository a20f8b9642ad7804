"""What a person reads when training ends, beside the JSON stats: the run's top-1, where its
checkpoints, best checkpoint and export are, and the commands that come next."""
import os
import shlex

import tensorflow as tf

from official_resnet import best_checkpoint

COMMAND = "./run.sh main"
# Where the export command writes when the run has no --export_dir.
DEFAULT_EXPORT_SUBDIR = "export"
# Predict's --images for a run whose data are not image files (synthetic, TFRecords, TFDS).
IMAGES_PLACEHOLDER = "YOUR_IMAGES"


def _top_1_line(history):
  evaluated = [entry for entry in history if "eval_top_1_accuracy" in entry]
  if not evaluated:
    return ("  top-1: not evaluated (--mode=train or --skip_eval); the eval command below "
            "evaluates the last checkpoint")
  # The first of equal values: the step the best checkpoint keeps (a tie does not replace it).
  best = max(evaluated, key=lambda entry: entry["eval_top_1_accuracy"])
  last = evaluated[-1]
  return (f"  top-1: best {best['eval_top_1_accuracy']:.4f} at step {best['step']}, "
          f"last {last['eval_top_1_accuracy']:.4f} at step {last['step']}")


def images_to_predict(data):
  """Predict's --images for a run on `data` (a DataConfig): its validation folder, else its
  image folder; IMAGES_PLACEHOLDER when it was not trained on image files."""
  if data.source != "folder":
    return IMAGES_PLACEHOLDER
  validation = os.path.join(data.data_dir, "validation")
  return validation if tf.io.gfile.isdir(validation) else data.data_dir


def next_commands(experiment):
  """The eval, export, predict and tensorboard commands for the run in experiment's model_dir."""
  model_dir = shlex.quote(experiment.train.model_dir)
  export_dir = experiment.export.export_dir or os.path.join(experiment.train.model_dir,
                                                            DEFAULT_EXPORT_SUBDIR)
  return [f"{COMMAND} --mode=eval --model_dir={model_dir}",
          f"{COMMAND} --mode=export --model_dir={model_dir} --export_dir={shlex.quote(export_dir)}",
          f"{COMMAND} --mode=predict --model_dir={model_dir} "
          f"--images={shlex.quote(images_to_predict(experiment.data))}",
          f"./run.sh tensorboard --logdir={model_dir}"]


def render(stats, experiment):
  """The summary of a training command: `stats` as main.run returns them (history included)
  for the run `experiment` describes; several lines, for one log record."""
  model_dir = experiment.train.model_dir
  lines = ["Run summary:", _top_1_line(stats.get("history", []))]
  latest = tf.train.latest_checkpoint(model_dir)
  lines.append(f"  checkpoints: {model_dir} (latest: "
               f"{os.path.basename(latest) if latest else 'none'})")
  record = best_checkpoint.read(model_dir)
  if record is not None:
    lines.append(f"  best checkpoint: {best_checkpoint.checkpoint_path(model_dir)} "
                 f"({record['metric']} {record['value']:.4g} at step {record['step']}; "
                 "--export_checkpoint=best exports it)")
  if stats.get("export_path"):
    lines.append(f"  export: {stats['export_path']}")
  scalars = [os.path.join(model_dir, kind) for kind in ("train", "eval")
             if tf.io.gfile.isdir(os.path.join(model_dir, kind))]
  if experiment.train.enable_tensorboard and scalars:
    lines.append(f"  TensorBoard scalars: {', '.join(scalars)}")
  lines.append("Next:")
  lines.extend(f"  {command}" for command in next_commands(experiment))
  return "\n".join(lines)

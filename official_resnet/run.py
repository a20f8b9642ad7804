"""A run from start to end, the same for the command line (main.py) and Python callers.

trainer.Trainer trains and evaluates; what surrounds it in a run is here: model_dir's
lock while training, and the export after training, as the official code keeps them
in its command-line layer. With the weights to start from and what they imply set by
initial_weights.start_from:

    experiment = initial_weights.start_from(experiment, "torchvision")
    stats = run.train_and_evaluate(experiment)   # stats["export_path"] with an export_dir
"""
import contextlib

from absl import logging

import input_pipeline
from official_resnet import distribute
from official_resnet import export
from official_resnet import models
from official_resnet import run_lock
from official_resnet import trainer as trainer_lib
from official_resnet.train import evaluator as evaluator_lib


def train_and_evaluate(experiment, evaluate=True, strategy=None):
  """Trains (resuming when model_dir has a checkpoint) and returns the stats also in stats.json.

  With experiment.export.export_dir the chief then exports the final (or best) model there
  (export_model_dir) and stats["export_path"] names the version written.

  The chief holds model_dir's lock throughout, the export included: a second run there
  gets run_lock.RunLockedError before it writes anything.
  """
  export_config = experiment.export
  if (export_config.export_dir and export_config.checkpoint == "best"
      and not (experiment.train.best_metric and evaluate)):
    raise ValueError("export_checkpoint='best' needs a best checkpoint: --best_metric and "
                     "--mode=train_and_eval. Received: best_metric="
                     f"{experiment.train.best_metric!r}, evaluate={evaluate}")
  strategy = strategy or distribute.build_strategy(experiment.runtime)
  # Taken before the model is built, so a refused run costs nothing.
  lock = (run_lock.RunLock(experiment.train.model_dir) if distribute.is_chief(strategy)
          else contextlib.nullcontext())
  with lock:
    trainer = trainer_lib.Trainer(experiment, strategy)
    trainer.restore_or_initialize()
    stats = trainer.train(evaluate=evaluate)
    if export_config.export_dir and trainer.is_chief:
      stats["export_path"] = export_model_dir(experiment)
    return stats


def export_model_dir(experiment):
  """Exports model_dir's checkpoint as experiment.export says (which checkpoint, which
  weights, formats, top-k) into export_dir; returns the version directory written.

  The model is rebuilt from the checkpoint outside any strategy, as a plain float32 model.
  """
  export_config = experiment.export
  return export.export_from_model_dir(
      experiment.train.model_dir, export_config.export_dir, formats=export_config.formats,
      top_k=export_config.top_k, weights=export_config.weights,
      checkpoint=export_config.checkpoint)


def export_weights(experiment):
  """Exports experiment.train.init_checkpoint as it is, head included, without training (the
  weights as published, with the settings experiment has from them); returns the version
  directory written.

  Class names come from the data (--data_dir), else they are the class numbers.
  """
  export_config = experiment.export
  model_config = export.serving_config(experiment.model, experiment.data.eval_size)
  model = models.build_model(model_config)
  models.load_pretrained(model, experiment.train.init_checkpoint, load_head=True)
  class_names = input_pipeline.dataset_info(experiment.data, training=True).class_names
  if experiment.data.source == "synthetic":
    logging.info("Class names 0..%d (the class numbers): give --data_dir to name them as the "
                 "data does.", len(class_names) - 1)
  return export.export_model(model, model_config, experiment.data, class_names,
                             export_config.export_dir, formats=export_config.formats,
                             top_k=export_config.top_k)


def evaluate_checkpoint(experiment, strategy=None):
  """Evaluates model_dir's latest checkpoint (or init_checkpoint); writes eval_stats.json
  and the evaluation report (model_dir/eval/). Builds the model alone: no optimizer."""
  evaluator = evaluator_lib.Evaluator.for_checkpoints(experiment, strategy)
  step = evaluator.restore_or_initialize()
  return evaluator.record(evaluator.reporter(), step, evaluator.evaluate())

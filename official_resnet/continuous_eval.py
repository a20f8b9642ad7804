"""--mode=continuous_eval: an evaluation job beside a training cluster, as the Model Garden's.

It watches model_dir and evaluates each new checkpoint once, with the report of
--mode=eval, until the run's final step (known from the run's config) is evaluated.
Each evaluated step is recorded in model_dir/continuous_eval.json, written whole and
renamed after each evaluation, so a restarted job skips what is done. It takes no run
lock: the trainer holds that one while it trains.

When several checkpoints appear during one evaluation, the latest is evaluated next
(tf.train.checkpoints_iterator), so the job keeps up with training.
"""
import os

from absl import logging
import tensorflow as tf

from official_resnet import progress
from official_resnet import run_state
from official_resnet.train import evaluator as evaluator_lib

# Strategies that run on one host: every worker of a cluster would have to agree on which
# checkpoint to evaluate, and an evaluation job does not need more than one host.
STRATEGIES = ("off", "one_device", "mirrored", "tpu")


def evaluations(model_dir):
  """The entries of model_dir's CONTINUOUS_EVAL_FILE, oldest first; [] when there is none."""
  path = os.path.join(model_dir, run_state.CONTINUOUS_EVAL_FILE)
  if not tf.io.gfile.exists(path):
    return []
  return run_state.read_stats(model_dir, run_state.CONTINUOUS_EVAL_FILE)["evaluations"]


def _complete(checkpoint):
  """Whether the files of `checkpoint` (a path prefix) are there: training deletes old ones."""
  return tf.io.gfile.exists(checkpoint + ".index") and bool(tf.io.gfile.glob(checkpoint + ".data-*"))


def continuous_evaluate(experiment, strategy=None, timeout_s=None):
  """Evaluates model_dir's checkpoints as they appear until the run's final step is done.

  Returns {"final_step", "evaluated_steps" (by this call), "finished", and the eval_*
  fields of the last evaluation, if any}. Stops early, returning, after `timeout_s`
  seconds without a new checkpoint (None: waits as long as it takes).
  """
  name = experiment.runtime.distribution_strategy
  if name not in STRATEGIES:
    raise ValueError(f"mode 'continuous_eval' runs on one host: distribution_strategy must be one "
                     f"of {STRATEGIES}. Received: {name!r}")
  evaluator = evaluator_lib.Evaluator.for_checkpoints(experiment, strategy)
  model_dir, final_step = evaluator.model_dir, evaluator.plan.total_steps
  entries = evaluations(model_dir)
  done = {entry["step"] for entry in entries}
  result = {"final_step": final_step, "evaluated_steps": []}
  if max(done, default=-1) >= final_step:
    logging.info("Step %d, the run's last, is already evaluated (%s): nothing to do.", final_step,
                 os.path.join(model_dir, run_state.CONTINUOUS_EVAL_FILE))
    return {**result, "finished": True}
  logging.info("Watching %s for checkpoints up to step %d (%d evaluated before).", model_dir,
               final_step, len(done))
  reporter = evaluator.reporter()
  for path in tf.train.checkpoints_iterator(model_dir, timeout=timeout_s):
    try:
      step = evaluator.restore(path)
    except tf.errors.OpError:
      if _complete(path):
        raise
      logging.warning("%s was deleted before it could be read (--keep_checkpoints); waiting for "
                      "the next one.", path)
      continue
    if step in done:
      logging.info("%s (step %d) is already evaluated; waiting for a newer checkpoint.", path, step)
    else:
      metrics = evaluator.evaluate()
      result.update(evaluator.record(reporter, step, metrics))
      entries.append({"step": step, "checkpoint": os.path.basename(path),
                      **progress.eval_fields(metrics, with_report=False)})
      done.add(step)
      result["evaluated_steps"].append(step)
      if evaluator.is_chief:
        run_state.write_stats(model_dir, {"evaluations": entries},
                              name=run_state.CONTINUOUS_EVAL_FILE)
    if step >= final_step:
      break
  else:
    logging.warning("No new checkpoint in %s for %s s: stopping before the final step %d was "
                    "evaluated.", model_dir, timeout_s, final_step)
  return {**result, "finished": max(done, default=-1) >= final_step}

"""The loop around a Trainer: phases, pieces of steps, and what the host does between them.

Each phase runs in pieces that end at evaluation points. A piece runs
either the custom loop (the train function called for up to steps_per_loop steps at a
time over a distributed iterator) or Keras' own fit on one host. Between calls the
controller logs, checkpoints, profiles and asks every worker whether one received a
signal; between pieces it evaluates, keeping the best checkpoint when asked.
"""
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from input_pipeline import bad_data
from official_resnet import best_checkpoint
from official_resnet import progress
from official_resnet import run_state
from official_resnet.train import checkpointing
from official_resnet.train import faults
from official_resnet.train import phases as phases_lib


def _next_multiple(step, every):
  return (step // every + 1) * every


class Controller:
  """Trains `trainer` (a trainer.Trainer) from its current step to the end of its last phase.

  `stop_request` is a faults.StopOnSignal and `profiler` a profiling.StepProfiler, both
  entered by the caller; `evaluate` says whether to evaluate at the evaluation points.
  """

  def __init__(self, trainer, evaluate, stop_request, profiler):
    self._trainer = trainer
    self._config = trainer.config.train
    self._steps_per_epoch = trainer.plan.steps_per_epoch
    self._evaluate = evaluate
    self._stop_request = stop_request
    self._profiler = profiler
    self._saver = checkpointing.Saver(trainer.checkpoint, trainer.step, trainer.model_dir,
                                      trainer.strategy, self._config.keep_checkpoints,
                                      before_saving=trainer.sync_replicas)
    self._agree_to_stop = faults.make_agree_to_stop(trainer.strategy)
    self._reporter = progress.Reporter(trainer.model_dir, trainer.plan.total_steps,
                                       active=trainer.is_chief,
                                       tensorboard=self._config.enable_tensorboard,
                                       steps_per_epoch=self._steps_per_epoch)
    self._best = None
    if self._config.best_metric and evaluate:
      self._best = best_checkpoint.BestCheckpoint(trainer.model_dir, self._config.best_metric,
                                                  trainer.is_chief)
    self._phase_ends = {phase.end_step for phase in trainer.plan.phases}
    # Train metrics over the log window, the evaluation interval, the epoch, and the whole
    # run less its first call (tracing and compilation: left out of the throughput figure).
    self._window, self._interval = progress.MetricSums(), progress.MetricSums()
    self._epoch, self._steady = progress.MetricSums(), progress.MetricSums()
    self._first_call = True
    # The step the running piece of steps ends at; its epoch line waits for its evaluation.
    self._piece_end = None

  def _checkpoint_every(self):
    return self._config.checkpoint_steps or self._steps_per_epoch

  def _eval_every(self):
    return max(1, round(self._config.epochs_between_evals * self._steps_per_epoch))

  def run(self):
    """Trains to the end; returns the run's stats, also written to stats.json by the chief."""
    trainer = self._trainer
    began = time.time()
    start_step = trainer.current_step()
    if start_step >= trainer.plan.total_steps:
      logging.info("Step %d already reaches the %d steps to train: nothing trained, nothing "
                   "written (a larger --train_epochs extends the run; --mode=eval evaluates it).",
                   start_step, trainer.plan.total_steps)
      self._reporter.close()
      self._profiler.close()
      return (run_state.finished_stats(trainer.model_dir)
              or self._stats(start_step, [], time.time() - began))
    skipped_before = bad_data.SKIPPED_IMAGES.snapshot()
    phases_lib.warn_about_schedules(trainer.plan, self._config, start_step)
    self._profiler.after(start_step)
    history = []
    last_metrics = None
    self._reporter.show_progress(start_step, self._window)
    for phase in trainer.plan.phases:
      if trainer.current_step() >= phase.end_step:
        continue
      trainer.enter_phase(phase)
      train_function = (trainer.make_train_function()
                        if self._config.training_loop == "custom" else None)
      while (step := trainer.current_step()) < phase.end_step:
        end = min(phase.end_step, _next_multiple(step, self._eval_every()))
        self._piece_end = end
        if train_function is None:
          self._run_fit(step, end)
        else:
          self._run_custom(train_function, step, end)
        evaluation = None
        if end % self._eval_every() == 0 or end == phase.end_step:
          # Throughput goes to the log lines and stats["examples_per_second"]; an interval's
          # would include the first call's tracing.
          entry = {"step": end, "epoch": end / self._steps_per_epoch, "phase": phase.name,
                   "learning_rate": float(trainer.optimizer.learning_rate),
                   **{f"train_{name}": value for name, value in self._interval.result().items()
                      if name != "examples_per_second"}}
          self._interval.reset()
          if self._evaluate:
            evaluation = last_metrics = self._evaluate_and_keep_best(end)
            entry.update(progress.eval_fields(last_metrics, with_report=False))
          history.append(entry)
          if trainer.is_chief:
            run_state.append_history(trainer.model_dir, entry)
        if end % self._steps_per_epoch == 0 or end == trainer.plan.total_steps:
          self._end_epoch(end, evaluation)
      self._saver.save()
    self._reporter.close()
    self._profiler.close()
    stats = self._stats(start_step, history, time.time() - began)
    if last_metrics is not None:
      stats.update(progress.eval_fields(last_metrics))
    stats.update(bad_data.SKIPPED_IMAGES.since(skipped_before))
    if trainer.is_chief:
      # This command's stats, with the history of every run in model_dir.
      stats["history"] = run_state.read_history(trainer.model_dir)
      run_state.write_stats(trainer.model_dir, stats)
    return stats

  def _end_epoch(self, step, evaluation=None):
    self._reporter.epoch_end(step, self._epoch, evaluation)
    self._epoch.reset()

  def _on_steps(self, step, results, steps, seconds):
    """After `steps` steps up to `step`: `results` as make_train_function's, in numbers."""
    trainer = self._trainer
    self._reporter.hide_progress()
    bad_steps = int(results["nonfinite_steps"])
    first_bad = int(results["first_nonfinite_step"])
    learning_rate = float(results["first_nonfinite_learning_rate"])
    if bad_steps and self._config.nan_policy == "stop":
      self._reporter.close()
      raise trainer.divergence_error(first_bad, learning_rate)
    if bad_steps:
      logging.warning("Skipped %d steps whose loss or gradients were NaN or Inf, the first at "
                      "step %d (learning rate %.6g).", bad_steps, first_bad, learning_rate)
    spans = [self._window, self._interval, self._epoch]
    for metric_sums in spans if self._first_call else [*spans, self._steady]:
      metric_sums.add(results, step - steps + 1, step, seconds, skipped=bad_steps)
    self._first_call = False
    self._profiler.after(step)
    if step % self._config.log_steps == 0 or step in self._phase_ends:
      self._reporter.train(step, self._window, trainer.last_learning_rate())
      self._window.reset()
    if step % self._steps_per_epoch == 0 and step != self._piece_end:
      self._end_epoch(step)
    if step % self._checkpoint_every() == 0:
      self._saver.save()
    if self._agree_to_stop(self._stop_request.received is not None):
      self._saver.save()
      self._reporter.close()
      raise faults.Preempted(self._stop_request.received or "another worker's signal", step,
                             trainer.plan.total_steps)
    self._reporter.show_progress(step, self._window)

  def _run_custom(self, train_function, start, end):
    train_input = self._trainer.train_input
    step = start
    steps_per_loop = self._config.steps_per_loop or self._steps_per_epoch
    while step < end:
      # A call stops where the host has something to do: log, epoch line, checkpoint,
      # profile, piece end. The data runs on across epoch ends.
      stop = min(end, step + steps_per_loop, _next_multiple(step, self._config.log_steps),
                 _next_multiple(step, self._steps_per_epoch),
                 _next_multiple(step, self._checkpoint_every()),
                 self._profiler.next_boundary(step) or end)
      iterator = train_input.iterator(step)
      self._reporter.before_call(step)
      began = time.perf_counter()
      results = train_function(iterator, tf.constant(stop - step, tf.int32))
      train_input.advance(iterator, stop)
      self._on_steps(stop, {name: value.numpy() for name, value in results.items()},
                     stop - step, time.perf_counter() - began)
      step = stop

  def _run_fit(self, start, end):
    trainer = self._trainer
    dataset = trainer.train_input.dataset(start)
    callback = _FitSteps(trainer, self._reporter.before_call, self._on_steps,
                         trainer.config.data.batch_size)
    trainer.model.fit(dataset, steps_per_epoch=end - start, epochs=1, verbose=0,
                      callbacks=[callback])

  def _evaluate_and_keep_best(self, step):
    """Evaluates and reports the evaluation weights; keeps a better step as the best."""
    self._reporter.hide_progress()
    metrics = self._trainer.evaluate(average=True)
    if self._best is not None:
      self._best.consider(step, metrics, self._saver.write,
                          scratch_dir=self._saver.scratch_dir(best_checkpoint.DIRECTORY))
    self._reporter.evaluate(step, metrics)
    return metrics

  def _stats(self, start_step, history, wall_time):
    trainer = self._trainer
    step = trainer.current_step()
    stats = {"step": step, "start_step": start_step, "total_steps": trainer.plan.total_steps,
             "steps_per_epoch": self._steps_per_epoch, "epochs": step / self._steps_per_epoch,
             "global_batch_size": trainer.config.data.batch_size,
             "num_replicas": trainer.strategy.num_replicas_in_sync,
             "training_loop": self._config.training_loop,
             "wall_time_s": wall_time, "history": history}
    if self._steady.steps:
      stats["examples_per_second"] = self._steady.result()["examples_per_second"]
    for entry in reversed(history):
      stats.update({name: value for name, value in entry.items()
                    if name.startswith(("train_", "eval_")) and name not in stats})
    return stats


class _FitSteps(keras.callbacks.Callback):
  """Turns fit's running means into per-step sums, and counts the global step.

  fit's loss includes the model's L2 term; the L2 of the weights a step starts from is
  read before it, as the custom loop's step computes it.
  """

  def __init__(self, trainer, before_step, on_steps, global_batch):
    super().__init__()
    self._trainer = trainer
    self._before_step = before_step
    self._on_steps = on_steps
    self._global_batch = global_batch

  def on_train_begin(self, logs=None):
    self._previous = dict.fromkeys(progress.SUM_NAMES, 0.0)
    self._time = time.perf_counter()
    model = self._trainer.model
    # One compiled call a step, not an eager op and a copy to the host per weight.
    self._weights_l2 = tf.function(
        lambda: tf.add_n([tf.cast(term, tf.float32) for term in model.losses])
    ) if model.losses else None

  def on_train_batch_begin(self, batch, logs=None):
    self._before_step(self._trainer.current_step())
    self._l2 = float(self._weights_l2()) if self._weights_l2 is not None else 0.0

  def on_train_batch_end(self, batch, logs=None):
    steps = batch + 1
    examples = steps * self._global_batch
    cumulative = {"loss_sum": logs["loss"] * steps,
                  "top_1_correct": logs["top_1_accuracy"] * examples,
                  "top_k_correct": logs["top_5_accuracy"] * examples, "examples": examples}
    results = {name: cumulative[name] - self._previous[name] for name in progress.SUM_NAMES}
    self._previous = cumulative
    results["l2_sum"] = self._l2
    self._trainer.step.assign_add(1)
    now = time.perf_counter()
    step = self._trainer.current_step()
    finite = np.isfinite(results["loss_sum"])
    results.update(nonfinite_steps=0 if finite else 1, first_nonfinite_step=0 if finite else step,
                   first_nonfinite_learning_rate=(
                       0.0 if finite else float(self._trainer.optimizer.learning_rate)))
    self._on_steps(step, results, 1, now - self._time)
    self._time = now

"""What stops a run early: a signal (Preempted, after a checkpoint) or a diverged loss.

SIGTERM or SIGINT stops the run after the current call of the train function with a
checkpoint, raising Preempted (the command exits with EXIT_PREEMPTED); every worker of a
cluster stops at the same step (make_agree_to_stop). A non-finite loss raises
DivergenceError before anything is saved after it, or skips the step under
nan_policy='skip' (step.py).
"""
import signal
import threading

from absl import logging
import keras
import tensorflow as tf

from official_resnet import distribute

# Exit status of a run stopped by a signal once its checkpoint is saved: EX_TEMPFAIL,
# "temporary failure, run me again"; the same command resumes.
EXIT_PREEMPTED = 75


class Preempted(Exception):
  """Training stopped on SIGTERM/SIGINT after saving a checkpoint at `step`."""

  def __init__(self, signal_name, step, total_steps):
    super().__init__(
        f"Stopped by {signal_name} at step {step} of {total_steps} with a checkpoint of that step. "
        f"Run the same command again to resume (exit status {EXIT_PREEMPTED}: preempted).")
    self.step = step


class DivergenceError(ValueError):
  """A step's loss (or its gradients) was NaN or Inf under nan_policy='stop'."""


def divergence_error(model_dir, optimizer, step, learning_rate):
  """The DivergenceError training raises when global step `step`, at `learning_rate`, gave a
  non-finite loss or gradients under nan_policy='stop'."""
  latest = tf.train.latest_checkpoint(model_dir)
  kept = f"the last good checkpoint is {latest}" if latest else "no checkpoint was saved"
  if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
    what = ("the loss became NaN or Inf (dtype=fp16: dynamic loss scaling already skips steps "
            "whose scaled gradients overflow; this was the loss itself)")
  else:
    what = "the loss or its gradients became NaN or Inf"
  return DivergenceError(
      f"Training diverged at step {step}: {what} at learning rate {learning_rate:.6g}. "
      f"Stopped without saving or exporting after it; {kept}. Lower --base_learning_rate "
      "(or lengthen --warmup_epochs), or pass --nan_policy=skip to skip such steps.")


class StopOnSignal:
  """Turns SIGTERM and SIGINT into a flag the loop reads between calls of the train function.

  Our own handler: tf.distribute's PreemptionCheckpointHandler supports only the
  multi-worker and TPU strategies, and counts its own run calls into the checkpoint.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received = None
    self._previous = {}

  def _handle(self, signum, frame):
    if self.received is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # A second Ctrl-C does not wait for the checkpoint.
    self.received = signal.Signals(signum).name
    logging.warning("Received %s: stopping after the current steps, with a checkpoint.",
                    self.received)

  def __enter__(self):
    # Python runs signal handlers in the main thread only; elsewhere signals keep their effect.
    if threading.current_thread() is threading.main_thread():
      self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
    return self

  def __exit__(self, *exc_info):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}


def make_agree_to_stop(strategy):
  """bool(local stop request) -> whether any worker asked to stop; all workers get the same answer."""
  if distribute.num_workers(strategy) == 1:
    return bool

  @tf.function
  def any_worker(flag):
    per_replica = strategy.run(tf.identity, args=(flag,))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None) > 0

  return lambda requested: bool(any_worker(tf.constant(float(requested))))

"""--profile_steps=first,last: a TensorBoard profiler trace of those training steps.

tf.profiler.experimental.start/stop around the steps, written where the
Keras TensorBoard callback's profile_batch writes it (logdir/plugins/profile/<run>/,
TensorBoard's Profile tab). The training loop ends its calls of the train
function at first - 1 and at last, so the trace holds exactly those steps.
"""
from absl import logging
import tensorflow as tf


class StepProfiler:
  """Traces global steps first..last (1-based, inclusive) into `logdir`; inactive when steps is None."""

  def __init__(self, steps, logdir, active=True):
    self._steps = steps if active else None
    self._logdir = logdir
    self._tracing = False

  def next_boundary(self, step):
    """The first step after `step` where a call of the train function must end; None if none."""
    if self._steps is None:
      return None
    later = [boundary for boundary in (self._steps[0] - 1, self._steps[1]) if boundary > step]
    return min(later) if later else None

  def after(self, step):
    """Starts or stops the trace once `step` steps are done."""
    if self._steps is None:
      return
    first, last = self._steps
    if not self._tracing and first - 1 <= step < last:
      tf.profiler.experimental.start(self._logdir)
      self._tracing = True
      logging.info("Profiling steps %d to %d into %s.", max(first, step + 1), last, self._logdir)
    elif self._tracing and step >= last:
      self.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()

  def close(self):
    if self._tracing:
      tf.profiler.experimental.stop()
      self._tracing = False
      logging.info("Profiler trace written to %s (TensorBoard's Profile tab).", self._logdir)

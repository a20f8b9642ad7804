"""Learning rate schedules: the official piecewise one with linear warm-up, cosine, constant,
step, polynomial and exponential decay, each with a linear warm-up.

Every schedule is a keras LearningRateSchedule with get_config, so an
optimizer holding one serializes, and the rate follows optimizer.iterations,
which the checkpoint restores.
"""
import keras
import tensorflow as tf

from official_resnet import config as config_lib

_PACKAGE = "official_resnet"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PiecewiseConstantWithWarmup(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up from 0 to the peak, then the peak times a multiplier per interval.

  Matches the official PiecewiseConstantDecayWithWarmup: the rate at step s < warmup_steps
  is peak * s / warmup_steps; afterwards peak * multipliers[i], where the i-th interval
  ends at boundaries[i] inclusive (keras PiecewiseConstantDecay's convention).
  """

  def __init__(self, peak_learning_rate, warmup_steps, boundaries, multipliers):
    super().__init__()
    if len(multipliers) != len(boundaries) + 1:
      raise ValueError(
          "multipliers needs one more entry than boundaries. "
          f"Received: {len(boundaries)} boundaries, {len(multipliers)} multipliers")
    self.peak_learning_rate = float(peak_learning_rate)
    self.warmup_steps = int(warmup_steps)
    self.boundaries = [int(b) for b in boundaries]
    self.multipliers = [float(m) for m in multipliers]
    self._piecewise = keras.optimizers.schedules.PiecewiseConstantDecay(
        self.boundaries, [self.peak_learning_rate * m for m in self.multipliers]
    ) if self.boundaries else None

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    after_warmup = (self._piecewise(step) if self._piecewise is not None
                    else tf.constant(self.peak_learning_rate * self.multipliers[0]))
    if self.warmup_steps == 0:
      return after_warmup
    warmup = self.peak_learning_rate * step / self.warmup_steps
    return tf.where(step < self.warmup_steps, warmup, after_warmup)

  def get_config(self):
    return {"peak_learning_rate": self.peak_learning_rate, "warmup_steps": self.warmup_steps,
            "boundaries": self.boundaries, "multipliers": self.multipliers}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConstantSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """A fixed rate; a schedule object (Keras has none) so phases can be composed uniformly."""

  def __init__(self, learning_rate):
    super().__init__()
    self.learning_rate = float(learning_rate)

  def __call__(self, step):
    return tf.constant(self.learning_rate, tf.float32)

  def get_config(self):
    return {"learning_rate": self.learning_rate}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
  """Rises linearly from 0 over warmup_steps to where `after_warmup` is, then follows it.

  Keras' Polynomial and ExponentialDecay have no warm-up of their own. `after_warmup`
  counts steps from the end of the warm-up when `shift` (a decay spread over the steps
  after it, as cosine's), else from step 0 (decay at fixed epochs, as piecewise's); the
  warm-up ends at its rate at that point, so the rate is continuous.
  """

  def __init__(self, after_warmup, warmup_steps, shift):
    super().__init__()
    if isinstance(after_warmup, dict):
      after_warmup = keras.optimizers.schedules.deserialize(after_warmup)
    self.after_warmup = after_warmup
    self.warmup_steps = int(warmup_steps)
    self.shift = bool(shift)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    offset = float(self.warmup_steps) if self.shift else 0.0
    after = tf.cast(self.after_warmup(tf.maximum(step - offset, 0.0)), tf.float32)
    if self.warmup_steps == 0:
      return after
    target = tf.cast(self.after_warmup(float(self.warmup_steps) - offset), tf.float32)
    return tf.where(step < self.warmup_steps, target * step / self.warmup_steps, after)

  def get_config(self):
    return {"after_warmup": keras.optimizers.schedules.serialize(self.after_warmup),
            "warmup_steps": self.warmup_steps, "shift": self.shift}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PhasedSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """Runs schedules[i] from start_steps[i], counting steps from that phase's start."""

  def __init__(self, start_steps, schedules):
    super().__init__()
    if len(start_steps) != len(schedules) or not start_steps or start_steps[0] != 0:
      raise ValueError(
          "start_steps must begin at 0 and have one entry per schedule. "
          f"Received: start_steps={list(start_steps)}, {len(schedules)} schedules")
    self.start_steps = [int(s) for s in start_steps]
    self.schedules = [keras.optimizers.schedules.deserialize(s) if isinstance(s, dict) else s
                      for s in schedules]

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    rate = self.schedules[0](step)
    for start, schedule in zip(self.start_steps[1:], self.schedules[1:]):
      rate = tf.where(step >= start, tf.cast(schedule(step - start), tf.float32), rate)
    return rate

  def get_config(self):
    return {"start_steps": self.start_steps,
            "schedules": [keras.optimizers.schedules.serialize(s) for s in self.schedules]}


def _warmup_steps(schedule_config, steps_per_epoch, total_steps):
  if schedule_config.warmup_epochs is None:
    return int(round(config_lib.WARMUP_FRACTION * total_steps))
  return int(round(schedule_config.warmup_epochs * steps_per_epoch))


def _decay_steps(schedule_config, steps_per_epoch, total_steps):
  if schedule_config.decay_epochs is None:
    return [int(round(fraction * total_steps)) for fraction in config_lib.DECAY_FRACTIONS]
  return [int(round(epoch * steps_per_epoch)) for epoch in schedule_config.decay_epochs]


def build_schedule(schedule_config, batch_size, steps_per_epoch, total_steps):
  """The LearningRateSchedule of one phase of `total_steps` steps."""
  peak = schedule_config.peak_learning_rate(batch_size)
  warmup_steps = _warmup_steps(schedule_config, steps_per_epoch, total_steps)
  name = schedule_config.name
  if name == "piecewise":
    boundaries = _decay_steps(schedule_config, steps_per_epoch, total_steps)
    multipliers = [schedule_config.decay_factor ** i for i in range(len(boundaries) + 1)]
    return PiecewiseConstantWithWarmup(peak, warmup_steps, boundaries, multipliers)
  if name == "cosine":
    decay_steps = max(total_steps - warmup_steps, 1)
    if warmup_steps == 0:
      return keras.optimizers.schedules.CosineDecay(peak, decay_steps, alpha=schedule_config.cosine_alpha)
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps, alpha=schedule_config.cosine_alpha, warmup_target=peak,
        warmup_steps=warmup_steps)
  if name == "constant":
    return ConstantSchedule(peak)
  if name in ("step", "exponential"):
    decay_steps = max(1, int(round(schedule_config.decay_every_epochs * steps_per_epoch)))
    decay = keras.optimizers.schedules.ExponentialDecay(
        peak, decay_steps, schedule_config.decay_factor, staircase=name == "step")
    return LinearWarmup(decay, warmup_steps, shift=False)
  if name == "polynomial":
    decay = keras.optimizers.schedules.PolynomialDecay(
        peak, max(total_steps - warmup_steps, 1),
        end_learning_rate=peak * schedule_config.polynomial_end_fraction,
        power=schedule_config.polynomial_power)
    return LinearWarmup(decay, warmup_steps, shift=True)
  raise ValueError(f"lr_schedule must be one of {config_lib.SCHEDULES}. Received: {name!r}")


def outside_the_phase(schedule_config, steps_per_epoch, total_steps):
  """What of the schedule falls outside a phase of `total_steps` steps; "" when it all fits.

  Given epochs can put the warm-up's end or the decays past the phase's end (the
  official 5 warm-up epochs and decays at 30/60/80 in a 5-epoch run): the rate then
  never reaches its peak, or never decays.
  """
  problems = []
  if schedule_config.name in ("piecewise", "cosine"):
    warmup_steps = _warmup_steps(schedule_config, steps_per_epoch, total_steps)
    if warmup_steps >= total_steps:
      problems.append(f"the warm-up ({schedule_config.warmup_epochs:g} epochs, {warmup_steps} "
                      "steps) does not end before it, so the rate never reaches its peak")
  if schedule_config.name == "piecewise":
    late = [epoch for epoch, step in zip(
        schedule_config.decay_epochs or (), _decay_steps(schedule_config, steps_per_epoch,
                                                         total_steps)) if step >= total_steps]
    if late:
      problems.append(f"the decays at epochs {', '.join(f'{e:g}' for e in late)} come after it")
  return "; ".join(problems)

"""An exponential moving average of every model weight, BatchNorm statistics included.

After each training step, average -= (1 - decay) * (average - weight), with decay
min(decay, (1 + n) / (10 + n)) after n updates when warming up, the averages starting
from the weights: tf.train.ExponentialMovingAverage with num_updates = n. Not the Model
Garden's dynamic decay, which counts optimizer steps (its first update already uses
2 / 11) and starts its averages at zero. Averaging the moving statistics too is what
timm's ModelEma and the Model Garden's `trainable_weights_only=False` do, so the averaged
network normalizes with statistics averaged alike.

Our own rather than Keras' `use_ema` (trainable weights only, no warm-up, no way to
evaluate the average without overwriting the weights) or tf.train.ExponentialMovingAverage
(not trackable, and in replica context it all-reduces every average each step): here
each device's copy of an average follows its own copy of the weight with no
communication, the averages are tracked for checkpoints under `state`, and `swap` trades
weights and averages exactly (by copying) for evaluation and back.
"""
import tensorflow as tf

CHECKPOINT_KEY = "ema"


def average_state(averages, num_updates):
  """The trackable part: checkpoint it as `ema` (CHECKPOINT_KEY) beside the model."""
  state = tf.Module(name="weight_average")
  state.averages = list(averages)
  state.num_updates = num_updates
  return state


def state_like(model):
  """Zero variables in the layout of `model`'s average state, to restore a checkpoint's into."""
  return average_state([tf.Variable(tf.zeros(w.shape, w.dtype), trainable=False)
                        for w in model.weights], tf.Variable(0, dtype=tf.int64, trainable=False))


def checkpoint_has_average(checkpoint_path):
  """Whether the checkpoint at `checkpoint_path` holds an average of the weights."""
  return any(name.startswith(f"{CHECKPOINT_KEY}/")
             for name, _ in tf.train.list_variables(checkpoint_path))


def _swap(weight, average):
  previous = tf.identity(weight)
  weight.assign(average)
  average.assign(previous)
  return weight


class WeightAverage:
  """The average of `model`'s weights under `strategy`; build it inside strategy.scope().

  update() and swap() run in cross-replica context (outside strategy.run), on each
  device's copies.
  """

  def __init__(self, model, decay, warmup, strategy):
    if not 0.0 < decay < 1.0:
      raise ValueError(f"decay must be in (0, 1). Received: {decay!r}")
    self.decay = decay
    self.warmup = warmup
    self._strategy = strategy
    self._weights = [weight.value for weight in model.weights]
    self._statistics = [i for i, weight in enumerate(model.weights) if not weight.trainable]
    self.state = average_state(
        [tf.Variable(weight, trainable=False, name=f"average_{i}")
         for i, weight in enumerate(self._weights)],
        tf.Variable(0, dtype=tf.int64, trainable=False, name="num_updates",
                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA))
    self._swap_function = None

  @property
  def averages(self):
    return self.state.averages

  @property
  def statistics(self):
    """The averages of the BatchNorm statistics: each replica's follow its own statistics,
    so the trainer averages them across replicas with the statistics themselves."""
    return [self.averages[i] for i in self._statistics]

  def reset(self):
    """Averages := the weights, no updates yet (a new run, or weights loaded from elsewhere)."""
    for average, weight in zip(self.averages, self._weights):
      average.assign(weight)
    self.state.num_updates.assign(0)

  def current_decay(self):
    """The decay the next update uses (float32 scalar)."""
    decay = tf.constant(self.decay, tf.float32)
    if not self.warmup:
      return decay
    updates = tf.cast(self.state.num_updates, tf.float32)
    return tf.minimum(decay, (1.0 + updates) / (10.0 + updates))

  def update(self):
    """One step of every average towards its weight; call in a tf.function, cross-replica."""
    keep = tf.cast(1.0 - self.current_decay(), tf.float32)
    strategy = self._strategy
    with strategy.scope():
      for average, weight in zip(self.averages, self._weights):
        strategy.extended.update(
            average, lambda a, w: a.assign_sub((a - w) * tf.cast(keep, a.dtype)), args=(weight,),
            group=False)
      self.state.num_updates.assign_add(1)

  def swap(self):
    """Trades the model's weights and the averages; calling it twice restores both exactly."""
    if self._swap_function is None:
      strategy = self._strategy

      @tf.function
      def swap_all():
        with strategy.scope():
          for average, weight in zip(self.averages, self._weights):
            strategy.extended.update(weight, _swap, args=(average,), group=False)

      self._swap_function = swap_all
    self._swap_function()

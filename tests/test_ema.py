"""The average of the weights is tf.train.ExponentialMovingAverage's, as official_resnet/ema.py
says: its warm-up with num_updates = the updates so far, the averages starting from the
weights."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from official_resnet import ema

DECAY = 0.9


@pytest.mark.parametrize("warmup", [True, False])
def test_updates_equal_tf_train_exponential_moving_average(warmup):
  model = keras.Sequential([keras.Input([3]), keras.layers.Dense(2)])
  strategy = tf.distribute.get_strategy()
  average = ema.WeightAverage(model, DECAY, warmup, strategy)
  average.reset()
  num_updates = tf.Variable(0, dtype=tf.int64)
  reference = tf.train.ExponentialMovingAverage(
      DECAY, num_updates=num_updates if warmup else None)
  variables = [weight.value for weight in model.weights]
  # Creates its averages from the weights; this first update moves nothing.
  reference.apply(variables)
  rng = np.random.default_rng(0)
  for n in range(12):
    for weight in model.weights:
      weight.assign(rng.standard_normal(weight.shape).astype(np.float32))
    average.update()
    num_updates.assign(n)
    reference.apply(variables)
    for ours, variable in zip(average.averages, variables):
      np.testing.assert_allclose(ours.numpy(), reference.average(variable).numpy(), rtol=1e-6,
                                 atol=1e-7)
  assert int(average.state.num_updates.numpy()) == 12
  assert float(average.current_decay()) == pytest.approx(13 / 22 if warmup else DECAY)

import dataclasses
import json

import keras
import tensorflow as tf
import numpy as np
import pytest

from official_resnet import config as config_lib
from official_resnet import optimizers
from official_resnet import schedules

STEPS_PER_EPOCH = 10


def rates(schedule, steps):
  return np.array([float(schedule(step)) for step in steps])


def test_official_piecewise_schedule_at_its_boundaries():
  # The official recipe at batch 512: peak 0.1 * 512 / 256, warm-up 5 epochs, x0.1 at 30/60/80.
  schedule = schedules.build_schedule(config_lib.OFFICIAL_IMAGENET_SCHEDULE, 512,
                                      STEPS_PER_EPOCH, 900)
  peak = 0.2
  warmup = 5 * STEPS_PER_EPOCH
  np.testing.assert_allclose(
      rates(schedule, [0, 1, warmup // 2, warmup - 1, warmup]),
      [0.0, peak / warmup, peak / 2, peak * (warmup - 1) / warmup, peak], rtol=1e-6)
  for epoch, multiplier in ((30, 1.0), (60, 0.1), (80, 0.01)):
    boundary = epoch * STEPS_PER_EPOCH
    # keras PiecewiseConstantDecay: a boundary step still has the rate before it.
    np.testing.assert_allclose(rates(schedule, [boundary, boundary + 1]),
                               [peak * multiplier, peak * multiplier * 0.1], rtol=1e-6)
  np.testing.assert_allclose(rates(schedule, [10_000]), [peak * 1e-3], rtol=1e-6)


def test_schedules_without_epochs_fit_the_run():
  steps = np.arange(0, 1000)
  piecewise = config_lib.ScheduleConfig(name="piecewise")
  official = schedules.build_schedule(config_lib.OFFICIAL_IMAGENET_SCHEDULE, 256,
                                      STEPS_PER_EPOCH, 900)
  # Piecewise without epochs is the official schedule over 90 epochs...
  np.testing.assert_array_equal(
      rates(schedules.build_schedule(piecewise, 256, STEPS_PER_EPOCH, 900), steps),
      rates(official, steps))
  # ...and its shape shrunk to five epochs of 10 steps: warm-up over round(50 * 5/90) = 3
  # steps, decays at steps round(50 / 3) = 17, 33 and 44.
  short = schedules.build_schedule(piecewise, 256, STEPS_PER_EPOCH, 50)
  np.testing.assert_allclose(
      rates(short, [0, 1, 3, 17, 18, 33, 34, 44, 45, 49]),
      [0.0, 0.1 / 3, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 1e-4, 1e-4], rtol=1e-5)
  # The default: the same warm-up, then a cosine decay to zero at the run's end.
  default = schedules.build_schedule(config_lib.ScheduleConfig(), 256, STEPS_PER_EPOCH, 50)
  np.testing.assert_allclose(rates(default, [0, 3, 3 + 47 // 2, 50]),
                             [0.0, 0.1, 0.05 * (1 + np.cos(np.pi * 23 / 47)), 0.0], atol=1e-6)
  # Nothing the defaults give falls outside the run, however short.
  for config in (config_lib.ScheduleConfig(), piecewise):
    for total_steps in (1, 2, 50, 900):
      assert schedules.outside_the_phase(config, STEPS_PER_EPOCH, total_steps) == ""


def test_given_epochs_outside_the_phase_are_named():
  official = schedules.outside_the_phase(config_lib.OFFICIAL_IMAGENET_SCHEDULE, STEPS_PER_EPOCH,
                                         total_steps=50)
  assert official == ("the warm-up (5 epochs, 50 steps) does not end before it, so the rate "
                      "never reaches its peak; the decays at epochs 30, 60, 80 come after it")
  late = config_lib.ScheduleConfig(name="piecewise", warmup_epochs=1, decay_epochs=(2.0, 7.5))
  assert schedules.outside_the_phase(late, STEPS_PER_EPOCH, total_steps=60) == (
      "the decays at epochs 7.5 come after it")
  assert schedules.outside_the_phase(late, STEPS_PER_EPOCH, total_steps=80) == ""
  # A constant rate has neither.
  constant = dataclasses.replace(config_lib.OFFICIAL_IMAGENET_SCHEDULE, name="constant")
  assert schedules.outside_the_phase(constant, STEPS_PER_EPOCH, total_steps=5) == ""


def test_cosine_schedule_warms_up_then_decays_to_alpha():
  config = config_lib.ScheduleConfig(name="cosine", base_learning_rate=0.4, base_batch_size=None,
                                     warmup_epochs=1, cosine_alpha=0.1)
  schedule = schedules.build_schedule(config, 256, STEPS_PER_EPOCH, total_steps=110)
  np.testing.assert_allclose(
      rates(schedule, [0, 5, 10, 60, 110, 200]),
      [0.0, 0.2, 0.4, 0.4 * (0.1 + 0.9 * 0.5), 0.04, 0.04], rtol=1e-5, atol=1e-7)


def test_cosine_without_warm_up_starts_at_the_peak():
  config = config_lib.ScheduleConfig(name="cosine", base_learning_rate=0.1, warmup_epochs=0)
  schedule = schedules.build_schedule(config, 512, STEPS_PER_EPOCH, total_steps=100)
  np.testing.assert_allclose(rates(schedule, [0, 50, 100]), [0.2, 0.1, 0.0], atol=1e-7)


def test_constant_schedule_scales_with_batch_only_when_asked():
  scaled = schedules.build_schedule(config_lib.ScheduleConfig(name="constant"), 1024, 10, 100)
  as_is = schedules.build_schedule(
      config_lib.ScheduleConfig(name="constant", base_batch_size=None), 1024, 10, 100)
  np.testing.assert_allclose(rates(scaled, [0, 99]), [0.4, 0.4], rtol=1e-6)
  np.testing.assert_allclose(rates(as_is, [0, 99]), [0.1, 0.1], rtol=1e-6)


def test_phased_schedule_counts_each_phase_from_its_start():
  head = schedules.ConstantSchedule(0.01)
  body = schedules.PiecewiseConstantWithWarmup(0.1, warmup_steps=4, boundaries=[10], multipliers=[1, 0.5])
  schedule = schedules.PhasedSchedule([0, 20], [head, body])
  np.testing.assert_allclose(rates(schedule, [0, 19, 20, 22, 24, 30, 31]),
                             [0.01, 0.01, 0.0, 0.05, 0.1, 0.1, 0.05], rtol=1e-6)


@pytest.mark.parametrize("name", config_lib.SCHEDULES)
def test_schedules_survive_serialization(name):
  schedule = schedules.PhasedSchedule(
      [0, 7], [schedules.ConstantSchedule(0.3),
               schedules.build_schedule(config_lib.ScheduleConfig(name=name), 256, 5, 50)])
  as_json = json.dumps(keras.optimizers.schedules.serialize(schedule))
  restored = keras.optimizers.schedules.deserialize(json.loads(as_json))
  assert isinstance(restored, schedules.PhasedSchedule)
  steps = [0, 6, 7, 9, 20, 31, 49, 60]
  np.testing.assert_allclose(rates(restored, steps), rates(schedule, steps), rtol=1e-6)
  # An optimizer holding the schedule round-trips through its config as well.
  optimizer = keras.optimizers.SGD.from_config(keras.optimizers.SGD(schedule).get_config())
  assert float(optimizer.learning_rate) == pytest.approx(0.3)


@pytest.mark.parametrize("name,warmup_epochs", [("step", 1), ("exponential", 1), ("step", 0)])
def test_step_and_exponential_decay_at_fixed_epochs_after_warm_up(name, warmup_epochs):
  config = config_lib.ScheduleConfig(name=name, base_learning_rate=0.4, base_batch_size=None,
                                     warmup_epochs=warmup_epochs, decay_factor=0.5,
                                     decay_every_epochs=2)
  schedule = schedules.build_schedule(config, 256, STEPS_PER_EPOCH, total_steps=100)
  steps = [0, 5, 10, 19, 20, 30, 45]
  every = 2 * STEPS_PER_EPOCH
  if name == "step":
    after = [0.4 * 0.5 ** (s // every) for s in steps]
  else:
    after = [0.4 * 0.5 ** (s / every) for s in steps]
  # Epochs count from step 0; the warm-up rises to where the decay is at its end.
  warmup = 10 * warmup_epochs
  expected = [after[steps.index(10)] * s / warmup if s < warmup else rate
              for s, rate in zip(steps, after)] if warmup else after
  np.testing.assert_allclose(rates(schedule, steps), expected, rtol=1e-5)


def test_polynomial_decay_spans_the_steps_after_warm_up():
  config = config_lib.ScheduleConfig(name="polynomial", base_learning_rate=0.2, base_batch_size=None,
                                     warmup_epochs=1, polynomial_power=2.0,
                                     polynomial_end_fraction=0.1)
  schedule = schedules.build_schedule(config, 256, STEPS_PER_EPOCH, total_steps=110)
  # Warm-up to 0.2 over 10 steps, then (0.2 - 0.02) (1 - t/100)^2 + 0.02, flat at the end.
  steps = [0, 5, 10, 35, 60, 110, 150]
  expected = [0.0, 0.1, 0.2] + [0.18 * (1 - (s - 10) / 100) ** 2 + 0.02 for s in (35, 60, 110)] + [0.02]
  np.testing.assert_allclose(rates(schedule, steps), expected, rtol=1e-5, atol=1e-7)


def test_bad_schedule_values_name_the_setting():
  with pytest.raises(ValueError, match=r"lr_schedule must be one of .*'piecewise'.*Received: 'linear'"):
    config_lib.ScheduleConfig(name="linear")
  with pytest.raises(ValueError, match=r"polynomial_end_fraction must be in \[0, 1\]. Received: 2.0"):
    config_lib.ScheduleConfig(polynomial_end_fraction=2.0)
  with pytest.raises(ValueError, match=r"lr_decay_every_epochs must be > 0. Received: 0"):
    config_lib.ScheduleConfig(decay_every_epochs=0)
  with pytest.raises(ValueError, match=r"lr_decay_epochs must be positive and increasing"):
    config_lib.ScheduleConfig(decay_epochs=(60.0, 30.0))
  with pytest.raises(ValueError, match="multipliers needs one more entry"):
    schedules.PiecewiseConstantWithWarmup(0.1, 0, boundaries=[1, 2], multipliers=[1.0])


def test_optimizers_follow_their_config():
  model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(2, 3),
                            keras.layers.BatchNormalization(), keras.layers.Flatten(),
                            keras.layers.Dense(2)])
  sgd = optimizers.build_optimizer(config_lib.OptimizerConfig(nesterov=True), 0.1)
  assert isinstance(sgd, keras.optimizers.SGD) and sgd.nesterov and sgd.momentum == 0.9
  adam = optimizers.build_optimizer(config_lib.OptimizerConfig(name="adam", beta_1=0.8), 0.1)
  assert type(adam) is keras.optimizers.Adam and adam.beta_1 == 0.8
  adamw = optimizers.build_optimizer(
      config_lib.OptimizerConfig(name="adamw", weight_decay=0.05), 0.1, model=model)
  assert isinstance(adamw, keras.optimizers.AdamW) and adamw.weight_decay == 0.05
  # Biases and BatchNorm parameters are exempt from decay, kernels are not.
  exempt = {id(v) for v in optimizers.decay_exempt_variables(model)}
  conv, batch_norm, dense = model.layers[0], model.layers[1], model.layers[3]
  assert exempt == {id(conv.bias), id(batch_norm.gamma), id(batch_norm.beta), id(dense.bias)}
  dynamic = optimizers.build_optimizer(config_lib.OptimizerConfig(), 0.1,
                                       dtype_policy="mixed_float16")
  assert isinstance(dynamic, keras.optimizers.LossScaleOptimizer)
  # fp32 ignores a loss scale, as the official code does.
  assert optimizers.build_optimizer(config_lib.OptimizerConfig(), 0.1, loss_scale=128.0
                                    ).loss_scale_factor is None
  with pytest.raises(ValueError, match="nesterov applies to optimizer='sgd' or 'lars' only"):
    config_lib.OptimizerConfig(name="adam", nesterov=True)


def test_a_fixed_loss_scale_scales_the_loss_and_unscales_the_update():
  """The official --loss_scale=128: a constant factor, never adjusted, the update unchanged."""
  optimizer = optimizers.build_optimizer(config_lib.OptimizerConfig(momentum=0.0), 0.1,
                                         dtype_policy="mixed_float16", loss_scale=128.0)
  assert not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
  variable = tf.Variable(1.0)
  for _ in range(3):
    with tf.GradientTape() as tape:
      scaled = optimizer.scale_loss(3.0 * variable)
    gradient = tape.gradient(scaled, variable)
    assert float(scaled) == pytest.approx(128.0 * 3.0 * float(variable))
    assert float(gradient) == 384.0
    optimizer.apply([gradient], [variable])
  # Three plain SGD steps of gradient 3 at rate 0.1.
  assert float(variable) == pytest.approx(1.0 - 3 * 0.1 * 3.0)
  assert optimizer.loss_scale_factor == 128.0

"""Losses on soft targets and the optimizers against NumPy: BCE, LARS, LAMB, RMSprop, decay
exemptions; our fused SGD against Keras' SGD."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from official_resnet import config as config_lib
from official_resnet import losses
from official_resnet import optimizers

LOGITS = np.array([[2.0, -0.5, 0.3, -3.0], [0.1, 1.5, -1.0, 4.0], [-2.0, 0.0, 0.5, 1.0]],
                  np.float32)


def log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


def numpy_bce(targets, logits):
  return -(targets * log_sigmoid(logits) + (1 - targets) * log_sigmoid(-logits)).mean(axis=1)


def test_binary_crossentropy_matches_its_formula_on_soft_and_thresholded_targets():
  targets = np.array([[0.7, 0.3, 0.0, 0.0], [0.025, 0.925, 0.025, 0.025], [0.0, 0.0, 0.15, 0.85]],
                     np.float32)
  np.testing.assert_allclose(losses.per_example_binary_crossentropy(targets, LOGITS),
                             numpy_bce(targets, LOGITS), rtol=1e-5)
  # timm's target_threshold: above 0.2 counts as 1, the rest as 0.
  np.testing.assert_allclose(losses.per_example_binary_crossentropy(targets, LOGITS, 0.2),
                             numpy_bce((targets > 0.2).astype(np.float32), LOGITS), rtol=1e-5)
  # From integer labels, smoothed as timm smooths: 1 - s + s/C on the label, s/C elsewhere.
  labels = np.array([1, 3, 0])
  smoothed = np.full((3, 4), 0.1 / 4, np.float32)
  smoothed[np.arange(3), labels] += 0.9
  np.testing.assert_allclose(
      losses.per_example_loss(labels, LOGITS, loss="bce", label_smoothing=0.1),
      numpy_bce(smoothed, LOGITS), rtol=1e-5)
  compiled = losses.compile_loss("bce", 0.1)
  assert float(compiled(labels, LOGITS)) == pytest.approx(numpy_bce(smoothed, LOGITS).mean(), rel=1e-5)
  restored = losses.SparseBinaryCrossentropy.from_config(
      losses.SparseBinaryCrossentropy(0.1, 0.2).get_config())
  assert (restored.label_smoothing, restored.target_threshold) == (0.1, 0.2)


def test_softmax_crossentropy_on_soft_targets_matches_its_formula():
  targets = np.array([[0.6, 0.4, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.25, 0.25]],
                     np.float32)
  log_softmax = LOGITS - np.log(np.exp(LOGITS).sum(axis=1, keepdims=True))
  np.testing.assert_allclose(losses.per_example_loss(None, LOGITS, targets=targets),
                             -(targets * log_softmax).sum(axis=1), rtol=1e-5)
  # Labels without targets keep the sparse path.
  np.testing.assert_allclose(losses.per_example_loss(np.array([0, 3, 2]), LOGITS),
                             -log_softmax[[0, 1, 2], [0, 3, 2]], rtol=1e-5)


def apply_steps(optimizer, variables, gradients):
  """Applies each entry of `gradients` (one list per step) and returns the values after each step."""
  values = []
  for step_gradients in gradients:
    optimizer.apply([tf.constant(g) for g in step_gradients], variables)
    values.append([v.numpy().copy() for v in variables])
  return values


RNG = np.random.default_rng(0)
START = [RNG.normal(size=(3, 4)).astype(np.float32), RNG.normal(size=(4,)).astype(np.float32)]
GRADIENTS = [[RNG.normal(size=(3, 4)).astype(np.float32), RNG.normal(size=(4,)).astype(np.float32)]
             for _ in range(3)]


def fresh_variables():
  return [keras.Variable(value, name=name) for value, name in zip(START, ("kernel", "bias"))]


def sgd_run(optimizer_class, *, nesterov, weight_decay, strategy, compiled, loss_scaled=False):
  """Weights and velocities, flattened into one array per step, after each of GRADIENTS' steps
  of `optimizer_class` (an SGD) with momentum 0.9, a piecewise rate, and the "bias" exempt
  from weight decay."""
  with strategy.scope():
    variables = fresh_variables()
    rate = keras.optimizers.schedules.PiecewiseConstantDecay([1], [0.3, 0.1])
    optimizer = optimizer_class(rate, momentum=0.9, nesterov=nesterov, weight_decay=weight_decay)
    optimizer.exclude_from_weight_decay(var_list=[variables[1]])
    if loss_scaled:
      optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=8.0)
    optimizer.build(variables)
  replicas = strategy.num_replicas_in_sync

  def replica_step(gradients):
    # Each replica's share: the optimizer sums the replicas' gradients.
    optimizer.apply([g * optimizer.scale_loss(1.0) / replicas for g in gradients], variables)

  def step(gradients):
    strategy.run(replica_step, args=(gradients,))

  step = tf.function(step) if compiled else step
  momentums = (optimizer.inner_optimizer if loss_scaled else optimizer).momentums
  values = []
  for step_gradients in GRADIENTS:
    step([tf.constant(g) for g in step_gradients])
    values.append(flat([v.numpy() for v in variables] + [m.numpy() for m in momentums]))
  return values


def flat(arrays):
  return np.concatenate([array.ravel() for array in arrays])


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("weight_decay", [None, 0.05])
@pytest.mark.parametrize("compiled", [False, True])
def test_fused_sgd_equals_keras_sgd_bit_for_bit(nesterov, weight_decay, compiled):
  strategy = tf.distribute.get_strategy()
  ours = sgd_run(optimizers.SGD, nesterov=nesterov, weight_decay=weight_decay,
                 strategy=strategy, compiled=compiled)
  keras_sgd = sgd_run(keras.optimizers.SGD, nesterov=nesterov, weight_decay=weight_decay,
                      strategy=strategy, compiled=compiled)
  np.testing.assert_array_equal(ours, keras_sgd)
  # Keras' formula, v = 0.9 v - lr g, w += v (Nesterov: w += 0.9 v - lr g), with decay first.
  weights, velocities = [w.copy() for w in START], [np.zeros_like(w) for w in START]
  for step, step_gradients in enumerate(GRADIENTS):
    rate = 0.3 if step <= 1 else 0.1
    for i, gradient in enumerate(step_gradients):
      if weight_decay and i == 0:
        weights[i] = weights[i] - weights[i] * weight_decay * rate
      velocities[i] = 0.9 * velocities[i] - rate * gradient
      weights[i] = weights[i] + (0.9 * velocities[i] - rate * gradient if nesterov
                                 else velocities[i])
    np.testing.assert_allclose(ours[step], flat(weights + velocities), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_fused_sgd_equals_keras_sgd_on_two_replicas_with_loss_scaling(nesterov):
  mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  runs = {optimizer_class: sgd_run(optimizer_class, nesterov=nesterov, weight_decay=0.05,
                                   strategy=mirrored, compiled=True, loss_scaled=True)
          for optimizer_class in (optimizers.SGD, keras.optimizers.SGD)}
  np.testing.assert_array_equal(runs[optimizers.SGD], runs[keras.optimizers.SGD])
  one_replica = sgd_run(optimizers.SGD, nesterov=nesterov, weight_decay=0.05,
                        strategy=tf.distribute.get_strategy(), compiled=True)
  np.testing.assert_allclose(runs[optimizers.SGD], one_replica, rtol=1e-6, atol=1e-7)


def test_fused_sgd_reads_and_writes_keras_sgd_checkpoints(tmp_path):
  variables = fresh_variables()
  keras_sgd = keras.optimizers.SGD(0.1, momentum=0.9)
  keras_sgd.apply([tf.constant(g) for g in GRADIENTS[0]], variables)
  path = tf.train.Checkpoint(optimizer=keras_sgd).write(str(tmp_path / "keras_sgd"))
  ours = optimizers.build_optimizer(config_lib.OptimizerConfig(name="sgd"), 0.1)
  ours.build(fresh_variables())
  tf.train.Checkpoint(optimizer=ours).read(path).assert_consumed()
  np.testing.assert_array_equal(flat([m.numpy() for m in ours.momentums]),
                                flat([m.numpy() for m in keras_sgd.momentums]))
  assert np.abs(flat([m.numpy() for m in ours.momentums])).min() > 0
  assert [m.name for m in ours.momentums] == [m.name for m in keras_sgd.momentums]
  ours_path = tf.train.Checkpoint(optimizer=ours).write(str(tmp_path / "ours"))
  assert tf.train.list_variables(ours_path) == tf.train.list_variables(path)
  restored = keras.optimizers.deserialize(keras.optimizers.serialize(ours))
  assert isinstance(restored, optimizers.SGD) and restored.momentum == 0.9


@pytest.mark.parametrize("nesterov", [False, True])
def test_lars_matches_the_model_garden_update(nesterov):
  rate, momentum, decay, eta = 0.5, 0.9, 0.01, 0.002
  variables = fresh_variables()
  optimizer = optimizers.Lars(rate, momentum=momentum, weight_decay_rate=decay,
                              trust_coefficient=eta, nesterov=nesterov)
  # The "bias" is excluded, as BatchNorm parameters and biases are: no decay, no trust ratio.
  optimizer.exclude_from_weight_decay(var_list=[variables[1]])
  got = apply_steps(optimizer, variables, GRADIENTS)
  weights = [w.copy() for w in START]
  velocities = [np.zeros_like(w) for w in START]
  for step, step_gradients in enumerate(GRADIENTS):
    for i, gradient in enumerate(step_gradients):
      scaled_rate = rate
      if i == 0:
        gradient = gradient + decay * weights[i]
        scaled_rate = rate * eta * np.linalg.norm(weights[i]) / np.linalg.norm(gradient)
      velocities[i] = momentum * velocities[i] + scaled_rate * gradient
      update = momentum * velocities[i] + scaled_rate * gradient if nesterov else velocities[i]
      weights[i] = weights[i] - update
      np.testing.assert_allclose(got[step][i], weights[i], rtol=1e-5, atol=1e-6)
  assert optimizers.Lars.from_config(optimizer.get_config()).trust_coefficient == eta


def test_lamb_with_decoupled_decay_matches_keras_semantics():
  """Keras' LAMB: decay w -= lr * wd * w first, then Adam's direction scaled by ||w|| / ||u||."""
  rate, decay, beta_1, beta_2, epsilon = 0.01, 0.05, 0.9, 0.999, 1e-6
  variables = fresh_variables()
  optimizer = optimizers.build_optimizer(
      config_lib.OptimizerConfig(name="lamb", weight_decay=decay, epsilon=epsilon), rate)
  optimizer.exclude_from_weight_decay(var_list=[variables[1]])
  got = apply_steps(optimizer, variables, GRADIENTS)
  weights = [w.astype(np.float64) for w in START]
  first = [np.zeros_like(w) for w in weights]
  second = [np.zeros_like(w) for w in weights]
  for step, step_gradients in enumerate(GRADIENTS, start=1):
    for i, gradient in enumerate(step_gradients):
      if i == 0:
        weights[i] = weights[i] - rate * decay * weights[i]
      first[i] = beta_1 * first[i] + (1 - beta_1) * gradient
      second[i] = beta_2 * second[i] + (1 - beta_2) * gradient ** 2
      update = (first[i] / (1 - beta_1 ** step)) / (np.sqrt(second[i] / (1 - beta_2 ** step)) + epsilon)
      ratio = np.linalg.norm(weights[i]) / np.linalg.norm(update)
      weights[i] = weights[i] - ratio * rate * update
      np.testing.assert_allclose(got[step - 1][i], weights[i], rtol=1e-4, atol=1e-6)


def test_rmsprop_with_momentum_matches_its_formula():
  rate, rho, momentum, epsilon = 0.01, 0.8, 0.5, 1e-3
  variables = fresh_variables()
  optimizer = optimizers.build_optimizer(config_lib.OptimizerConfig(
      name="rmsprop", rho=rho, momentum=momentum, epsilon=epsilon), rate)
  got = apply_steps(optimizer, variables, GRADIENTS)
  weights = [w.astype(np.float64) for w in START]
  squares = [np.zeros_like(w) for w in weights]
  velocities = [np.zeros_like(w) for w in weights]
  for step, step_gradients in enumerate(GRADIENTS):
    for i, gradient in enumerate(step_gradients):
      squares[i] = rho * squares[i] + (1 - rho) * gradient ** 2
      # TF's RMSprop: epsilon inside the square root.
      velocities[i] = momentum * velocities[i] + rate * gradient / np.sqrt(squares[i] + epsilon)
      weights[i] = weights[i] - velocities[i]
      np.testing.assert_allclose(got[step][i], weights[i], rtol=1e-5, atol=1e-6)


def small_model():
  """Conv, BatchNorm and Dense layers whose names say nothing of their type."""
  return keras.Sequential([keras.Input((4, 4, 3)),
                           keras.layers.Conv2D(2, 3, name="bias_conv"),
                           keras.layers.BatchNormalization(name="kernel_stats"),
                           keras.layers.Flatten(),
                           keras.layers.Dense(2, name="batch_normalization")])


@pytest.mark.parametrize("name", config_lib.OPTIMIZERS)
def test_weight_decay_skips_batch_norm_and_biases_by_layer_type(name):
  model = small_model()
  conv, batch_norm, dense = model.layers[0], model.layers[1], model.layers[3]
  exempt = {id(v) for v in optimizers.decay_exempt_variables(model)}
  assert exempt == {id(conv.bias), id(batch_norm.gamma), id(batch_norm.beta), id(dense.bias)}
  rate, decay = 0.1, 0.5
  optimizer = optimizers.build_optimizer(
      config_lib.OptimizerConfig(name=name, weight_decay=decay, momentum=0.0), rate, model=model)
  before = [v.numpy().copy() for v in model.trainable_variables]
  # Zero gradients: what moves is the decay alone.
  optimizer.apply([tf.zeros_like(v) for v in model.trainable_variables], model.trainable_variables)
  for variable, old in zip(model.trainable_variables, before):
    if id(variable) in exempt:
      np.testing.assert_array_equal(variable.numpy(), old, err_msg=variable.path)
    elif name == "lars":
      # LARS decays inside its update: g = wd * w times the trust ratio eta * ||w|| / ||g||
      # = eta / wd, a step of lr * eta * w.
      np.testing.assert_allclose(variable.numpy(), old * (1 - rate * 0.001), rtol=1e-6,
                                 err_msg=variable.path)
    else:
      np.testing.assert_allclose(variable.numpy(), old * (1 - rate * decay), rtol=1e-6,
                                 err_msg=variable.path)


def test_added_optimizers_follow_their_config():
  sgd = optimizers.build_optimizer(config_lib.OptimizerConfig(nesterov=True), 0.1)
  assert isinstance(sgd, optimizers.SGD) and sgd.nesterov and sgd.weight_decay is None
  lamb = optimizers.build_optimizer(config_lib.OptimizerConfig(name="lamb", beta_1=0.8), 0.1)
  assert isinstance(lamb, keras.optimizers.Lamb) and lamb.beta_1 == 0.8
  rmsprop = optimizers.build_optimizer(config_lib.OptimizerConfig(name="rmsprop", rho=0.95), 0.1)
  assert isinstance(rmsprop, keras.optimizers.RMSprop) and rmsprop.rho == 0.95
  lars = optimizers.build_optimizer(config_lib.OptimizerConfig(
      name="lars", nesterov=True, weight_decay=1e-4, lars_trust_coefficient=0.01), 0.1)
  assert (lars.nesterov, lars.weight_decay_rate, lars.trust_coefficient) == (True, 1e-4, 0.01)
  with pytest.raises(ValueError, match=r"nesterov applies to optimizer='sgd' or 'lars' only. "
                                       r"Received: optimizer='lamb'"):
    config_lib.OptimizerConfig(name="lamb", nesterov=True)
  with pytest.raises(ValueError, match=r"rmsprop_rho must be in \[0, 1\). Received: 1.0"):
    config_lib.OptimizerConfig(rho=1.0)

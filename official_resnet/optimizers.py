"""Optimizers: SGD (momentum, Nesterov; a fused update), Adam, AdamW, RMSprop, LAMB, LARS;
fp16 adds dynamic or fixed loss scaling.

Decoupled weight decay (OptimizerConfig.weight_decay) reaches every optimizer but LARS
through Keras' own `weight_decay`; LARS decays inside its update. Either way BatchNorm
parameters and biases are exempt, chosen by layer type. Clipping by global norm happens
in the train step (Trainer), where the replicas' gradients are summed first.
"""
import keras
from keras import ops
import tensorflow as tf

from official_resnet import config as config_lib


def _nested_layers(layer):
  for sublayer in getattr(layer, "layers", ()):
    yield sublayer
    yield from _nested_layers(sublayer)


def decay_exempt_variables(model):
  """Biases and normalization parameters, chosen by layer type: weight decay leaves them alone."""
  exempt = []
  for layer in _nested_layers(model):
    if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.LayerNormalization,
                          keras.layers.GroupNormalization)):
      exempt.extend(layer.trainable_weights)
    elif getattr(layer, "bias", None) is not None:
      exempt.append(layer.bias)
  return exempt


def _tf_variable(variable):
  return variable.value if isinstance(variable, keras.Variable) else variable


@keras.saving.register_keras_serializable(package="official_resnet")
class SGD(keras.optimizers.SGD):
  """Keras' SGD whose momentum update runs in TensorFlow's fused, in-place kernel.

  ResourceApplyKerasMomentum (the kernel of tf_keras' SGD, which the official trainer runs)
  computes Keras' update: v = momentum * v - learning_rate * g, then w += v (Nesterov:
  w += momentum * v - learning_rate * g). Keras' own update_step makes a variable-sized
  temporary for each product and difference, and the graph executor runs many variables'
  updates at once, so they add up to a step's peak memory. Everything else (slots named
  "momentum" in `momentums`, weight decay, loss scaling, config, checkpoints) is Keras' SGD.
  """

  def update_step(self, gradient, variable, learning_rate):
    if not self.momentum or isinstance(gradient, tf.IndexedSlices):
      # No velocity, or sparse gradients: Keras' own update.
      return super().update_step(gradient, variable, learning_rate)
    velocity = self.momentums[self._get_variable_index(variable)]
    # In a distribution strategy's update the handles are this replica's copies.
    return tf.raw_ops.ResourceApplyKerasMomentum(
        var=_tf_variable(variable).handle, accum=_tf_variable(velocity).handle,
        lr=tf.cast(learning_rate, variable.dtype), grad=tf.cast(gradient, variable.dtype),
        momentum=tf.cast(self.momentum, variable.dtype), use_nesterov=self.nesterov)


@keras.saving.register_keras_serializable(package="official_resnet")
class Lars(keras.optimizers.Optimizer):
  """LARS (You et al., 2017) as the Model Garden's LARS computes it, classic momentum.

  Keras has no LARS. Per variable: g' = g + weight_decay_rate * w, trust ratio
  r = trust_coefficient * ||w|| / ||g'|| (1 where either norm is 0), then
  v = momentum * v + learning_rate * r * g' and w -= v (Nesterov: momentum * v +
  learning_rate * r * g'). Variables passed to exclude_from_weight_decay get neither
  the decay nor the trust ratio (r = 1), as the Model Garden's layer-adaptation
  exclusions default to its decay exclusions.
  """

  def __init__(self, learning_rate=0.01, momentum=0.9, weight_decay_rate=0.0,
               trust_coefficient=0.001, nesterov=False, name="lars", **kwargs):
    super().__init__(learning_rate=learning_rate, name=name, **kwargs)
    self.momentum = momentum
    self.weight_decay_rate = weight_decay_rate
    self.trust_coefficient = trust_coefficient
    self.nesterov = nesterov

  def build(self, var_list):
    if self.built:
      return
    super().build(var_list)
    self._momentums = self.add_optimizer_variables(var_list, "momentum")

  def update_step(self, gradient, variable, learning_rate):
    learning_rate = ops.cast(learning_rate, variable.dtype)
    gradient = ops.cast(gradient, variable.dtype)
    velocity = self._momentums[self._get_variable_index(variable)]
    if self._use_weight_decay(variable):
      gradient = gradient + self.weight_decay_rate * variable
      weight_norm = ops.sqrt(ops.sum(ops.square(variable)))
      gradient_norm = ops.sqrt(ops.sum(ops.square(gradient)))
      trust_ratio = ops.where(
          weight_norm > 0,
          ops.where(gradient_norm > 0, self.trust_coefficient * weight_norm / gradient_norm, 1.0),
          1.0)
      learning_rate = learning_rate * trust_ratio
    self.assign(velocity, self.momentum * velocity + learning_rate * gradient)
    if self.nesterov:
      self.assign_sub(variable, self.momentum * velocity + learning_rate * gradient)
    else:
      self.assign_sub(variable, velocity)

  def get_config(self):
    return {**super().get_config(), "momentum": self.momentum,
            "weight_decay_rate": self.weight_decay_rate,
            "trust_coefficient": self.trust_coefficient, "nesterov": self.nesterov}


def build_optimizer(optimizer_config, learning_rate, model=None, dtype_policy="float32",
                    loss_scale=None):
  """A keras optimizer for `optimizer_config` driven by `learning_rate` (a schedule or float).

  `model`, when given, names the variables exempt from weight decay (and from LARS' trust
  ratio). A float16 `dtype_policy` (the model's) scales the loss: with `loss_scale` None
  dynamically (keras.optimizers.LossScaleOptimizer), else by that fixed factor (the
  optimizer's own loss_scale_factor: scale_loss multiplies, apply divides the gradients
  back), as the official fixed --loss_scale does.
  """
  name, c = optimizer_config.name, optimizer_config
  float16 = dtype_policy == config_lib.FLOAT16_POLICY
  fixed_scale = {"loss_scale_factor": loss_scale} if float16 and loss_scale else {}
  # Keras applies no decay for None (0.0 would still run the decay ops); AdamW insists on a float.
  decay = c.weight_decay or (0.0 if name == "adamw" else None)
  common = {"weight_decay": decay, **fixed_scale}
  if name == "sgd":
    optimizer = SGD(learning_rate, momentum=c.momentum, nesterov=c.nesterov, **common)
  elif name in ("adam", "adamw", "lamb"):
    optimizer_class = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
                       "lamb": keras.optimizers.Lamb}[name]
    optimizer = optimizer_class(learning_rate, beta_1=c.beta_1, beta_2=c.beta_2,
                                epsilon=c.epsilon, **common)
  elif name == "rmsprop":
    optimizer = keras.optimizers.RMSprop(learning_rate, rho=c.rho, momentum=c.momentum,
                                         epsilon=c.epsilon, **common)
  elif name == "lars":
    # LARS decays inside its update (weight_decay_rate), not through Keras' weight_decay.
    optimizer = Lars(learning_rate, momentum=c.momentum, weight_decay_rate=c.weight_decay,
                     trust_coefficient=c.lars_trust_coefficient, nesterov=c.nesterov, **fixed_scale)
  else:
    raise ValueError(f"optimizer must be one of {config_lib.OPTIMIZERS}. Received: {name!r}")
  if model is not None:
    optimizer.exclude_from_weight_decay(var_list=decay_exempt_variables(model))
  if float16 and not fixed_scale:
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer

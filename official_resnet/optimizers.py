"""Optimizers: SGD (momentum, Nesterov), Adam, AdamW; fp16 adds dynamic or fixed loss scaling."""
import keras

from official_resnet import config as config_lib


def _nested_layers(layer):
  for sublayer in getattr(layer, "layers", ()):
    yield sublayer
    yield from _nested_layers(sublayer)


def decay_exempt_variables(model):
  """Biases and normalization parameters, chosen by layer type: AdamW leaves them undecayed."""
  exempt = []
  for layer in _nested_layers(model):
    if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.LayerNormalization,
                          keras.layers.GroupNormalization)):
      exempt.extend(layer.trainable_weights)
    elif getattr(layer, "bias", None) is not None:
      exempt.append(layer.bias)
  return exempt


def build_optimizer(optimizer_config, learning_rate, model=None, dtype="fp32", loss_scale=None):
  """A keras optimizer for `optimizer_config` driven by `learning_rate` (a schedule or float).

  `model`, when given, names the AdamW decay exemptions. dtype 'fp16' scales the loss:
  with `loss_scale` None dynamically (keras.optimizers.LossScaleOptimizer), else by that
  fixed factor (the optimizer's own loss_scale_factor: scale_loss multiplies, apply
  divides the gradients back), as the official fixed --loss_scale does.
  """
  name = optimizer_config.name
  fixed_scale = {"loss_scale_factor": loss_scale} if dtype == "fp16" and loss_scale else {}
  if name == "sgd":
    optimizer = keras.optimizers.SGD(
        learning_rate, momentum=optimizer_config.momentum, nesterov=optimizer_config.nesterov,
        **fixed_scale)
  elif name == "adam":
    optimizer = keras.optimizers.Adam(
        learning_rate, beta_1=optimizer_config.beta_1, beta_2=optimizer_config.beta_2,
        epsilon=optimizer_config.epsilon, **fixed_scale)
  elif name == "adamw":
    optimizer = keras.optimizers.AdamW(
        learning_rate, weight_decay=optimizer_config.weight_decay, beta_1=optimizer_config.beta_1,
        beta_2=optimizer_config.beta_2, epsilon=optimizer_config.epsilon, **fixed_scale)
    if model is not None:
      optimizer.exclude_from_weight_decay(var_list=decay_exempt_variables(model))
  else:
    raise ValueError(f"optimizer must be one of {config_lib.OPTIMIZERS}. Received: {name!r}")
  if dtype == "fp16" and not fixed_scale:
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer

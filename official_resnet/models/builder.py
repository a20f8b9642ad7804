"""build_model: one entry point for every architecture, head and precision."""
import dataclasses

import keras

from official_resnet.models import config as config_lib
from official_resnet.models import resnet
from official_resnet.models import vgg
from official_resnet.models.layers import InputNormalization

POOLING_LAYERS = {"avg": keras.layers.GlobalAveragePooling2D,
                  "max": keras.layers.GlobalMaxPooling2D}


def _depth(architecture):
  return int(architecture.removeprefix("resnet").removeprefix("vgg"))


def _batch_norm_settings(layers, config):
  return dataclasses.replace(layers, fused_batch_norm=config.fused_batch_norm,
                             sync_batch_norm=config.sync_batch_norm)


def _backbone(x, config, data_format):
  depth = _depth(config.architecture)
  if config.architecture.startswith("resnet"):
    layers = resnet.layer_factory(
        config.variant, data_format=data_format, dtype_policy=config.dtype_policy,
        weight_decay=config.weight_decay, zero_init_residual=config.zero_init_residual)
    layers = dataclasses.replace(_batch_norm_settings(layers, config),
                                 conv_padding=config.conv_padding,
                                 pool_padding=config.pool_padding or layers.pool_padding)
    return resnet.backbone(x, depth, config.variant, config.base_width, layers), layers
  layers = vgg.layer_factory(config.vgg_batch_norm, data_format=data_format,
                             dtype_policy=config.dtype_policy, weight_decay=config.weight_decay)
  layers = _batch_norm_settings(layers, config)
  return vgg.backbone(x, depth, config.base_width, config.vgg_batch_norm, layers), layers


def _pool(x, pooling, layers):
  if pooling is None:
    return keras.layers.Flatten(data_format=layers.data_format, dtype=layers.dtype_policy,
                                name="flatten")(x)
  return POOLING_LAYERS[pooling](data_format=layers.data_format, dtype=layers.dtype_policy,
                                 name=f"{pooling}_pool")(x)


def _head(x, config, layers):
  """Pooling, hidden Dense layers `fc1`, `fc2`.. (VGG's names), dropout, float32 logits.

  Dropout follows each hidden layer, or the pooled features when there is none,
  so it always feeds the logits layer (the classic VGG16 transfer head).
  """
  head = config.head

  def dropout(x, name):
    if head.dropout == 0:
      return x
    return keras.layers.Dropout(head.dropout, dtype=layers.dtype_policy, name=name)(x)

  x = _pool(x, config.pooling, layers)
  if not head.hidden_units:
    x = dropout(x, "pool_dropout")
  for index, units in enumerate(head.hidden_units, start=1):
    x = layers.dense(units, activation=head.activation, name=f"fc{index}")(x)
    x = dropout(x, f"fc{index}_dropout")
  # Logits in float32 under mixed precision: softmax and loss need the range.
  return layers.dense(config.num_classes, dtype_policy="float32", name="predictions")(x)


def build_model(config: config_lib.ModelConfig) -> keras.Model:
  """Input [None, S, S, 3] float32 (raw pixels with `input_normalization`); any size with
  `any_input_size`.

  Output: float32 logits [None, num_classes] with include_top; else pooled
  features [None, C], or the stride-32 feature map when pooling is None.
  """
  data_format = config.data_format or keras.config.image_data_format()
  side = None if config.any_input_size else config.image_size
  inputs = keras.Input((side, side, 3), name="images")
  x = inputs
  if config.input_normalization:
    x = InputNormalization(config.input_normalization, name="normalization")(x)
  if data_format == "channels_first":
    x = keras.layers.Permute((3, 1, 2), dtype=config.dtype_policy, name="to_channels_first")(x)
  x, layers = _backbone(x, config, data_format)
  if config.include_top:
    x = _head(x, config, layers)
  elif config.pooling is not None:
    x = _pool(x, config.pooling, layers)
  return keras.Model(inputs, x, name=_model_name(config))


def _model_name(config):
  if config.architecture.startswith("resnet"):
    return f"{config.architecture}_{config.variant.replace('.', '_')}"
  return f"{config.architecture}_bn" if config.vgg_batch_norm else config.architecture

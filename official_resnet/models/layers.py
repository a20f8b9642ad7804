"""Layer construction shared by every architecture, and the in-model input normalization.

LayerFactory decides data format, dtype policy, weight decay, bias and BatchNorm
settings once per model, so the block functions never read global Keras state.
"""
import dataclasses

import keras

from input_pipeline import constants
from input_pipeline import preprocessing


@dataclasses.dataclass(frozen=True)
class LayerFactory:
  data_format: str
  # A Keras dtype policy name given to every layer, so a mixed model needs no global policy.
  dtype_policy: str
  weight_decay: float
  use_bias: bool
  bn_momentum: float
  bn_epsilon: float
  # Names or config dicts, not instances: an unseeded initializer instance gives the
  # same values every time it is called, so each layer gets a fresh one.
  kernel_initializer: str | dict = "glorot_uniform"
  dense_initializer: str | dict = "glorot_uniform"
  # ResNet: initialise the last BatchNorm gamma of each residual branch to zero.
  zero_init_residual: bool = False

  @property
  def channel_axis(self) -> int:
    return -1 if self.data_format == "channels_last" else 1

  def _regularizer(self):
    # A fresh object per layer: a shared one would be serialized once per layer anyway.
    return keras.regularizers.L2(self.weight_decay) if self.weight_decay > 0 else None

  def conv(self, filters, kernel_size, *, name, strides=1, padding="valid", activation=None):
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding=padding, activation=activation,
        use_bias=self.use_bias,
        kernel_initializer=keras.initializers.get(self.kernel_initializer),
        kernel_regularizer=self._regularizer(), data_format=self.data_format,
        dtype=self.dtype_policy, name=name)

  def dense(self, units, *, name, activation=None, dtype_policy=None):
    return keras.layers.Dense(
        units, activation=activation,
        kernel_initializer=keras.initializers.get(self.dense_initializer),
        kernel_regularizer=self._regularizer(), dtype=dtype_policy or self.dtype_policy,
        name=name)

  def batch_norm(self, *, name, zero_gamma=False):
    return keras.layers.BatchNormalization(
        axis=self.channel_axis, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
        gamma_initializer="zeros" if zero_gamma else "ones", dtype=self.dtype_policy, name=name)

  def relu(self, *, name):
    return keras.layers.Activation("relu", dtype=self.dtype_policy, name=name)

  def zero_pad(self, padding, *, name):
    return keras.layers.ZeroPadding2D(
        padding, data_format=self.data_format, dtype=self.dtype_policy, name=name)

  def max_pool(self, pool_size, *, strides, name):
    return keras.layers.MaxPooling2D(
        pool_size, strides=strides, data_format=self.data_format, dtype=self.dtype_policy,
        name=name)


@keras.saving.register_keras_serializable(package="official_resnet")
class InputNormalization(keras.layers.Layer):
  """Normalizes raw [0, 255] RGB pixels (any numeric dtype) as the weights expect.

  A named layer rather than a Lambda so `.keras` files load in safe mode.
  Modes are input_pipeline's: rgb_mean, caffe, torch, unit.
  """

  def __init__(self, mode, **kwargs):
    super().__init__(**kwargs)
    if mode not in constants.NORMALIZATION_MODES:
      raise ValueError(
          f"`mode` must be one of {constants.NORMALIZATION_MODES}. Received: mode={mode!r}")
    self.mode = mode

  def call(self, images):
    # The pipeline's own function, so in-model and in-pipeline normalization cannot drift.
    return preprocessing.normalize(images, self.mode)

  def get_config(self):
    return {**super().get_config(), "mode": self.mode}

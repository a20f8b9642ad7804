"""Layer construction shared by every architecture, and the in-model input normalization.

LayerFactory decides data format, dtype policy, weight decay, bias and BatchNorm
settings once per model, so the block functions never read global Keras state.
"""
import dataclasses

import keras
import tensorflow as tf

from input_pipeline import checks
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
  # FusedBatchNormalization instead of Keras' own (same weights and results, faster).
  fused_batch_norm: bool = True
  # Keras' synchronized BatchNorm: batch moments all-reduced over the replicas.
  sync_batch_norm: bool = False
  # models.config.CONV_PADDINGS: how strided convolutions with kernels above 1 pad.
  conv_padding: str = "same"

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
    layer_class = (FusedBatchNormalization if self.fused_batch_norm
                   else keras.layers.BatchNormalization)
    return layer_class(
        axis=self.channel_axis, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
        gamma_initializer="zeros" if zero_gamma else "ones", synchronized=self.sync_batch_norm,
        dtype=self.dtype_policy, name=name)

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
    checks.check_choice("mode", mode, constants.NORMALIZATION_MODES)
    self.mode = mode

  def call(self, images):
    # The pipeline's own function, so in-model and in-pipeline normalization cannot drift.
    return preprocessing.normalize(images, self.mode)

  def get_config(self):
    return {**super().get_config(), "mode": self.mode}


def all_replicas_sum(values: tf.Tensor) -> tf.Tensor:
  """The sum of `values` over the replicas in sync; its gradient is the same sum of theirs.

  The values of the replica context's all_reduce, without its gradient wrapper: that one
  walks the graph behind the reduced tensor, which under MirroredStrategy's merge reaches
  into every replica's graph, so tracing grows with the square of the depth (ResNet-50
  with synchronized BatchNorm on 2 CPU replicas: 173 s to its first step; 29 s with this
  sum; 15 s with per-replica BatchNorm). Stopping the gradient where values enter the
  reduction ends each walk there; the gradient is given here instead.
  """
  context = tf.distribute.get_replica_context()

  @tf.custom_gradient
  def summed(local):
    def gradient(upstream):
      return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(upstream))
    return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(local)), gradient

  return summed(values)


# Layout of FusedBatchNormV3 for the channel axis of a rank-4 input.
_FUSED_DATA_FORMATS = {3: "NHWC", 1: "NCHW"}


@keras.saving.register_keras_serializable(package="official_resnet")
class FusedBatchNormalization(keras.layers.BatchNormalization):
  """keras BatchNormalization whose training pass is TF's fused kernel.

  Keras 3 computes the batch moments and the normalization as separate ops, in
  float32 even for bfloat16 inputs; FusedBatchNormV3 does both in one pass and
  takes bfloat16 as it is. Same weights, outputs and moving-average update
  (Keras' biased batch variance); inference, frozen and synchronized layers take
  Keras' path.
  Measured (benchmarks/README.md, ResNet-50 train step, 2 CPU cores): 1.24-1.32x
  faster in fp32, 1.46-1.48x in bf16. Synchronized layers take Keras' moments, with
  all_replicas_sum for the all-reduce.
  """

  def _count_per_channel(self, inputs):
    """float32: the values each channel's moments are taken over (0 for an empty batch)."""
    return tf.cast(tf.size(inputs) // tf.shape(inputs)[self.axis], tf.float32)

  def _moments(self, inputs, mask):
    if not self.synchronized or mask is not None or tf.distribute.in_cross_replica_context():
      return super()._moments(inputs, mask)
    # Keras' sums for synchronized moments (float32 here), in one all-reduce; the count
    # from the shape rather than a sum over a tensor of ones.
    axes = self._reduction_axes
    sums = tf.reduce_sum(inputs, axes)
    local = tf.stack([sums, tf.reduce_sum(tf.square(inputs), axes),
                      tf.fill(tf.shape(sums), self._count_per_channel(inputs))])
    total, total_of_squares, count = tf.unstack(all_replicas_sum(local))
    mean = tf.math.divide_no_nan(total, count)
    variance = tf.maximum(tf.math.divide_no_nan(total_of_squares, count) - tf.square(mean), 0.0)
    return mean, variance

  def call(self, inputs, training=None, mask=None):
    data_format = _FUSED_DATA_FORMATS.get(self.axis % len(inputs.shape))
    if (not (training and self.trainable) or self.synchronized or mask is not None
        or len(inputs.shape) != 4 or data_format is None or self.renorm
        or not (self.scale and self.center)):
      return super().call(inputs, training=training, mask=mask)
    empty = tf.constant([], tf.float32)
    outputs, mean, unbiased_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
        x=inputs, scale=tf.cast(self.gamma, tf.float32), offset=tf.cast(self.beta, tf.float32),
        mean=empty, variance=empty, epsilon=self.epsilon, exponential_avg_factor=1.0,
        data_format=data_format, is_training=True)
    # The kernel returns the batch variance with Bessel's correction; Keras averages the biased one.
    count = self._count_per_channel(inputs)
    variance = unbiased_variance * (count - 1.0) / count
    self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
    self.moving_variance.assign(
        self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
    return tf.cast(outputs, self.compute_dtype)

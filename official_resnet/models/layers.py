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
  # models.config.POOL_PADDINGS: how ResNet's stem max pool pads.
  pool_padding: str = "same"
  # Biases decay as the kernels do: the official ResNet's (its fc1000 bias; single_l2_loss_op
  # sums every weight but BatchNorm's), not its VGG's.
  decay_biases: bool = False

  @property
  def channel_axis(self) -> int:
    return -1 if self.data_format == "channels_last" else 1

  def _regularizer(self):
    # A fresh object per layer: a shared one would be serialized once per layer anyway.
    return L2(self.weight_decay) if self.weight_decay > 0 else None

  def _bias_regularizer(self):
    return self._regularizer() if self.decay_biases else None

  def conv(self, filters, kernel_size, *, name, strides=1, padding="valid", activation=None):
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding=padding, activation=activation,
        use_bias=self.use_bias,
        kernel_initializer=keras.initializers.get(self.kernel_initializer),
        kernel_regularizer=self._regularizer(), bias_regularizer=self._bias_regularizer(),
        data_format=self.data_format,
        dtype=self.dtype_policy, name=name)

  def dense(self, units, *, name, activation=None, dtype_policy=None):
    return keras.layers.Dense(
        units, activation=activation,
        kernel_initializer=keras.initializers.get(self.dense_initializer),
        kernel_regularizer=self._regularizer(),
        bias_regularizer=self._bias_regularizer(),
        dtype=dtype_policy or self.dtype_policy, name=name)

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

  def max_pool(self, pool_size, *, strides, name, padding="valid"):
    return keras.layers.MaxPooling2D(
        pool_size, strides=strides, padding=padding, data_format=self.data_format,
        dtype=self.dtype_policy, name=name)


@keras.saving.register_keras_serializable(package="official_resnet")
class L2(keras.regularizers.Regularizer):
  """keras.regularizers.L2's penalty, l2 * sum(x ** 2), as TF's one L2Loss op.

  Keras' square-then-sum holds a squared copy of every weight in the step, and its gradient
  one more; L2Loss reads the weight as it is (lower peak memory: benchmarks/README.md,
  "Short runs").
  """

  def __init__(self, l2):
    self.l2 = float(l2)

  def __call__(self, x):
    return (2.0 * self.l2) * tf.nn.l2_loss(x)

  def get_config(self):
    return {"l2": self.l2}


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
  """keras BatchNormalization that trains as the official model's (tf_keras, fused) does.

  Two differences from Keras 3's own training pass: the moving variance moves toward the
  batch variance with Bessel's correction (n / (n - 1), n the values per channel), as
  tf_keras' fused layer and TF's FusedBatchNormV3 do, where Keras 3 averages the biased
  one; and the batch moments and normalization are TF's fused kernel, one pass that takes
  bfloat16 as it is (benchmarks/README.md). Synchronized layers take the moments of the
  global batch through one all-reduce (all_replicas_sum). Inference and frozen layers
  take Keras' path; the weights are Keras' own.
  """

  def _count_per_channel(self, inputs):
    """float32: the values each channel's moments are taken over (0 for an empty batch)."""
    return tf.cast(tf.size(inputs) // tf.shape(inputs)[self.axis], tf.float32)

  def _synchronized_moments(self, inputs):
    """(mean, biased variance, count) per channel over every replica's batch, float32.

    Keras' sums for synchronized moments in one all-reduce; the count from the shape
    rather than a sum over a tensor of ones.
    """
    axes = [axis for axis in range(len(inputs.shape)) if axis != self.axis % len(inputs.shape)]
    sums = tf.reduce_sum(inputs, axes)
    local = tf.stack([sums, tf.reduce_sum(tf.square(inputs), axes),
                      tf.fill(tf.shape(sums), self._count_per_channel(inputs))])
    total, total_of_squares, count = tf.unstack(all_replicas_sum(local))
    mean = tf.math.divide_no_nan(total, count)
    variance = tf.maximum(tf.math.divide_no_nan(total_of_squares, count) - tf.square(mean), 0.0)
    return mean, variance, count

  def _update_moving_statistics(self, mean, unbiased_variance):
    self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
    self.moving_variance.assign(
        self.moving_variance * self.momentum + unbiased_variance * (1.0 - self.momentum))

  def _train_synchronized(self, inputs):
    inputs = tf.cast(inputs, tf.float32)
    mean, variance, count = self._synchronized_moments(inputs)
    # TF's kernel divides by max(n - 1, 1): one value per channel keeps its variance, 0.
    self._update_moving_statistics(mean, variance * count / tf.maximum(count - 1.0, 1.0))
    outputs = keras.ops.batch_normalization(
        inputs, mean, variance, axis=self.axis, offset=tf.cast(self.beta, tf.float32),
        scale=tf.cast(self.gamma, tf.float32), epsilon=self.epsilon)
    return tf.cast(outputs, self.compute_dtype)

  def call(self, inputs, training=None, mask=None):
    data_format = _FUSED_DATA_FORMATS.get(self.axis % len(inputs.shape))
    if (not (training and self.trainable) or mask is not None or self.renorm
        or not (self.scale and self.center)):
      return super().call(inputs, training=training, mask=mask)
    if self.synchronized and not tf.distribute.in_cross_replica_context():
      return self._train_synchronized(inputs)
    if len(inputs.shape) != 4 or data_format is None:
      return super().call(inputs, training=training, mask=mask)
    # The kernel moves the statistics itself, as tf_keras has it do: one op, not five.
    outputs, moving_mean, moving_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
        x=inputs, scale=tf.cast(self.gamma, tf.float32), offset=tf.cast(self.beta, tf.float32),
        mean=self.moving_mean.value, variance=self.moving_variance.value, epsilon=self.epsilon,
        exponential_avg_factor=1.0 - self.momentum, data_format=data_format, is_training=True)
    self.moving_mean.assign(moving_mean)
    self.moving_variance.assign(moving_variance)
    return tf.cast(outputs, self.compute_dtype)

"""ResNet-18/34/50/101/152, variants v1 (keras.applications) and v1.5 (TF official).

Block function -> stack function -> depth table, with keras.applications' layer
names (`conv2_block1_1_conv`) so its weight files map by name. Stages are
"conv1" (stem) and "conv2".."conv5".
"""
import keras

from official_resnet.models.layers import LayerFactory

# Depth -> (block kind, blocks per stage conv2..conv5).
DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}

# What distinguishes the variants; everything else is shared.
VARIANTS = {
    # keras.applications.ResNet50/101/152: stride in the first 1x1, biased convolutions.
    "v1": dict(stride_in_3x3=False, use_bias=True, bn_momentum=0.99, bn_epsilon=1.001e-5,
               kernel_initializer="glorot_uniform", dense_initializer="glorot_uniform",
               pool_padding="symmetric"),
    # TF official ResNet-50 v1.5 (resnet_model.py): stride in the 3x3, no conv bias.
    "v1.5": dict(stride_in_3x3=True, use_bias=False, bn_momentum=0.9, bn_epsilon=1e-5,
                 kernel_initializer="he_normal",
                 dense_initializer={"class_name": "RandomNormal", "config": {"stddev": 0.01}},
                 pool_padding="same"),
}

BOTTLENECK_EXPANSION = 4
STAGES = ("conv1", "conv2", "conv3", "conv4", "conv5")


def _residual_output(shortcut, residual, name, layers):
  x = keras.layers.Add(dtype=layers.dtype_policy, name=f"{name}_add")([shortcut, residual])
  return layers.relu(name=f"{name}_out")(x)


def _conv_bn(x, filters, kernel_size, *, strides, name, layers, relu, zero_gamma=False):
  """Convolution + BatchNorm (+ ReLU): `{name}_conv`, `{name}_bn`, `{name}_relu`.

  "same" padding is keras.applications' "valid" for 1x1 kernels and its "SAME" for 3x3.
  With symmetric padding a strided 3x3 convolution reads a `{name}_pad` layer instead.
  """
  padding = "same"
  if layers.conv_padding == "symmetric" and strides > 1 and kernel_size > 1:
    x = layers.zero_pad(kernel_size // 2, name=f"{name}_pad")(x)
    padding = "valid"
  x = layers.conv(filters, kernel_size, strides=strides, padding=padding, name=f"{name}_conv")(x)
  x = layers.batch_norm(name=f"{name}_bn", zero_gamma=zero_gamma)(x)
  return layers.relu(name=f"{name}_relu")(x) if relu else x


def _projection(x, filters, stride, name, layers):
  return _conv_bn(x, filters, 1, strides=stride, name=f"{name}_0", layers=layers, relu=False)


def _bottleneck(x, shortcut, filters, stride, name, layers, stride_in_3x3):
  stride_1x1, stride_3x3 = (1, stride) if stride_in_3x3 else (stride, 1)
  y = _conv_bn(x, filters, 1, strides=stride_1x1, name=f"{name}_1", layers=layers, relu=True)
  y = _conv_bn(y, filters, 3, strides=stride_3x3, name=f"{name}_2", layers=layers, relu=True)
  y = _conv_bn(y, BOTTLENECK_EXPANSION * filters, 1, strides=1, name=f"{name}_3", layers=layers,
               relu=False, zero_gamma=layers.zero_init_residual)
  return _residual_output(shortcut, y, name, layers)


def conv_block(x, filters, *, stride, name, layers, stride_in_3x3):
  """Bottleneck block whose shortcut is a strided 1x1 projection (first block of a stage)."""
  shortcut = _projection(x, BOTTLENECK_EXPANSION * filters, stride, name, layers)
  return _bottleneck(x, shortcut, filters, stride, name, layers, stride_in_3x3)


def identity_block(x, filters, *, name, layers, stride_in_3x3):
  """Bottleneck block with an identity shortcut."""
  return _bottleneck(x, x, filters, 1, name, layers, stride_in_3x3)


def basic_block(x, filters, *, stride, name, layers):
  """Two 3x3 convolutions (ResNet-18/34); projects the shortcut only when the shape changes."""
  in_channels = x.shape[layers.channel_axis]
  if stride != 1 or in_channels != filters:
    shortcut = _projection(x, filters, stride, name, layers)
  else:
    shortcut = x
  y = _conv_bn(x, filters, 3, strides=stride, name=f"{name}_1", layers=layers, relu=True)
  y = _conv_bn(y, filters, 3, strides=1, name=f"{name}_2", layers=layers, relu=False,
               zero_gamma=layers.zero_init_residual)
  return _residual_output(shortcut, y, name, layers)


def stack(x, kind, filters, blocks, *, stride, name, layers, stride_in_3x3):
  """One stage: `blocks` blocks named `{name}_block1..N`, the first one strided."""
  for index in range(1, blocks + 1):
    block_name = f"{name}_block{index}"
    block_stride = stride if index == 1 else 1
    if kind == "basic":
      x = basic_block(x, filters, stride=block_stride, name=block_name, layers=layers)
    elif index == 1:
      x = conv_block(x, filters, stride=block_stride, name=block_name, layers=layers,
                     stride_in_3x3=stride_in_3x3)
    else:
      x = identity_block(x, filters, name=block_name, layers=layers, stride_in_3x3=stride_in_3x3)
  return x


def layer_factory(variant, *, data_format, dtype_policy, weight_decay, zero_init_residual):
  settings = dict(VARIANTS[variant])
  del settings["stride_in_3x3"]
  return LayerFactory(data_format=data_format, dtype_policy=dtype_policy,
                      weight_decay=weight_decay, zero_init_residual=zero_init_residual,
                      decay_biases=True, **settings)


def backbone(x, depth, variant, base_width, layers):
  """Stem and the four stages; returns the last feature map (stride 32)."""
  kind, blocks_per_stage = DEPTHS[depth]
  stride_in_3x3 = VARIANTS[variant]["stride_in_3x3"]
  x = layers.zero_pad(3, name="conv1_pad")(x)
  x = layers.conv(base_width, 7, strides=2, name="conv1_conv")(x)
  x = layers.batch_norm(name="conv1_bn")(x)
  x = layers.relu(name="conv1_relu")(x)
  if layers.pool_padding == "symmetric":
    x = layers.zero_pad(1, name="pool1_pad")(x)
    x = layers.max_pool(3, strides=2, name="pool1_pool")(x)
  else:
    x = layers.max_pool(3, strides=2, padding="same", name="pool1_pool")(x)
  for index, blocks in enumerate(blocks_per_stage):
    x = stack(x, kind, base_width * 2**index, blocks, stride=1 if index == 0 else 2,
              name=STAGES[index + 1], layers=layers, stride_in_3x3=stride_in_3x3)
  return x

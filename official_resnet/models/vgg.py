"""VGG16/19 from a (filters, convolutions) table, with keras.applications' layer names.

Stages are "block1".."block5". The BatchNorm variant puts a BatchNorm and a ReLU
after each (then unbiased) convolution: `block1_conv1_bn`, `block1_conv1_relu`.
"""
from official_resnet.models.layers import LayerFactory

# Depth -> (filters at base width 64, convolutions) per block.
BLOCKS = {
    16: ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)),
    19: ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4)),
}
STAGES = ("block1", "block2", "block3", "block4", "block5")
PUBLISHED_BASE_WIDTH = 64


def layer_factory(batch_norm, *, data_format, dtype_policy, weight_decay):
  # BatchNorm settings are torchvision vgg*_bn's (momentum 0.1 there is 0.9 in Keras).
  return LayerFactory(data_format=data_format, dtype_policy=dtype_policy,
                      weight_decay=weight_decay, use_bias=not batch_norm, bn_momentum=0.9,
                      bn_epsilon=1e-5)


def backbone(x, depth, base_width, batch_norm, layers):
  """Five blocks of 3x3 convolutions, each ending in 2x2 max pooling; returns stride 32."""
  for stage, (filters, convs) in zip(STAGES, BLOCKS[depth]):
    width = filters * base_width // PUBLISHED_BASE_WIDTH
    for index in range(1, convs + 1):
      name = f"{stage}_conv{index}"
      if batch_norm:
        x = layers.conv(width, 3, padding="same", name=name)(x)
        x = layers.batch_norm(name=f"{name}_bn")(x)
        x = layers.relu(name=f"{name}_relu")(x)
      else:
        x = layers.conv(width, 3, padding="same", activation="relu", name=name)(x)
    x = layers.max_pool(2, strides=2, name=f"{stage}_pool")(x)
  return x

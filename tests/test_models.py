"""The model zoo: one battery over every model, sizes, names, precision, freezing, errors."""
import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from input_pipeline import constants
from input_pipeline import preprocessing
from official_resnet import models
from official_code import import_official

SMALL = dict(image_size=64, num_classes=3, base_width=8)

# Every block type and variant, each with a different head, pooling and input option.
BATTERY = {
    "resnet18_v1": models.ModelConfig("resnet18", "v1", input_normalization="caffe", **SMALL),
    "resnet18_v1.5": models.ModelConfig("resnet18", "v1.5", pooling="max", **SMALL),
    "resnet34_v1": models.ModelConfig("resnet34", "v1", head=models.HeadConfig((16,), 0.5),
                                      **SMALL),
    "resnet34_v1.5": models.ModelConfig("resnet34", "v1.5", input_normalization="torch", **SMALL),
    "resnet50_v1": models.ModelConfig("resnet50", "v1", input_normalization="caffe", **SMALL),
    "resnet50_v1.5": models.ModelConfig("resnet50", "v1.5", head=models.HeadConfig(dropout=0.2),
                                        **SMALL),
    # One deep ResNet (ResNet-152 and the v1 ones add only more of ResNet-50's blocks): from
    # ResNet-101 on, block numbers reach two digits (conv4_block23), which layer names and
    # Keras files must keep apart. The deep block counts: the parameter count tests.
    "resnet101_v1.5": models.ModelConfig("resnet101", "v1.5", input_normalization="unit",
                                         **SMALL),
    "vgg16": models.ModelConfig("vgg16", pooling=None, head=models.HeadConfig((16, 16), 0.5),
                                **SMALL),
    "vgg16_bn": models.ModelConfig("vgg16", vgg_batch_norm=True, input_normalization="rgb_mean",
                                   **SMALL),
    "vgg19": models.ModelConfig("vgg19", pooling="max", **SMALL),
    "vgg19_bn": models.ModelConfig("vgg19", vgg_batch_norm=True, pooling=None, **SMALL),
}


@pytest.fixture(scope="module")
def built():
  """Builds each battery model once per module; tests that train build their own."""
  cache = {}

  def get(name):
    if name not in cache:
      keras.utils.set_random_seed(1)
      cache[name] = models.build_model(BATTERY[name])
    return cache[name]
  return get


def _images(batch=4, size=64, seed=0):
  return np.random.default_rng(seed).uniform(0, 255, (batch, size, size, 3)).astype("float32")


def _biases_before_batch_norm(model):
  """Conv biases that a BatchNorm cancels in training mode (keras.applications' v1 layout)."""
  bn_inputs = {id(layer.input) for layer in model.layers
               if isinstance(layer, keras.layers.BatchNormalization)}
  return {id(layer.bias) for layer in model.layers
          if isinstance(layer, keras.layers.Conv2D) and layer.use_bias
          and id(layer.output) in bn_inputs}


# The deep ResNet takes most of the battery's time; `-m "not slow"` skips it while iterating.
BATTERY_PARAMS = [
    pytest.param(name, marks=pytest.mark.slow) if name.startswith("resnet101") else name
    for name in BATTERY]


@pytest.mark.parametrize("name", BATTERY_PARAMS)
def test_outputs_and_gradients(built, name):
  model = built(name)
  images = _images()
  labels = np.array([0, 1, 2, 1])
  with tf.GradientTape() as tape:
    logits = model(images, training=True)
    loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
  assert tuple(logits.shape) == (4, 3)
  assert logits.dtype == tf.float32
  assert np.isfinite(logits.numpy()).all()
  gradients = tape.gradient(loss, model.trainable_variables)
  cancelled = _biases_before_batch_norm(model)
  without_gradient = [
      variable.path for variable, gradient in zip(model.trainable_variables, gradients)
      if id(variable) not in cancelled
      and (gradient is None or not np.any(tf.convert_to_tensor(gradient).numpy()))]
  assert without_gradient == []
  assert len(model.trainable_variables) - len(cancelled) > 0


@pytest.mark.parametrize("name", BATTERY_PARAMS)
def test_config_and_keras_file_round_trip(built, name, tmp_path):
  model = built(name)
  images = _images(batch=2, seed=1)
  expected = model(images, training=False).numpy()
  path = tmp_path / f"{name}.keras"
  model.save(path)
  # Rebuilt from the file's get_config() by from_config; safe_mode: no Lambda layers allowed.
  loaded = keras.saving.load_model(path)
  np.testing.assert_allclose(loaded(images, training=False).numpy(), expected, rtol=1e-5,
                             atol=1e-5)
  assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]


@pytest.mark.parametrize("pooling, include_top, expected_shape", [
    ("avg", True, (2, 3)), ("avg", False, (2, 64)), ("max", False, (2, 64)),
    (None, False, (2, 2, 2, 64)), (None, True, (2, 3))])
def test_output_shapes_by_pooling_and_top(pooling, include_top, expected_shape):
  config = models.ModelConfig("resnet18", pooling=pooling, include_top=include_top, **SMALL)
  model = models.build_model(config)
  assert tuple(model(_images(batch=2)).shape) == expected_shape


def test_input_size_32_and_odd_sizes():
  for size, feature_size in ((32, 1), (72, 3), (100, 4)):
    config = models.ModelConfig("resnet18", image_size=size, include_top=False, pooling=None,
                                base_width=4, num_classes=3)
    assert tuple(models.build_model(config).output.shape) == (None, feature_size, feature_size, 32)


# Counts at 224 px, 1000 classes, as keras.applications.X(weights=None).count_params() gives
# them in Keras 3.15; tests/test_weights.py compares ResNet50 with keras.applications live.
KERAS_APPLICATIONS_PARAMS = {"resnet50": 25_636_712, "resnet101": 44_707_176,
                             "resnet152": 60_419_944, "vgg16": 138_357_544,
                             "vgg19": 143_667_240}
# v1.5 drops the 53 convolution biases of ResNet-50 v1 (26,560 weights).
RESNET50_V15_PARAMS = 25_610_152
# torchvision resnet18/34 (same v1.5 layout, no conv bias); torch counts no BN moving statistics.
TORCHVISION_TRAINABLE_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672,
                                "resnet50": 25_557_032}


def _count_trainable(model):
  return sum(int(np.prod(variable.shape)) for variable in model.trainable_variables)


# The deep ResNets build two 45-60M parameter models each: slow, as in the battery.
@pytest.mark.parametrize("architecture", [
    pytest.param(name, marks=pytest.mark.slow) if name in ("resnet101", "resnet152") else name
    for name in KERAS_APPLICATIONS_PARAMS])
def test_parameter_counts_equal_keras_applications(architecture):
  # keras.applications VGG has the flatten -> 4096 -> 4096 head.
  vgg_top = dict(pooling=None, head=models.HeadConfig((4096, 4096)))
  config = models.ModelConfig(architecture, "v1", **(vgg_top if "vgg" in architecture else {}))
  assert models.build_model(config).count_params() == KERAS_APPLICATIONS_PARAMS[architecture]


@pytest.mark.parametrize("architecture", TORCHVISION_TRAINABLE_PARAMS)
def test_v15_parameter_counts(architecture):
  model = models.build_model(models.ModelConfig(architecture, "v1.5"))
  assert _count_trainable(model) == TORCHVISION_TRAINABLE_PARAMS[architecture]
  if architecture == "resnet50":
    assert model.count_params() == RESNET50_V15_PARAMS


def test_layer_names_pinned(built):
  resnet = {layer.name for layer in built("resnet50_v1").layers}
  assert {"normalization", "conv1_pad", "conv1_conv", "conv1_bn", "pool1_pool",
          "conv2_block1_0_conv", "conv2_block1_3_bn", "conv3_block4_out", "conv4_block6_2_conv",
          "conv5_block3_add", "avg_pool", "predictions"} <= resnet
  basic = {layer.name for layer in built("resnet18_v1.5").layers}
  assert {"conv2_block2_2_bn", "conv3_block1_0_conv", "max_pool"} <= basic
  assert "conv2_block1_0_conv" not in basic  # identity shortcut where the shape is unchanged
  vgg = {layer.name for layer in built("vgg16").layers}
  assert {"block1_conv1", "block3_conv3", "block5_pool", "flatten", "fc1", "fc1_dropout", "fc2",
          "predictions"} <= vgg
  vgg_bn = {layer.name for layer in built("vgg19_bn").layers}
  assert {"block3_conv4", "block3_conv4_bn", "block3_conv4_relu", "block5_pool"} <= vgg_bn


def test_v1_and_v15_differ_where_documented(built):
  v1, v15 = built("resnet50_v1"), built("resnet50_v1.5")
  strides = lambda model, name: model.get_layer(name).strides  # noqa: E731
  assert strides(v1, "conv3_block1_1_conv") == (2, 2)
  assert strides(v1, "conv3_block1_2_conv") == (1, 1)
  assert strides(v15, "conv3_block1_1_conv") == (1, 1)
  assert strides(v15, "conv3_block1_2_conv") == (2, 2)
  assert v1.get_layer("conv1_conv").use_bias and not v15.get_layer("conv1_conv").use_bias
  assert v1.get_layer("conv1_bn").epsilon == pytest.approx(1.001e-5)
  assert v15.get_layer("conv1_bn").epsilon == pytest.approx(1e-5)
  assert v15.get_layer("conv1_bn").momentum == pytest.approx(0.9)


def test_zero_init_residual_zeroes_last_gamma_of_each_branch():
  for architecture, last_bn in (("resnet50", "conv3_block2_3_bn"),
                                ("resnet18", "conv3_block2_2_bn")):
    model = models.build_model(models.ModelConfig(architecture, zero_init_residual=True, **SMALL))
    assert not np.any(model.get_layer(last_bn).gamma.numpy())
    np.testing.assert_array_equal(model.get_layer("conv3_block2_1_bn").gamma.numpy(), 1.0)


def _sum_of_squares(variables):
  return sum(float(tf.reduce_sum(tf.square(variable))) for variable in variables)


def test_weight_decay_on_every_resnet_weight_but_batch_norm_vgg_kernels_only():
  """ResNet: every weight but BatchNorm's, the dense biases too (the official resnet_model's
  regularizers, and its single_l2_loss_op's sum); VGG: kernels (the official vgg_model's)."""
  resnet = models.build_model(models.ModelConfig("resnet18", "v1", head=models.HeadConfig((8,)),
                                                 weight_decay=3e-4, **SMALL))
  decayed = [variable for layer in resnet.layers if not isinstance(layer, keras.layers.BatchNormalization)
             for variable in layer.trainable_weights]
  assert {variable.path for variable in decayed} >= {"conv1_conv/bias", "fc1/bias",
                                                     "predictions/bias"}
  assert len(resnet.losses) == len(decayed)
  assert float(tf.add_n(resnet.losses)) == pytest.approx(3e-4 * _sum_of_squares(decayed), rel=1e-5)
  vgg = models.build_model(dataclasses.replace(BATTERY["vgg16"], weight_decay=3e-4))
  kernels = [layer.kernel for layer in vgg.layers
             if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]
  assert len(vgg.losses) == len(kernels)
  assert float(tf.add_n(vgg.losses)) == pytest.approx(3e-4 * _sum_of_squares(kernels), rel=1e-5)
  no_decay = models.build_model(dataclasses.replace(BATTERY["resnet18_v1"], weight_decay=0.0))
  assert no_decay.losses == []


def test_channels_first_matches_channels_last():
  for config in (BATTERY["resnet18_v1"], BATTERY["vgg16"]):
    last = models.build_model(dataclasses.replace(config, data_format="channels_last"))
    first = models.build_model(dataclasses.replace(config, data_format="channels_first"))
    first.set_weights(last.get_weights())
    assert first.get_layer("conv1_conv" if "resnet" in config.architecture
                           else "block1_conv1").data_format == "channels_first"
    images = _images(batch=2)
    try:
      outputs = first(images).numpy()
    except tf.errors.UnimplementedError as error:
      # TF's own CPU kernels take NHWC only; oneDNN's (on by default on AVX-512 VNNI / AMX
      # machines, TF_ENABLE_ONEDNN_OPTS=1 elsewhere) and GPUs take NCHW too.
      pytest.skip(f"this machine's CPU convolution refuses channels_first: {error.message[:120]}")
    np.testing.assert_allclose(outputs, last(images).numpy(), rtol=1e-4, atol=1e-4)


def test_input_normalization_layer_values():
  red = np.array([[255.0, 0.0, 0.0]], "float32")
  np.testing.assert_allclose(models.InputNormalization("caffe")(red).numpy(),
                             [[-103.939, -116.779, 255 - 123.68]], rtol=1e-6)
  np.testing.assert_allclose(models.InputNormalization("unit")(red.astype("uint8")).numpy(),
                             [[1.0, -1.0, -1.0]])


@pytest.mark.parametrize("mode", constants.NORMALIZATION_MODES)
def test_input_normalization_in_model_equals_pipeline_normalize(mode):
  raw = _images(batch=2).round()
  config = models.ModelConfig("resnet18", base_width=4, num_classes=3, image_size=64)
  plain = models.build_model(config)
  normalizing = models.build_model(dataclasses.replace(config, input_normalization=mode))
  normalizing.set_weights(plain.get_weights())
  expected = plain(preprocessing.normalize(raw, mode)).numpy()
  np.testing.assert_allclose(normalizing(raw).numpy(), expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(normalizing(raw.astype("uint8")).numpy(), expected, rtol=1e-5,
                             atol=1e-5)


def _train_step(model, optimizer, images, labels):
  with tf.GradientTape() as tape:
    logits = model(images, training=True)
    loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
        labels, logits, from_logits=True)) + tf.add_n(model.losses)
    scaled = optimizer.scale_loss(loss)
  gradients = tape.gradient(scaled, model.trainable_variables)
  optimizer.apply(gradients, model.trainable_variables)
  return logits, loss


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_logits_float32_and_finite_step(policy):
  keras.utils.set_random_seed(2)
  config = models.ModelConfig("resnet18", "v1.5", dtype_policy=policy, image_size=32,
                              num_classes=3, base_width=8)
  model = models.build_model(config)
  assert keras.config.dtype_policy().name == "float32"  # set per layer, not globally
  compute_dtype = policy.removeprefix("mixed_")
  assert model.get_layer("conv2_block1_1_conv").compute_dtype == compute_dtype
  assert all(variable.dtype == "float32" for variable in model.variables)
  optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
  if policy == "mixed_float16":
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  before = model.get_layer("predictions").kernel.numpy()
  logits, loss = _train_step(model, optimizer, _images(size=32), np.array([0, 1, 2, 0]))
  assert logits.dtype == tf.float32
  assert np.isfinite(float(loss))
  assert not np.array_equal(model.get_layer("predictions").kernel.numpy(), before)
  clone = keras.Model.from_config(model.get_config())
  assert clone.get_layer("conv2_block1_1_conv").compute_dtype == compute_dtype
  assert clone.get_layer("predictions").compute_dtype == "float32"


def _snapshot(layers):
  return {variable.path: variable.numpy().copy()
          for layer in layers for variable in layer.variables}


def _changed(before, model):
  current = {variable.path: variable.numpy() for variable in model.variables}
  return {path for path, value in before.items() if not np.array_equal(current[path], value)}


def test_frozen_backbone_keeps_weights_and_batch_norm_statistics():
  keras.utils.set_random_seed(3)
  config = models.ModelConfig("resnet18", "v1", head=models.HeadConfig((8,)), **SMALL)
  model = models.build_model(config)
  models.freeze_backbone(model)
  backbone = [layer for layer in model.layers if len(layer.output.shape) == 4]
  head = [model.get_layer("fc1"), model.get_layer("predictions")]
  assert {id(v) for v in model.trainable_variables} == {id(v) for l in head for v in l.variables}
  backbone_before, head_before = _snapshot(backbone), _snapshot(head)
  assert any("moving_mean" in path for path in backbone_before)
  images = _images()
  features = models.feature_model(model)
  # A frozen BatchNorm uses its moving statistics even when called with training=True.
  np.testing.assert_allclose(features(images, training=True).numpy(),
                             features(images, training=False).numpy(), rtol=1e-5, atol=1e-5)
  _train_step(model, keras.optimizers.SGD(0.1), images, np.array([0, 1, 2, 0]))
  assert not _changed(backbone_before, model)
  assert _changed(head_before, model) == set(head_before)
  models.unfreeze_all(model)
  assert len(model.trainable_variables) == len(models.build_model(config).trainable_variables)


@pytest.mark.parametrize("name, stage, frozen, trained", [
    ("resnet18_v1.5", "conv3", "conv2_block2_2_bn", "conv3_block1_1_conv"),
    ("vgg16_bn", "block4", "block3_conv3_bn", "block4_conv1"),
])
def test_freeze_below_freezes_earlier_stages_only(name, stage, frozen, trained):
  keras.utils.set_random_seed(4)
  model = models.build_model(BATTERY[name])
  models.freeze_below(model, stage)
  assert not model.get_layer("conv1_conv" if "resnet" in name else "block1_conv1").trainable
  assert not model.get_layer(frozen).trainable
  assert model.get_layer(trained).trainable
  # The projection shortcut of the first block is part of the stage, not before it.
  if "resnet" in name:
    assert model.get_layer(f"{stage}_block1_0_conv").trainable
  before = _snapshot(model.layers)
  _train_step(model, keras.optimizers.SGD(0.1), _images(), np.array([0, 1, 2, 0]))
  changed = _changed(before, model)
  assert not any(path.startswith(f"{frozen}/") for path in changed)
  assert any(path.startswith(f"{trained}/") for path in changed)
  assert f"{frozen}/moving_mean" not in changed


def test_feature_model_outputs_pre_logits(built):
  model = built("vgg16")
  features = models.feature_model(model)
  assert tuple(features.output.shape) == (None, 16)
  assert features.get_layer("fc2") is model.get_layer("fc2")
  no_top = models.build_model(models.ModelConfig("resnet18", include_top=False, **SMALL))
  assert models.feature_model(no_top) is no_top


@pytest.mark.parametrize("change, message", [
    (dict(architecture="resnet51"),
     r"architecture must be one of \('resnet18', .*'vgg19'\)\. Received: 'resnet51'"),
    (dict(variant="v2"), r"variant must be one of \('v1', 'v1\.5'\)\. Received: 'v2'"),
    (dict(pooling="mean"), r"pooling must be one of \('avg', 'max', None\)\. Received: 'mean'"),
    (dict(image_size=31), r"image_size must be an integer >= 32\. Received: 31"),
    (dict(num_classes=0), r"num_classes must be an integer >= 1\. Received: 0"),
    (dict(base_width=0), r"base_width must be an integer >= 1\. Received: 0"),
    (dict(dtype_policy="float16"), r"dtype_policy must be one of \('float32', 'mixed_float16', "
                                   r"'mixed_bfloat16'\)\. Received: 'float16'"),
    (dict(data_format="NHWC"), r"data_format must be one of \('channels_last', "
                               r"'channels_first', None\)\. Received: 'NHWC'"),
    (dict(conv_padding="torch"), r"conv_padding must be one of \('same', 'symmetric'\)\. "
                                 r"Received: 'torch'"),
    (dict(input_normalization="imagenet"),
     r"input_normalization must be one of \('rgb_mean', 'caffe', 'torch', 'unit', None\)\. "
     r"Received: 'imagenet'"),
    (dict(weight_decay=-1.0), r"weight_decay must be >= 0\. Received: -1\.0"),
    (dict(sync_batch_norm="yes"), r"sync_batch_norm must be True or False\. Received: 'yes'"),
    (dict(head=(512,)), r"head must be a HeadConfig\. Received: \(512,\)"),
    (dict(include_top=False, head=models.HeadConfig((8,))),
     r"head only applies with include_top=True; leave it at HeadConfig\(\)\. Received: "
     r"include_top=False, head=HeadConfig\(hidden_units=\(8,\), dropout=0\.0, "
     r"activation='relu'\)"),
    (dict(pooling=None, any_input_size=True),
     r"any_input_size needs global pooling \('avg' or 'max'\).*Received: any_input_size=True, "
     r"pooling=None"),
])
def test_a_bad_model_config_is_refused_when_made(change, message):
  with pytest.raises(ValueError, match=f"^{message}$"):
    models.ModelConfig(**{**SMALL, **change})
  # The same check when a valid config is changed.
  with pytest.raises(ValueError, match=f"^{message}$"):
    dataclasses.replace(models.ModelConfig(**SMALL), **change)


@pytest.mark.parametrize("fields, message", [
    (dict(dropout=1.0), r"dropout must be in \[0, 1\)\. Received: 1\.0"),
    (dict(hidden_units=(0,)), r"hidden_units\[i\] must be an integer >= 1\. Received: 0"),
    (dict(activation="nope"), r"activation must name a Keras activation\. Received: 'nope'"),
])
def test_a_bad_head_config_is_refused_when_made(fields, message):
  with pytest.raises(ValueError, match=f"^{message}$"):
    models.HeadConfig(**fields)


def test_bad_stage_and_normalization_mode_raise_value_error(built):
  with pytest.raises(ValueError, match=r"Received: stage='block2'"):
    models.freeze_below(built("resnet18_v1"), "block2")
  with pytest.raises(ValueError, match=r"^mode must be one of \('rgb_mean', 'caffe', 'torch', "
                     r"'unit'\)\. Received: 'bgr'$"):
    models.InputNormalization("bgr")



def test_each_build_draws_fresh_weights():
  # An initializer instance shared between layers would repeat its values (Keras 3, unseeded).
  config = models.ModelConfig("resnet18", "v1.5", head=models.HeadConfig((8,)), **SMALL)
  first, second = models.build_model(config), models.build_model(config)
  for name in ("conv1_conv", "fc1", "predictions"):
    assert not np.allclose(first.get_layer(name).kernel.numpy(),
                           second.get_layer(name).kernel.numpy())
  assert first.get_layer("predictions").kernel.numpy().std() == pytest.approx(0.01, rel=0.3)


def _official_batch_norm(axis, policy, gamma, beta, shape):
  """The official model's BatchNorm: tf_keras', fused, momentum 0.9, epsilon 1e-5."""
  tf_keras = import_official("tf_keras")
  layer = tf_keras.layers.BatchNormalization(axis=axis, momentum=0.9, epsilon=1e-5,
                                             dtype=tf_keras.mixed_precision.Policy(policy))
  layer.build(shape)
  assert layer.fused
  layer.gamma.assign(gamma)
  layer.beta.assign(beta)
  return layer


def _ours_batch_norm(axis, policy, gamma, beta, shape, synchronized=False):
  layer = models.FusedBatchNormalization(axis=axis, momentum=0.9, epsilon=1e-5, dtype=policy,
                                         synchronized=synchronized)
  layer.build(shape)
  layer.gamma.assign(gamma)
  layer.beta.assign(beta)
  return layer


def _train_and_infer(layer, inputs, upstream, dtype):
  """outputs, input/gamma/beta gradients, inference outputs, moving mean and variance."""
  x = tf.cast(inputs, dtype)
  with tf.GradientTape() as tape:
    tape.watch(x)
    outputs = layer(x, training=True)
    loss = tf.reduce_sum(tf.cast(outputs, tf.float32) * upstream)
  gradients = tape.gradient(loss, [x, layer.gamma, layer.beta])
  inference = layer(x, training=False)
  assert outputs.dtype == dtype
  return ([tf.cast(t, tf.float32).numpy() for t in (outputs, *gradients, inference)]
          + [layer.moving_mean.numpy(), layer.moving_variance.numpy()])


BATCH_NORM_RESULTS = ("outputs", "input gradient", "gamma gradient", "beta gradient", "inference",
                      "moving mean", "moving variance")


@pytest.mark.parametrize("axis, policy", [(-1, "float32"), (1, "float32"), (-1, "mixed_bfloat16")])
def test_fused_batch_norm_trains_like_the_official_batch_norm(axis, policy):
  """Against tf_keras' fused layer: the moving variance moves toward the batch variance with
  Bessel's correction, which Keras 3's layer leaves out."""
  shape = (6, 16, 5, 7) if axis == 1 else (6, 5, 7, 16)
  rng = np.random.default_rng(0)
  inputs = tf.constant(rng.normal(2.0, 3.0, shape), tf.float32)
  upstream = tf.constant(rng.normal(0.0, 1.0, shape), tf.float32)
  gamma, beta = rng.uniform(0.5, 1.5, 16), rng.normal(0.0, 0.5, 16)
  official = _official_batch_norm(axis, policy, gamma, beta, shape)
  ours = _ours_batch_norm(axis, policy, gamma, beta, shape)
  dtype = ours.compute_dtype
  theirs, mine = (_train_and_infer(layer, inputs, upstream, dtype) for layer in (official, ours))
  # bfloat16 keeps 8 bits of mantissa: outputs and input gradients round at ~0.4%.
  tolerance = 1e-5 if policy == "float32" else 2e-2
  for name, official_value, our_value in zip(BATCH_NORM_RESULTS, theirs, mine):
    np.testing.assert_allclose(our_value, official_value, rtol=tolerance, atol=tolerance,
                               err_msg=name)
  # The kernel moves the statistics, as tf_keras has it do: equal bit for bit.
  np.testing.assert_array_equal(mine[-2:], theirs[-2:])
  # The batch did move the statistics, and Keras 3's biased variance would be off by n/(n-1).
  count = np.prod(shape) / 16
  assert np.abs(mine[-2]).min() > 0.1 and np.abs(mine[-1] - 1.0).max() > 0.5
  keras_layer = keras.layers.BatchNormalization(axis=axis, momentum=0.9, epsilon=1e-5, dtype=policy)
  keras_variance = _train_and_infer(keras_layer, inputs, upstream, dtype)[-1]
  np.testing.assert_allclose((mine[-1] - 0.9) / (keras_variance - 0.9), count / (count - 1),
                             rtol=1e-4 if policy == "float32" else 1e-2)


def test_synchronized_batch_norm_on_two_replicas_equals_the_official_on_the_whole_batch():
  """Our synchronized moments (one all-reduce, all_replicas_sum's gradient) on each replica's
  half of the batch, in graph mode, against tf_keras' fused layer on the whole batch."""
  devices = [device.name for device in tf.config.list_logical_devices("CPU")][:2]
  strategy = tf.distribute.MirroredStrategy(devices, tf.distribute.ReductionToOneDevice())
  rng = np.random.default_rng(1)
  halves = rng.normal(2.0, 3.0, (2, 3, 5, 5, 8)).astype(np.float32)
  # Each half its own mean, so moments of one replica alone would differ from the pair's.
  halves[1] += 4.0
  upstream = rng.normal(0.0, 1.0, (2, 3, 5, 5, 8)).astype(np.float32)
  gamma, beta = rng.uniform(0.5, 1.5, 8), rng.normal(0.0, 0.5, 8)
  with strategy.scope():
    ours = _ours_batch_norm(-1, "float32", gamma, beta, (3, 5, 5, 8), synchronized=True)

  @tf.function
  def step():
    def replica_step():
      index = tf.distribute.get_replica_context().replica_id_in_sync_group
      x = tf.gather(halves, index)
      with tf.GradientTape() as tape:
        tape.watch(x)
        outputs = ours(x, training=True)
        loss = tf.reduce_sum(outputs * tf.gather(upstream, index))
      return (outputs, *tape.gradient(loss, [x, ours.gamma, ours.beta]))
    return strategy.run(replica_step)

  per_replica = [strategy.experimental_local_results(value) for value in step()]
  # Activations and input gradients per example; gamma and beta gradients summed over replicas.
  mine = ([np.concatenate([t.numpy() for t in per_replica[i]]) for i in (0, 1)]
          + [sum(t.numpy() for t in per_replica[i]) for i in (2, 3)]
          + [ours.moving_mean.numpy(), ours.moving_variance.numpy()])
  official = _official_batch_norm(-1, "float32", gamma, beta, (6, 5, 5, 8))
  theirs = _train_and_infer(official, halves.reshape(6, 5, 5, 8), upstream.reshape(6, 5, 5, 8),
                            tf.float32)
  names = BATCH_NORM_RESULTS[:4] + BATCH_NORM_RESULTS[5:]
  for name, official_value, our_value in zip(names, theirs[:4] + theirs[5:], mine):
    np.testing.assert_allclose(our_value, official_value, rtol=1e-4, atol=1e-4, err_msg=name)
  # The moments are the pair's: the mean moved towards that of both halves (about 4).
  np.testing.assert_allclose(mine[-2], 0.1 * halves.mean(axis=(0, 1, 2, 3)), rtol=1e-4)


def test_fused_and_stock_batch_norm_models_are_interchangeable():
  config = models.ModelConfig("resnet18", "v1.5", **SMALL)
  keras.utils.set_random_seed(5)
  fused = models.build_model(config)
  stock = models.build_model(dataclasses.replace(config, fused_batch_norm=False))
  assert sum(isinstance(l, models.FusedBatchNormalization) for l in fused.layers) == 20
  assert not any(isinstance(l, models.FusedBatchNormalization) for l in stock.layers)
  assert [w.path for w in fused.weights] == [w.path for w in stock.weights]
  stock.set_weights(fused.get_weights())
  images = _images()
  results = []
  for model in (fused, stock):
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      loss = tf.reduce_sum(logits ** 2)
    results.append((logits.numpy(), tape.gradient(loss, model.trainable_variables)))
  (fused_logits, fused_gradients), (stock_logits, stock_gradients) = results
  np.testing.assert_allclose(fused_logits, stock_logits, rtol=1e-4, atol=1e-4)
  assert len(fused_gradients) == len(stock_gradients) == len(fused.trainable_variables)
  for variable, fused_gradient, stock_gradient in zip(fused.trainable_variables, fused_gradients,
                                                      stock_gradients):
    assert np.abs(stock_gradient).max() > 0, variable.path
    np.testing.assert_allclose(fused_gradient, stock_gradient, rtol=1e-3, atol=1e-4,
                               err_msg=variable.path)
  # The moving variances differ by Bessel's correction (the official's; Keras 3 leaves it out:
  # test_fused_batch_norm_trains_like_the_official_batch_norm); everything else is equal.
  for fused_weight, stock_weight in zip(fused.weights, stock.weights):
    if not fused_weight.path.endswith("moving_variance"):
      np.testing.assert_allclose(fused_weight.numpy(), stock_weight.numpy(), rtol=1e-4,
                                 atol=1e-5, err_msg=fused_weight.path)


@pytest.mark.parametrize("architecture, padded", [
    ("resnet18", ["conv3_block1_1_pad", "conv4_block1_1_pad", "conv5_block1_1_pad"]),
    ("resnet50", ["conv3_block1_2_pad", "conv4_block1_2_pad", "conv5_block1_2_pad"]),
])
def test_symmetric_padding_pads_the_strided_3x3_convolutions_only(architecture, padded):
  """torchvision's convention; the variables, and so checkpoints, are the same as with "same"."""
  config = models.ModelConfig(architecture, "v1.5", **SMALL)
  keras.utils.set_random_seed(6)
  same = models.build_model(config)
  symmetric = models.build_model(dataclasses.replace(config, conv_padding="symmetric"))
  pads = [layer.name for layer in symmetric.layers if isinstance(layer, keras.layers.ZeroPadding2D)]
  assert pads == ["conv1_pad", *padded]
  assert [layer.padding for layer in symmetric.layers if layer.name in
          {name.replace("_pad", "_conv") for name in padded}] == ["valid"] * 3
  assert [w.path for w in symmetric.weights] == [w.path for w in same.weights]
  symmetric.set_weights(same.get_weights())
  # At 64 px every strided map is even-sized: "same" pads 0 before and 1 after, so they differ.
  images = _images(batch=2)
  assert not np.allclose(same(images).numpy(), symmetric(images).numpy(), rtol=1e-3, atol=1e-3)


def test_stem_pool_pads_as_the_official_model_or_as_keras_applications():
  """"same": the official resnet_model.py's MaxPooling2D(padding='same'), 0 pixels before and 1
  after on an even map; "symmetric": keras.applications' ZeroPadding2D(1) and a valid pool."""
  config = models.ModelConfig("resnet50", "v1.5", **SMALL)
  official = models.build_model(config)
  symmetric = models.build_model(dataclasses.replace(config, pool_padding="symmetric"))
  # Without a choice, each variant pools as its reference: v1 is keras.applications' network.
  assert models.build_model(dataclasses.replace(config, variant="v1")).get_layer(
      "pool1_pad").padding == ((1, 1), (1, 1))
  assert official.get_layer("pool1_pool").padding == "same"
  assert "pool1_pad" not in [layer.name for layer in official.layers]
  assert symmetric.get_layer("pool1_pad").padding == ((1, 1), (1, 1))
  assert [w.path for w in symmetric.weights] == [w.path for w in official.weights]
  symmetric.set_weights(official.get_weights())
  images = _images(batch=2)
  stem = [keras.Model(model.input, model.get_layer("pool1_pool").output)
          for model in (official, symmetric)]
  relu = keras.Model(official.input, official.get_layer("conv1_relu").output)(images).numpy()
  assert relu.shape[1:3] == (32, 32)
  # Both are the same 3x3/2 max over windows whose corner moves by one pixel (ReLU outputs are
  # non-negative, so zero padding is no padding to a max).
  padded = np.pad(relu, ((0, 0), (0, 1), (0, 1), (0, 0)))
  official_windows = np.stack([padded[:, i:i + 31:2, j:j + 31:2] for i in range(3) for j in range(3)])
  np.testing.assert_allclose(stem[0](images).numpy(), official_windows.max(axis=0), rtol=1e-6)
  padded = np.pad(relu, ((0, 0), (1, 1), (1, 1), (0, 0)))
  symmetric_windows = np.stack([padded[:, i:i + 31:2, j:j + 31:2] for i in range(3) for j in range(3)])
  np.testing.assert_allclose(stem[1](images).numpy(), symmetric_windows.max(axis=0), rtol=1e-6)
  assert not np.allclose(official(images).numpy(), symmetric(images).numpy(), rtol=1e-3, atol=1e-3)
  with pytest.raises(ValueError, match=r"pool_padding must be one of \('same', 'symmetric', None\)\. "
                                       r"Received: 'torch'"):
    models.ModelConfig("resnet50", pool_padding="torch")

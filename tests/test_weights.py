"""load_pretrained: keras.applications parity, our own files, errors naming the layer; named
weights, their caches and what travels with them."""
import dataclasses
import hashlib
import inspect
import json
import logging
import os
import re

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
# keras.applications' own URL and hash constants, to pin ours to.
from keras.src.applications import resnet as keras_resnet
from keras.src.applications import vgg16 as keras_vgg16
from keras.src.applications import vgg19 as keras_vgg19
# Keras 2's save_weights layout, which keras.applications' downloadable .h5 files use;
# Keras 3 writes it only through this module.
from keras.src.legacy.saving import legacy_h5_format

from input_pipeline import preprocessing
from input_pipeline.config import DataConfig
from official_resnet import config as config_lib
from official_resnet import export
from official_resnet import initial_weights
from official_resnet import models
from official_resnet import run_state
from official_resnet.models import weight_sources
import test_recipes

SIZE = 64  # Weight shapes of ResNet do not depend on the input size; 64 px keeps CPU time low.


def _images(batch=2, size=SIZE, seed=0):
  return np.random.default_rng(seed).uniform(-2, 2, (batch, size, size, 3)).astype("float32")


def _save_legacy_h5(model, path):
  with h5py.File(path, "w") as h5_file:
    legacy_h5_format.save_weights_to_hdf5_group(h5_file, model)
  return str(path)


@pytest.fixture(scope="module")
def resnet50_files(tmp_path_factory):
  """keras.applications ResNet50 (top, random weights) and its no-top twin, saved to files."""
  directory = tmp_path_factory.mktemp("resnet50")
  keras.utils.set_random_seed(10)
  top = keras.applications.ResNet50(weights=None, input_shape=(SIZE, SIZE, 3),
                                    classifier_activation=None)
  no_top = keras.applications.ResNet50(weights=None, include_top=False, pooling="avg",
                                       input_shape=(SIZE, SIZE, 3))
  top.save_weights(directory / "resnet50.weights.h5")
  images = _images()
  return dict(
      top_h5=_save_legacy_h5(top, directory / "resnet50.h5"),
      top_weights_h5=str(directory / "resnet50.weights.h5"),
      no_top_h5=_save_legacy_h5(no_top, directory / "resnet50_notop.h5"),
      logits=top(images).numpy(), features=no_top(images).numpy(),
      layer_names=[layer.name for layer in top.layers[1:]],
      count_params=top.count_params())


def _resnet50(**changes):
  return models.build_model(models.ModelConfig("resnet50", "v1", image_size=SIZE, **changes))


@pytest.mark.parametrize("file_key", ["top_h5", "top_weights_h5"])
def test_resnet50_logits_equal_keras_applications(resnet50_files, file_key):
  model = _resnet50()
  models.load_pretrained(model, resnet50_files[file_key])
  np.testing.assert_allclose(model(_images()).numpy(), resnet50_files["logits"], atol=1e-4)
  assert [layer.name for layer in model.layers[1:]] == resnet50_files["layer_names"]
  assert model.count_params() == resnet50_files["count_params"]


def test_resnet50_no_top_file_into_no_top_and_new_head(resnet50_files):
  no_top = _resnet50(include_top=False)
  models.load_pretrained(no_top, resnet50_files["no_top_h5"])
  np.testing.assert_allclose(no_top(_images()).numpy(), resnet50_files["features"], atol=1e-4)
  # A 3-class model takes the backbone and keeps its new head as initialised.
  new_head = _resnet50(num_classes=3)
  head_before = new_head.get_layer("predictions").kernel.numpy().copy()
  models.load_pretrained(new_head, resnet50_files["no_top_h5"])
  features = models.feature_model(new_head)(_images()).numpy()
  np.testing.assert_allclose(features, resnet50_files["features"], atol=1e-4)
  np.testing.assert_array_equal(new_head.get_layer("predictions").kernel.numpy(), head_before)


def test_top_file_with_other_class_count_names_predictions(resnet50_files):
  model = _resnet50(num_classes=3)
  with pytest.raises(ValueError, match=r"'predictions' expects shapes \[\(2048, 3\), \(3,\)\]\. "
                     r"Received: 'predictions' with shapes \[\(2048, 1000\), \(1000,\)\]"):
    models.load_pretrained(model, resnet50_files["top_h5"])
  # load_head=False: fine-tuning to 3 classes from the 1000-class file.
  models.load_pretrained(model, resnet50_files["top_h5"], load_head=False)
  assert model.get_layer("conv1_conv").kernel.shape == (7, 7, 3, 64)


@pytest.mark.parametrize("file_key", ["top_h5", "top_weights_h5"])
def test_v1_file_into_v15_model_names_first_layer_and_shapes(resnet50_files, file_key):
  model = models.build_model(models.ModelConfig("resnet50", "v1.5", image_size=SIZE))
  before = model.get_layer("conv1_conv").kernel.numpy().copy()
  with pytest.raises(ValueError, match=r"layer 'conv1_conv' .*\(7, 7, 3, 64\)\]\. Received: "
                     r".*\(7, 7, 3, 64\), \(64,\)\]"):
    models.load_pretrained(model, resnet50_files[file_key])
  np.testing.assert_array_equal(model.get_layer("conv1_conv").kernel.numpy(), before)


def test_vgg16_logits_and_features_equal_keras_applications(tmp_path):
  """Top compared at 64 px: fc1 then has 2 x 2 x 512 inputs instead of 224 px's 7 x 7 x 512."""
  keras.utils.set_random_seed(11)
  reference = keras.applications.VGG16(weights=None, input_shape=(SIZE, SIZE, 3),
                                       classifier_activation=None)
  path = _save_legacy_h5(reference, tmp_path / "vgg16.h5")
  images = _images()
  config = models.ModelConfig("vgg16", image_size=SIZE, pooling=None,
                              head=models.HeadConfig((4096, 4096)))
  model = models.build_model(config)
  models.load_pretrained(model, path)
  np.testing.assert_allclose(model(images).numpy(), reference(images).numpy(), atol=1e-4)
  reference_names = [layer.name for layer in reference.layers[1:]]
  assert [layer.name for layer in model.layers[1:]] == reference_names
  # The same with-top file into a no-top model: the head is skipped.
  no_top = models.build_model(dataclasses.replace(config, include_top=False,
                                                  head=models.HeadConfig()))
  models.load_pretrained(no_top, path)
  reference_features = keras.Model(reference.input, reference.get_layer("block5_pool").output)
  np.testing.assert_allclose(no_top(images).numpy(), reference_features(images).numpy(),
                             atol=1e-4)


SMALL = dict(image_size=32, num_classes=3, base_width=4)


def _small(architecture="resnet18", **changes):
  keras.utils.set_random_seed(12)
  return models.build_model(models.ModelConfig(architecture, "v1.5", **{**SMALL, **changes}))


def test_own_checkpoint_and_weights_file_round_trip(tmp_path):
  trained = _small(head=models.HeadConfig((8,)))
  optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
  images = _images(size=32)
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(trained(images, training=True))
  optimizer.apply(tape.gradient(loss, trained.trainable_variables), trained.trainable_variables)
  # The trainer's layout: CheckpointManager in model_dir over Checkpoint(model, optimizer, step).
  checkpoint = tf.train.Checkpoint(model=trained, optimizer=optimizer, step=tf.Variable(7))
  tf.train.CheckpointManager(checkpoint, str(tmp_path / "model_dir"), max_to_keep=1).save(7)
  trained.save_weights(tmp_path / "own.weights.h5")
  expected = trained(images).numpy()
  model_dir = tmp_path / "model_dir"
  for path in (model_dir, model_dir / "ckpt-7", tmp_path / "own.weights.h5"):
    fresh = _small(head=models.HeadConfig((8,)))
    assert not np.allclose(fresh(images).numpy(), expected)
    models.load_pretrained(fresh, path)
    np.testing.assert_allclose(fresh(images).numpy(), expected, rtol=1e-5, atol=1e-5)
  # Weightless layers may differ: the same weights behind an in-model normalization.
  normalizing = _small(head=models.HeadConfig((8,)), input_normalization="unit")
  models.load_pretrained(normalizing, tmp_path / "model_dir")
  np.testing.assert_allclose(normalizing(images * 127.5 + 127.5).numpy(), expected, rtol=1e-4,
                             atol=1e-4)


def test_own_checkpoint_into_new_head_with_load_head_false(tmp_path):
  source = _small()
  tf.train.Checkpoint(model=source).save(str(tmp_path / "ckpt"))
  target = _small(num_classes=5)
  with pytest.raises(ValueError, match=r"'predictions' expects shapes \[\(32, 5\), \(5,\)\]\. "
                     r"Received: 'predictions' with shapes \[\(32, 3\), \(3,\)\]"):
    models.load_pretrained(target, tmp_path)
  models.load_pretrained(target, tmp_path, load_head=False)
  images = _images(size=32)
  np.testing.assert_allclose(models.feature_model(target)(images).numpy(),
                             models.feature_model(source)(images).numpy(), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def resnet101_files(tmp_path_factory):
  """A small ResNet-101 v1.5 in each of the three formats."""
  directory = tmp_path_factory.mktemp("resnet101")
  deeper = _small("resnet101")
  deeper.save_weights(directory / "deeper.weights.h5")
  return dict(legacy_h5=_save_legacy_h5(deeper, directory / "deeper.h5"),
              weights_h5=str(directory / "deeper.weights.h5"),
              checkpoint=tf.train.Checkpoint(model=deeper).save(str(directory / "ckpt")))


@pytest.mark.parametrize("file_format", ["legacy_h5", "weights_h5", "checkpoint"])
def test_other_depth_is_refused_naming_the_layer(resnet101_files, file_format):
  path = resnet101_files[file_format]
  # By name the file's extra blocks are left over; by order the first shifted layer differs.
  extra = (r"the model has no layer for 'conv4_block7_1_conv'" if file_format != "weights_h5"
           else r"layer 'conv5_block1_1_conv' expects shapes \[\(1, 1, 64, 32\)\]\. "
                r"Received: 'layers/conv2d_43' with shapes \[\(1, 1, 64, 16\)\]")
  with pytest.raises(ValueError, match=extra):
    models.load_pretrained(_small("resnet50"), path)
  with pytest.raises(ValueError, match=r"layer 'conv2_block1_1_conv'.*Received"):
    models.load_pretrained(_small(), path)


def test_bad_paths_raise_value_error(tmp_path):
  model = _small("resnet18")
  with pytest.raises(ValueError, match=r"Received: path='.*missing.h5'"):
    models.load_pretrained(model, tmp_path / "missing.h5")
  with pytest.raises(ValueError, match=r"directory without a checkpoint. Received: path="):
    models.load_pretrained(model, tmp_path)


def test_keras1_weight_names_in_legacy_h5(tmp_path):
  """keras.applications' VGG16 .h5 files date from Keras 1: weights named `block1_conv1_W_1:0`."""
  config = models.ModelConfig("vgg16", pooling=None, head=models.HeadConfig((8,)), **SMALL)
  keras.utils.set_random_seed(13)
  source = models.build_model(config)
  path = _save_legacy_h5(source, tmp_path / "vgg16_keras1.h5")
  text = lambda value: value.decode() if isinstance(value, bytes) else value  # noqa: E731
  with h5py.File(path, "r+") as h5_file:
    for layer_name in map(text, h5_file.attrs["layer_names"]):
      group = h5_file[layer_name]
      renamed = []
      for old, suffix in zip(map(text, group.attrs["weight_names"]), ("W", "b")):
        renamed.append(f"{layer_name}_{suffix}_1:0")
        group.move(old, renamed[-1])
      group.attrs["weight_names"] = [name.encode() for name in renamed]
  target = models.build_model(config)
  images = _images(size=32)
  assert not np.allclose(target(images).numpy(), source(images).numpy())
  models.load_pretrained(target, path)
  np.testing.assert_allclose(target(images).numpy(), source(images).numpy(), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- named weights


def _served(directory, name, content):
  """A file `name` with `content` behind a file:// URL standing for the download server."""
  directory.mkdir(exist_ok=True)
  (directory / name).write_bytes(content)
  return directory.as_uri() + "/"


def test_torchvision_name_downloads_checks_and_then_reads_the_cache(tmp_path, monkeypatch):
  content = b"torchvision resnet18 weights"
  sha256 = hashlib.sha256(content).hexdigest()
  file_name = f"resnet18-{sha256[:8]}.pth"
  server = tmp_path / "server"
  monkeypatch.setattr(weight_sources, "TORCHVISION_URL", _served(server, file_name, content))
  monkeypatch.setitem(weight_sources.TORCHVISION_WEIGHTS, "resnet18",
                      {"IMAGENET1K_V1": (file_name, 256)})
  monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
  cached = str(tmp_path / "torch_home" / "hub" / "checkpoints" / file_name)
  path, info = weight_sources.resolve("torchvision", architecture="resnet18")
  assert path == cached and open(path, "rb").read() == content
  assert info == weight_sources.WeightsInfo(
      normalization="torch", variant="v1.5", conv_padding="symmetric",
      pool_padding="symmetric", eval_resize=256, eval_crop=224, eval_resize_method="bilinear_antialias",
      source="torchvision resnet18 IMAGENET1K_V1")
  assert info.eval_resize_size(224) == 256 and info.eval_resize_size(64) == 73
  # The server gone, the cache answers.
  (server / file_name).unlink()
  assert weight_sources.resolve("torchvision:IMAGENET1K_V1", architecture="resnet18")[0] == cached
  with open(cached, "wb") as file:
    file.write(b"another file")
  with pytest.raises(ValueError, match=rf"{cached} is not the file .*{file_name} names: its sha256 "
                     rf"is [0-9a-f]{{64}}, expected one starting {sha256[:8]}\. Delete it"):
    weight_sources.resolve("torchvision", architecture="resnet18")
  os.remove(cached)
  url = f"{server.as_uri()}/{file_name}"
  with pytest.raises(ValueError, match=rf"^Cannot download {re.escape(url)} \(.*\)\. Without "
                     rf"network, download it elsewhere and put it at {re.escape(cached)}\."):
    weight_sources.resolve("torchvision", architecture="resnet18")
  # A download that is not the named file is refused and not kept.
  _served(server, file_name, b"a corrupted download")
  with pytest.raises(ValueError, match=r"is not the file"):
    weight_sources.resolve("torchvision", architecture="resnet18")
  assert not os.path.exists(cached)


def test_torch_and_keras_caches_honour_their_environment(monkeypatch):
  monkeypatch.delenv("TORCH_HOME", raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", "/caches")
  assert weight_sources.torch_cache_dir() == "/caches/torch/hub/checkpoints"
  monkeypatch.setenv("TORCH_HOME", "/torch")
  assert weight_sources.torch_cache_dir() == "/torch/hub/checkpoints"
  monkeypatch.setenv("KERAS_HOME", "/keras")
  assert weight_sources.keras_cache_dir() == "/keras/models"


def test_imagenet_name_is_keras_applications_file_with_or_without_top(tmp_path, monkeypatch):
  monkeypatch.setenv("KERAS_HOME", str(tmp_path))
  (tmp_path / "models").mkdir()
  hashes = []
  for file_name in ("top.h5", "notop.h5"):
    content = file_name.encode()
    (tmp_path / "models" / file_name).write_bytes(content)
    hashes.append(hashlib.md5(content).hexdigest())
  monkeypatch.setitem(weight_sources.KERAS_APPLICATIONS, "resnet50",
                      ("resnet/top.h5", hashes[0], "resnet/notop.h5", hashes[1]))
  path, info = weight_sources.resolve("imagenet", architecture="resnet50", num_classes=1000)
  assert path == str(tmp_path / "models" / "top.h5")
  assert (info.normalization, info.variant, info.eval_resize) == ("caffe", "v1", None)
  assert weight_sources.resolve("imagenet", architecture="resnet50", num_classes=10)[0] == str(
      tmp_path / "models" / "notop.h5")
  with pytest.raises(ValueError, match=r"`imagenet` weights \(keras.applications\) exist for "
                     r"\('resnet50', .*\); use `torchvision` for the others. Received: "
                     r"architecture='vgg16_bn'"):
    weight_sources.resolve("imagenet", architecture="vgg16", vgg_batch_norm=True)
  with pytest.raises(ValueError, match=r"torchvision's resnet18 weights are \('IMAGENET1K_V1',\)\. "
                     r"Received: torchvision:IMAGENET1K_V2"):
    weight_sources.resolve("torchvision:IMAGENET1K_V2", architecture="resnet18")


def test_keras_applications_table_is_keras_applications():
  for architecture in ("resnet50", "resnet101", "resnet152"):
    top, top_md5, no_top, no_top_md5 = weight_sources.KERAS_APPLICATIONS[architecture]
    file_name = f"{architecture}_weights_tf_dim_ordering_tf_kernels"
    assert weight_sources.KERAS_APPLICATIONS_URL + top == (
        keras_resnet.BASE_WEIGHTS_PATH + f"{file_name}.h5")
    assert weight_sources.KERAS_APPLICATIONS_URL + no_top == (
        keras_resnet.BASE_WEIGHTS_PATH + f"{file_name}_notop.h5")
    assert (top_md5, no_top_md5) == keras_resnet.WEIGHTS_HASHES[architecture]
  for architecture, module in (("vgg16", keras_vgg16), ("vgg19", keras_vgg19)):
    top, top_md5, no_top, no_top_md5 = weight_sources.KERAS_APPLICATIONS[architecture]
    assert weight_sources.KERAS_APPLICATIONS_URL + top == module.WEIGHTS_PATH
    assert weight_sources.KERAS_APPLICATIONS_URL + no_top == module.WEIGHTS_PATH_NO_TOP
    # The VGG hashes are literals inside keras' functions.
    source = inspect.getsource(module)
    assert f'file_hash="{top_md5}"' in source and f'file_hash="{no_top_md5}"' in source


def test_pretrained_name_sets_what_travels_and_the_variant_is_checked(tmp_path, monkeypatch):
  content = b"torchvision resnet50 weights"
  file_name = f"resnet50-{hashlib.sha256(content).hexdigest()[:8]}.pth"
  monkeypatch.setenv("TORCH_HOME", str(tmp_path))
  (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
  (tmp_path / "hub" / "checkpoints" / file_name).write_bytes(content)
  monkeypatch.setitem(weight_sources.TORCHVISION_WEIGHTS, "resnet50",
                      {"IMAGENET1K_V2": (file_name, 232)})
  config = test_recipes.experiment("--pretrained=torchvision", "--architecture=resnet50")
  assert config.train.init_checkpoint == str(tmp_path / "hub" / "checkpoints" / file_name)
  assert (config.data.normalization, config.model.conv_padding, config.model.pool_padding,
          config.model.variant) == ("torch", "symmetric", "symmetric", "v1.5")
  assert (config.data.eval_resize_size, config.data.eval_resize_method) == (232, "bilinear_antialias")
  config = test_recipes.experiment("--pretrained=torchvision:IMAGENET1K_V2", "--image_size=64",
                                   "--eval_resize_method=bilinear", "--conv_padding=same",
                                   "--pool_padding=same")
  assert (config.data.eval_resize_size, config.data.eval_resize_method) == (66, "bilinear")
  assert (config.model.conv_padding, config.model.pool_padding) == ("same", "same")
  # Without weights: the official network (v1.5), or keras.applications' (v1).
  config = test_recipes.experiment()
  assert (config.data.eval_resize_size, config.data.eval_resize_method) == (None, "bilinear")
  assert (config.model.conv_padding, config.model.pool_padding) == ("same", "same")
  assert test_recipes.experiment("--variant=v1").model.pool_padding == "symmetric"
  # keras.applications weights: their normalization and their stem pool.
  h5_path = str(tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels.h5")
  open(h5_path, "wb").close()
  config = test_recipes.experiment(f"--pretrained={h5_path}", "--architecture=resnet50",
                                   "--variant=v1")
  assert (config.data.normalization, config.model.conv_padding, config.model.pool_padding) == (
      "caffe", "same", "symmetric")
  with pytest.raises(ValueError, match=r"torchvision resnet50 IMAGENET1K_V2 weights are ResNet "
                     r"v1.5: leave --variant out \(it follows the weights\) or give "
                     r"--variant=v1.5\. Received: --variant=v1"):
    test_recipes.experiment("--pretrained=torchvision", "--variant=v1")


def test_the_variant_follows_the_weights_unless_given(tmp_path, monkeypatch, caplog):
  """The README's `--architecture=resnet50 --pretrained=imagenet`: keras.applications' v1."""
  monkeypatch.setenv("KERAS_HOME", str(tmp_path))
  (tmp_path / "models").mkdir()
  content = b"keras.applications resnet50 weights"
  (tmp_path / "models" / "top.h5").write_bytes(content)
  monkeypatch.setitem(weight_sources.KERAS_APPLICATIONS, "resnet50",
                      ("resnet/top.h5", hashlib.md5(content).hexdigest(), "resnet/notop.h5", ""))
  with caplog.at_level(logging.INFO, logger="absl"):
    config = test_recipes.experiment("--architecture=resnet50", "--pretrained=imagenet",
                                     "--verbosity=0")
  assert (config.model.variant, config.model.pool_padding) == ("v1", "symmetric")
  assert ("ResNet variant v1, what keras.applications resnet50 weights are (--variant)."
          in caplog.text)
  # A file by path says the same; a torch file its v1.5.
  h5_path = str(tmp_path / "models" / "top.h5")
  assert test_recipes.experiment(f"--pretrained={h5_path}").model.variant == "v1"
  pth_path = str(tmp_path / "resnet50.pth")
  open(pth_path, "wb").close()
  assert test_recipes.experiment(f"--pretrained={pth_path}").model.variant == "v1.5"
  # A variant the user gives is checked, not replaced.
  with pytest.raises(ValueError, match=r"^--pretrained: keras.applications resnet50 weights are "
                     r"ResNet v1: leave --variant out \(it follows the weights\) or give "
                     r"--variant=v1\. Received: --variant=v1.5$"):
    test_recipes.experiment("--architecture=resnet50", "--pretrained=imagenet", "--variant=v1.5")
  # Without weights: the official v1.5.
  assert test_recipes.experiment("--architecture=resnet50").model.variant == "v1.5"


def test_a_torchvision_file_by_path_is_evaluated_as_by_name(tmp_path):
  """resnet50-11ad3fa6.pth is torchvision's IMAGENET1K_V2 file: its published 232 resize."""
  path = str(tmp_path / "resnet50-11ad3fa6.pth")
  open(path, "wb").close()  # Not read by the settings.
  config = test_recipes.experiment(f"--pretrained={path}", "--architecture=resnet50")
  assert (config.data.eval_resize_size, config.data.eval_resize_method) == (
      232, "bilinear_antialias")
  assert (config.data.normalization, config.model.conv_padding) == ("torch", "symmetric")
  renamed = str(tmp_path / "my_resnet50.pth")
  open(renamed, "wb").close()
  config = test_recipes.experiment(f"--pretrained={renamed}", "--architecture=resnet50")
  assert (config.data.eval_resize_size, config.data.eval_resize_method) == (None, "bilinear")


def test_export_resizes_encoded_images_as_the_weights_were_evaluated(tmp_path):
  model = _small("resnet18")
  rng = np.random.default_rng(4)
  encoded = tf.constant([tf.io.encode_png(rng.integers(0, 256, (60, 45, 3), np.uint8)).numpy()])
  module, _ = export.build_serving_module(model, ["a", "b", "c"], normalization="torch",
                                          eval_resize_size=40,
                                          eval_resize_method="bicubic_antialias")
  pixels = preprocessing.preprocess_for_eval(encoded[0], 32, resize_size=40,
                                             method="bicubic_antialias")
  expected = tf.nn.softmax(model(preprocessing.normalize(pixels[tf.newaxis], "torch")))
  np.testing.assert_allclose(module.serve_encoded(encoded)["probabilities"].numpy(),
                             expected.numpy(), rtol=1e-5, atol=1e-6)
  official = preprocessing.preprocess_for_eval(encoded[0], 32)
  assert np.mean(np.abs(official.numpy() - pixels.numpy())) > 1


@pytest.mark.parametrize("method", ["bilinear_antialias", "bicubic_antialias"])
def test_antialiased_eval_resize_sizes_like_torchvision_in_and_out_of_dataset_map(method):
  rng = np.random.default_rng(5)
  # Hard edges make bicubic overshoot; the result stays within [0, 255] as PIL's does.
  image = (rng.integers(0, 2, (300, 401, 3)) * 255).astype(np.uint8)
  resized = preprocessing.resize_shorter_side(image, 232, method)
  # torchvision: the shorter side exact, the longer int(232 * 401 / 300) = 310.
  assert resized.shape == (232, 310, 3) and resized.dtype == tf.float32
  assert 0 <= np.min(resized) and np.max(resized) <= 255
  encoded = tf.io.encode_png(image)
  eager = preprocessing.preprocess_for_eval(encoded, 224, resize_size=232, method=method)
  mapped = next(iter(tf.data.Dataset.from_tensors(encoded).map(
      lambda image: preprocessing.preprocess_for_eval(image, 224, resize_size=232, method=method))))
  assert mapped.shape == (224, 224, 3)
  np.testing.assert_array_equal(mapped.numpy(), eager.numpy())
  with pytest.raises(ValueError, match=r"^method must be one of \('bilinear', "
                     r"'bilinear_antialias', 'bicubic_antialias'\)\. Received: 'area'$"):
    preprocessing.resize_shorter_side(image, 232, "area")


def test_a_python_run_starting_from_weights_takes_what_they_imply(tmp_path):
  # A .pth by path: torchvision's normalization and padding; its content is not read here.
  path = str(tmp_path / "resnet50.pth")
  open(path, "wb").close()
  base = config_lib.ExperimentConfig(data=DataConfig(output_dtype="uint8"),
                                     model=models.ModelConfig(input_normalization="rgb_mean"))
  started = initial_weights.start_from(base, path)
  assert started.train.init_checkpoint == path
  assert (started.data.normalization, started.model.input_normalization,
          started.model.conv_padding, started.model.pool_padding) == (
              "torch", "torch", "symmetric", "symmetric")
  assert started.data.eval_resize_size is None  # a file by path publishes no eval resize
  kept = initial_weights.start_from(base, path, keep={"data.normalization"})
  assert (kept.data.normalization, kept.model.conv_padding) == ("rgb_mean", "symmetric")
  with pytest.raises(ValueError, match=r"weights are ResNet v1.5: leave --variant out .* "
                     r"give --variant=v1.5\. Received: --variant=v1"):
    initial_weights.start_from(
        dataclasses.replace(base, model=dataclasses.replace(base.model, variant="v1")), path)


def test_config_json_records_the_stem_pool_and_a_run_from_before_resumes_as_built(tmp_path):
  """Runs written before pool_padding existed pooled as keras.applications does: so they resume,
  evaluate and export; a command asking for another pool is refused, not silently obeyed."""
  tiny = ("--source=synthetic", "--architecture=resnet18", "--image_size=32", "--base_width=8",
          "--num_classes=4")
  new_dir, old_dir = str(tmp_path / "new"), str(tmp_path / "old")
  for model_dir in (new_dir, old_dir):
    config = test_recipes.experiment(f"--model_dir={model_dir}", *tiny)
    run_state.write_run_config(model_dir, config.model, config.data, ["a", "b", "c", "d"],
                               config.train, config.runtime)
  with open(run_state.config_path(new_dir)) as f:
    assert json.load(f)["model"]["pool_padding"] == "same"
  with open(run_state.config_path(old_dir)) as f:
    payload = json.load(f)
  del payload["model"]["pool_padding"]
  with open(run_state.config_path(old_dir), "w") as f:
    json.dump(payload, f)
  assert run_state.read_run_config(new_dir).model.pool_padding == "same"
  assert run_state.read_run_config(old_dir).model.pool_padding == "symmetric"
  resumed = test_recipes.experiment(f"--model_dir={old_dir}", *tiny)
  assert resumed.model.pool_padding == "symmetric"
  with pytest.raises(ValueError, match=r"--pool_padding asks for pool_padding='same', the run has "
                                       r"'symmetric'.*Nothing was written\."):
    test_recipes.experiment(f"--model_dir={old_dir}", "--pool_padding=same", *tiny)


def test_the_published_eval_resize_scales_to_the_eval_size_unless_a_crop_fraction_is_set():
  info = dataclasses.replace(weight_sources.TORCH_INFO, eval_resize=232, eval_crop=224,
                             eval_resize_method="bilinear_antialias")
  data = DataConfig(image_size=112, num_classes=10)
  experiment = config_lib.ExperimentConfig(
      data=data, model=models.ModelConfig(image_size=112, num_classes=10))
  followed = initial_weights.follow_weights(experiment, info)
  assert (followed.data.eval_resize_size, followed.data.eval_resize_method) == (
      116, "bilinear_antialias")
  assert followed.model.input_normalization is None  # the pipeline normalizes
  cropped = dataclasses.replace(experiment, data=dataclasses.replace(data, eval_crop_fraction=0.9))
  followed = initial_weights.follow_weights(cropped, info)
  assert (followed.data.eval_resize_size, followed.data.eval_crop_fraction) == (None, 0.9)
  assert initial_weights.follow_weights(experiment, weight_sources.WeightsInfo()) == experiment

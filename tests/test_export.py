"""Export: round trips through fresh processes, TF Serving's loader and TFLite, not existence."""
import io
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from input_pipeline import DataConfig
from input_pipeline import build_dataset
from input_pipeline import constants
from input_pipeline import dataset_info
from input_pipeline import preprocessing
from official_resnet import config as config_lib
from official_resnet import export
from official_resnet import models

IMAGE_SIZE = 32
# One class per kind of input, so the eval dataset's label says which file an image came from.
IMAGE_KINDS = {
    "bmp": ("RGB", "BMP", (41, 37)),
    "cmyk_jpeg": ("CMYK", "JPEG", (48, 40)),
    "gif": ("P", "GIF", (36, 36)),
    "gray_jpeg": ("L", "JPEG", (40, 56)),
    "gray_png": ("L", "PNG", (33, 45)),
    "rgb_jpeg": ("RGB", "JPEG", (64, 48)),
    "rgba_png": ("RGBA", "PNG", (50, 50)),
    "wide_jpeg": ("RGB", "JPEG", (96, 34)),
}
EXTENSIONS = {"BMP": "bmp", "GIF": "gif", "JPEG": "jpg", "PNG": "png"}
# Measured on the test model: 4e-7 (float), 0.012 (int8 weights).
TFLITE_PROBABILITY_TOLERANCE = 1e-5
DYNAMIC_RANGE_PROBABILITY_TOLERANCE = 0.03


def encoded_image(kind, seed):
  """A smooth random image (JPEG-friendly) of the mode, format and size of `kind`."""
  mode, image_format, (width, height) = IMAGE_KINDS[kind]
  coarse = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
  image = Image.fromarray(coarse).resize((width, height), Image.BILINEAR).convert(mode)
  buffer = io.BytesIO()
  image.save(buffer, format=image_format)
  return buffer.getvalue()


def write_image_folder(root):
  """root/{train,validation}/<kind>/<kind>.<ext>: the folder source's split layout."""
  for split, seed in (("train", 0), ("validation", 1)):
    for index, kind in enumerate(sorted(IMAGE_KINDS)):
      folder = os.path.join(root, split, kind)
      os.makedirs(folder)
      extension = EXTENSIONS[IMAGE_KINDS[kind][1]]
      with open(os.path.join(folder, f"{kind}.{extension}"), "wb") as image_file:
        image_file.write(encoded_image(kind, seed * 100 + index))


def validation_files(root):
  """Encoded validation images in class order (the label order of the folder source)."""
  files = []
  for kind in sorted(IMAGE_KINDS):
    folder = os.path.join(root, "validation", kind)
    with open(os.path.join(folder, os.listdir(folder)[0]), "rb") as image_file:
      files.append(image_file.read())
  return files


def model_config(**overrides):
  return models.ModelConfig(architecture="resnet18", base_width=8, image_size=IMAGE_SIZE,
                            num_classes=len(IMAGE_KINDS), **overrides)


def softmax(logits):
  return tf.nn.softmax(tf.cast(logits, tf.float32)).numpy()


def unsaturate(model, images):
  """Rescales the logits layer to logits of std 2 and mean 0 per class on `images`.

  A random ResNet's logits are tens apart and favour one class, so its softmax
  is 0 or 1 and hides preprocessing mistakes; spread out and centred, a wrong
  crop or normalization moves the probabilities by 0.1 or more, and the top-1
  class differs between images.
  """
  layer = model.get_layer("predictions")
  kernel, bias = layer.get_weights()
  logits = model(images, training=False).numpy()
  scale = 2.0 / logits.std()
  layer.set_weights([kernel * scale, (bias - logits.mean(axis=0)) * scale])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("images"))
  write_image_folder(root)
  config = DataConfig(source="folder", data_dir=root, image_size=IMAGE_SIZE, batch_size=4, seed=0)
  return config, dataset_info(config, training=False).class_names, validation_files(root)


@pytest.fixture(scope="module")
def exported(data, tmp_path_factory):
  """(model, export_dir, version dir) of one export with every format."""
  data_config, class_names, _ = data
  keras.utils.set_random_seed(1)
  config = model_config()
  model = models.build_model(config)
  unsaturate(model, next(iter(build_dataset(data_config, training=False)))[0])
  export_dir = str(tmp_path_factory.mktemp("export"))
  version_dir = export.export_model(model, config, data_config, class_names, export_dir)
  return model, export_dir, version_dir


@pytest.fixture(scope="module")
def eval_reference(data, exported):
  """Probabilities of the in-process model on the input_pipeline eval dataset, in label order."""
  data_config, class_names, _ = data
  model = exported[0]
  probabilities = np.zeros([len(class_names), len(class_names)], np.float32)
  pixels = np.zeros([len(class_names), IMAGE_SIZE, IMAGE_SIZE, 3], np.float32)
  for images, labels in build_dataset(data_config, training=False):
    probabilities[labels.numpy()] = softmax(model(images, training=False))
  # The same pixels before normalization, to feed serving_images.
  for index, encoded in enumerate(data[2]):
    pixels[index] = preprocessing.preprocess_for_eval(tf.constant(encoded), IMAGE_SIZE).numpy()
  return probabilities, pixels


def test_export_writes_version_one_with_every_format(data, exported):
  _, class_names, _ = data
  _, export_dir, version_dir = exported
  assert version_dir == os.path.join(export_dir, "1")
  assert sorted(os.listdir(export_dir)) == ["1"]
  for name in ("saved_model.pb", export.KERAS_FILE, export.TFLITE_FILE,
               export.TFLITE_DYNAMIC_RANGE_FILE):
    assert os.path.getsize(os.path.join(version_dir, name)) > 0, name
  with open(os.path.join(version_dir, "assets", constants.LABELS_FILE)) as labels:
    assert labels.read().splitlines() == list(class_names)


FRESH_PROCESS_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    import keras

    version_dir, inputs_path, outputs_path = sys.argv[1:]
    inputs = np.load(inputs_path, allow_pickle=True)  # object arrays of our own bytes
    encoded = tf.constant(list(inputs["encoded"]))
    loaded = tf.saved_model.load(version_dir)
    outputs = {}
    for key, value in loaded.signatures["serving_default"](images=encoded).items():
      outputs["default/" + key] = value.numpy()
    pixels = tf.constant(inputs["pixels"])
    for key, value in loaded.signatures["serving_images"](images=pixels).items():
      outputs["images/" + key] = value.numpy()
    rounded = tf.round(pixels)
    outputs["uint8"] = loaded.serve_images(tf.cast(rounded, tf.uint8))["probabilities"].numpy()
    outputs["rounded"] = loaded.serve_images(rounded)["probabilities"].numpy()
    examples = tf.constant(list(inputs["examples"]))
    for key, value in loaded.signatures["serving_tf_example"](examples=examples).items():
      outputs["example/" + key] = value.numpy()
    outputs["features"] = loaded.signatures["feature_vector"](images=encoded)["features"].numpy()
    layer = keras.layers.TFSMLayer(version_dir, call_endpoint="serving_images")
    image_input = keras.Input(pixels.shape[1:])
    wrapped = keras.Model(image_input, layer(image_input)["probabilities"])
    outputs["tfsm_layer"] = wrapped.predict(inputs["pixels"], verbose=0)
    with open(loaded.labels_file.asset_path.numpy().decode()) as labels:
      outputs["labels"] = np.array(labels.read().splitlines())
    np.savez(outputs_path, **outputs)
""")


def run_checked(command):
  """Runs a command in a fresh process; its stderr tail is the failure message."""
  result = subprocess.run(command, capture_output=True, text=True, timeout=240)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def serialized_example(encoded):
  return tf.train.Example(features=tf.train.Features(feature={
      constants.KEY_ENCODED: tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
      constants.KEY_LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[1])),
  })).SerializeToString()


@pytest.mark.slow
def test_fresh_process_round_trip_matches_the_eval_pipeline(data, exported, eval_reference,
                                                            tmp_path):
  _, class_names, encoded = data
  model, _, version_dir = exported
  probabilities, pixels = eval_reference
  inputs_path, outputs_path = str(tmp_path / "inputs.npz"), str(tmp_path / "outputs.npz")
  np.savez(inputs_path, encoded=np.array(encoded, dtype=object), pixels=pixels,
           examples=np.array([serialized_example(e) for e in encoded], dtype=object))
  run_checked([sys.executable, "-c", FRESH_PROCESS_SCRIPT, version_dir, inputs_path,
               outputs_path])
  outputs = np.load(outputs_path, allow_pickle=True)  # string outputs are object arrays

  # Gray, CMYK, PNG, GIF, BMP, alpha: served == model on the eval dataset's images.
  np.testing.assert_allclose(outputs["default/probabilities"], probabilities, atol=1e-5)
  for signature in ("images", "example"):
    for key in ("probabilities", "top_k_probabilities"):
      np.testing.assert_allclose(outputs[f"{signature}/{key}"], outputs[f"default/{key}"],
                                 atol=1e-5)
  expected_classes = probabilities.argmax(axis=-1)
  for signature in ("default", "images", "example"):
    np.testing.assert_array_equal(outputs[f"{signature}/classes"], expected_classes)
    np.testing.assert_array_equal(outputs[f"{signature}/class_names"].astype(str),
                                  np.array(class_names)[expected_classes])
  top_k = np.argsort(-probabilities, axis=-1, kind="stable")[:, :config_lib.DEFAULT_TOP_K]
  np.testing.assert_array_equal(outputs["default/top_k_classes"], top_k)
  np.testing.assert_array_equal(outputs["default/top_k_class_names"].astype(str),
                                np.array(class_names)[top_k])
  assert outputs["default/probabilities"].dtype == np.float32
  assert outputs["default/classes"].dtype == np.int64
  assert outputs["default/top_k_classes"].shape == (len(encoded), config_lib.DEFAULT_TOP_K)

  np.testing.assert_array_equal(outputs["uint8"], outputs["rounded"])
  np.testing.assert_allclose(outputs["tfsm_layer"], outputs["images/probabilities"], atol=1e-6)
  features = models.feature_model(model)(
      preprocessing.normalize(pixels, constants.DEFAULT_NORMALIZATION), training=False)
  np.testing.assert_allclose(outputs["features"], features.numpy(), atol=1e-4, rtol=1e-5)
  # ResNet-18's last stage is 8x base_width wide.
  assert outputs["features"].shape == (len(encoded), 8 * 8)
  assert list(outputs["labels"]) == list(class_names)


@pytest.mark.slow
def test_saved_model_cli_lists_signatures_and_tf1_loader_restores_weights(
    exported, eval_reference, tmp_path):
  """saved_model_cli run loads through a TF1 session, as TF Serving's C++ loader does."""
  version_dir = exported[2]
  probabilities, pixels = eval_reference
  saved_model_cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  shown = run_checked([saved_model_cli, "show", "--dir", version_dir, "--all"])
  for signature in export.SIGNATURES:
    assert f"signature_def['{signature}']" in shown
  assert "DT_STRING" in shown and "(-1, 32, 32, 3)" in shown

  np.save(tmp_path / "pixels.npy", pixels)
  run_checked([saved_model_cli, "run", "--dir", version_dir, "--tag_set", "serve",
               "--signature_def", export.SERVING_IMAGES,
               "--inputs", f"images={tmp_path / 'pixels.npy'}", "--outdir", str(tmp_path / "out")])
  np.testing.assert_allclose(np.load(tmp_path / "out" / "probabilities.npy"), probabilities,
                             atol=1e-5)


def tflite_outputs(path, pixels):
  runner = tf.lite.Interpreter(model_path=path).get_signature_runner(export.SERVING_IMAGES)
  return runner(images=pixels)


def test_tflite_float_and_dynamic_range_agree_with_the_saved_model(data, exported,
                                                                  eval_reference):
  class_names = data[1]
  version_dir = exported[2]
  probabilities, pixels = eval_reference
  expected_classes = probabilities.argmax(axis=-1)

  float_outputs = tflite_outputs(os.path.join(version_dir, export.TFLITE_FILE), pixels)
  np.testing.assert_allclose(float_outputs["probabilities"], probabilities,
                             atol=TFLITE_PROBABILITY_TOLERANCE)
  np.testing.assert_array_equal(float_outputs["classes"], expected_classes)
  np.testing.assert_array_equal(float_outputs["class_names"].astype(str),
                                np.array(class_names)[expected_classes])

  quantized_path = os.path.join(version_dir, export.TFLITE_DYNAMIC_RANGE_FILE)
  assert os.path.getsize(quantized_path) < 0.5 * os.path.getsize(
      os.path.join(version_dir, export.TFLITE_FILE))
  quantized = tflite_outputs(quantized_path, pixels)["probabilities"]
  np.testing.assert_allclose(quantized, probabilities, atol=DYNAMIC_RANGE_PROBABILITY_TOLERANCE)
  # Top-1 must agree wherever the float margin exceeds what the tolerance can flip.
  ordered = np.sort(probabilities, axis=-1)
  clear = ordered[:, -1] - ordered[:, -2] > 2 * DYNAMIC_RANGE_PROBABILITY_TOLERANCE
  assert clear.sum() >= len(pixels) // 2
  np.testing.assert_array_equal(quantized.argmax(-1)[clear], expected_classes[clear])


def test_keras_file_reloads_in_safe_mode_with_equal_outputs(exported, eval_reference):
  model, _, version_dir = exported
  inputs = preprocessing.normalize(eval_reference[1], constants.DEFAULT_NORMALIZATION)
  reloaded = keras.saving.load_model(os.path.join(version_dir, export.KERAS_FILE),
                                     safe_mode=True)
  np.testing.assert_allclose(reloaded(inputs, training=False), model(inputs, training=False),
                             atol=1e-6)
  # Stock Keras layers only, so the file loads where official_resnet is not installed.
  assert any(isinstance(model.get_layer(l.name), models.FusedBatchNormalization)
             for l in reloaded.layers)
  assert {type(l).__module__.split(".")[0] for l in reloaded.layers} == {"keras"}


def test_non_image_input_is_an_invalid_argument_naming_the_problem(data, exported):
  encoded = data[2]
  loaded = tf.saved_model.load(exported[2])
  for text in (b"junk", b"plain text that is longer than any image header"):
    with pytest.raises(tf.errors.InvalidArgumentError, match="Unknown image file format"):
      loaded.signatures[export.SERVING_DEFAULT](images=tf.constant([encoded[0], text]))
  with pytest.raises(tf.errors.InvalidArgumentError, match="Input is empty"):
    loaded.serve_encoded(tf.constant([b""]))
  with pytest.raises(tf.errors.InvalidArgumentError, match="Invalid JPEG data"):
    loaded.serve_encoded(tf.constant([encoded[-1][:200]]))
  no_image = tf.train.Example().SerializeToString()
  with pytest.raises(tf.errors.InvalidArgumentError, match=constants.KEY_ENCODED):
    loaded.signatures[export.SERVING_TF_EXAMPLE](examples=tf.constant([no_image]))


# What export_model is told about tiny_classifier: already float32 with stock layers, so
# it is exported as it is.
TINY_CONFIG = model_config(fused_batch_norm=False)


def tiny_classifier(num_classes):
  """A two-layer classifier, for tests about files rather than the network."""
  return keras.Sequential([
      keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3)), keras.layers.GlobalAveragePooling2D(),
      keras.layers.Dense(num_classes)])


def test_each_export_takes_the_next_version_and_keeps_the_earlier_ones(data, tmp_path):
  data_config, class_names, _ = data
  model = tiny_classifier(len(class_names))
  export_dir = str(tmp_path / "export")

  def export_tiny(**kwargs):
    return export.export_model(model, TINY_CONFIG, data_config, class_names, export_dir,
                               formats=("saved_model",), **kwargs)

  first = export_tiny()
  with open(os.path.join(first, "saved_model.pb"), "rb") as graph:
    first_graph = graph.read()
  with pytest.raises(ValueError, match="already exists"):
    export_tiny(version=1)
  second = export_tiny()
  assert (first, second) == (os.path.join(export_dir, "1"), os.path.join(export_dir, "2"))
  assert sorted(os.listdir(export_dir)) == ["1", "2"]
  assert not os.path.exists(os.path.join(second, export.KERAS_FILE))
  with open(os.path.join(first, "saved_model.pb"), "rb") as graph:
    assert graph.read() == first_graph
  assert export.latest_version_dir(export_dir) == second


def test_failed_export_leaves_no_version_behind(data, tmp_path, monkeypatch):
  data_config, class_names, _ = data

  def failing_conversion(*args, **kwargs):
    raise RuntimeError("converter crashed")

  monkeypatch.setattr(export, "convert_to_tflite", failing_conversion)
  export_dir = tmp_path / "export"
  with pytest.raises(RuntimeError, match="converter crashed"):
    export.export_model(tiny_classifier(len(class_names)), TINY_CONFIG, data_config,
                        class_names, str(export_dir))
  assert os.listdir(export_dir) == []


def test_bad_export_requests_raise_and_write_nothing(data, exported, tmp_path):
  data_config, class_names, _ = data
  model, _, version_dir = exported
  target = tmp_path / "target"
  empty_model_dir = tmp_path / "no_checkpoints"
  empty_model_dir.mkdir()
  with pytest.raises(ValueError, match="checkpoint"):
    export.export_from_model_dir(str(empty_model_dir), str(target))
  with pytest.raises(ValueError, match="checkpoint"):
    export.export_from_model_dir(str(tmp_path / "missing"), str(target))
  with pytest.raises(ValueError, match="formats"):
    export.export_model(model, model_config(), data_config, class_names, str(target),
                        formats=("onnx",))
  with pytest.raises(ValueError, match="one name per model output"):
    export.export_model(model, model_config(), data_config, class_names[:-1], str(target))
  with pytest.raises(ValueError, match="top_k"):
    export.export_model(model, model_config(), data_config, class_names, str(target), top_k=0)
  with pytest.raises(ValueError, match="include_top"):
    export.export_model(model, model_config(include_top=False), data_config, class_names,
                        str(target))
  assert not target.exists()
  with pytest.raises(ValueError, match="holds a SavedModel"):
    export.export_model(model, model_config(), data_config, class_names, version_dir)
  assert sorted(os.listdir(version_dir)) == sorted(
      ["assets", "fingerprint.pb", "saved_model.pb", "variables", export.KERAS_FILE,
       export.TFLITE_FILE, export.TFLITE_DYNAMIC_RANGE_FILE])


def test_model_that_normalizes_itself_is_served_raw_pixels(data):
  data_config, class_names, encoded = data
  config = model_config(input_normalization="rgb_mean")
  assert export.serving_normalization(config, data_config) is None
  assert export.serving_normalization(model_config(), data_config) == "rgb_mean"
  model = models.build_model(config)
  module, _ = export.build_serving_module(
      model, class_names, normalization=export.serving_normalization(config, data_config))
  pixels = tf.stack([preprocessing.preprocess_for_eval(tf.constant(e), IMAGE_SIZE)
                     for e in encoded])
  np.testing.assert_allclose(module.serve_encoded(tf.constant(encoded))["probabilities"],
                             softmax(model(pixels, training=False)), atol=1e-5)


@pytest.mark.slow
def test_mixed_precision_model_exports_float32_that_tflite_converts(data, tmp_path):
  data_config, class_names, encoded = data
  config = model_config(dtype_policy="mixed_bfloat16")
  # Seeded: some random draws put a probability near 0.5, where TFLite's float kernels came
  # 1.03e-5 from TF's (seen once), past the tolerance.
  keras.utils.set_random_seed(3)
  model = models.build_model(config)
  version_dir = export.export_model(model, config, data_config, class_names, str(tmp_path),
                                    formats=("saved_model", "tflite"))
  twin = export.serving_model(model, config)
  assert twin.compute_dtype == "float32"
  pixels = np.stack([preprocessing.preprocess_for_eval(tf.constant(e), IMAGE_SIZE).numpy()
                     for e in encoded])
  expected = softmax(twin(preprocessing.normalize(pixels, data_config.normalization)))
  loaded = tf.saved_model.load(version_dir)
  np.testing.assert_allclose(loaded.serve_images(pixels)["probabilities"], expected, atol=1e-5)
  np.testing.assert_allclose(
      tflite_outputs(os.path.join(version_dir, export.TFLITE_FILE), pixels)["probabilities"],
      expected, atol=TFLITE_PROBABILITY_TOLERANCE)

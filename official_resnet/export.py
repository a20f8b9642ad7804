"""Export a trained classifier: a SavedModel that serves encoded images, a .keras file, TFLite.

One export is one versioned directory, the layout TF Serving watches:

    <export_dir>/<N>/saved_model.pb, variables/   the SavedModel (signatures below)
    <export_dir>/<N>/assets/labels.txt            class names, one a line, line i = class i
    <export_dir>/<N>/model.keras                  the Keras model (logits; see export_model)
    <export_dir>/<N>/model.tflite                 serving_images as TFLite, float32
    <export_dir>/<N>/model_dynamic_range.tflite   the same with dynamic-range int8 weights

N is one more than the highest version present. Everything is written under a
hidden temporary name and renamed at the end, so a failed or killed export
never leaves a half-written version where TF Serving would pick it up.
Exports compute in float32 whatever the training dtype policy.

Signatures (outputs of the three classifying ones are the same):
  serving_default     images: string [N] encoded JPEG/PNG/GIF/BMP, decoded and
                      cropped by input_pipeline's eval preprocessing (the data config's
                      eval size S and crop fraction)
  serving_images      images: float32 [N, S, S, 3], pixels in [0, 255] already sized
                      (the restored `serve_images` function also takes uint8)
  serving_tf_example  examples: string [N] serialized tf.train.Example with the
                      official `image/encoded` feature
  feature_vector      images: string [N] encoded -> features float32 [N, D] (pre-logits)
  -> probabilities float32 [N, C], classes int64 [N], class_names string [N],
     top_k_classes int64 [N, k], top_k_probabilities float32 [N, k],
     top_k_class_names string [N, k]
"""
import dataclasses
import os
import tempfile
import uuid
from collections.abc import Sequence

import keras
import tensorflow as tf
from absl import logging

from input_pipeline import DataConfig
from input_pipeline import checks
from input_pipeline import constants
from input_pipeline import preprocessing
from official_resnet import best_checkpoint
from official_resnet import config as config_lib
from official_resnet import models
from official_resnet import run_state
from official_resnet.models import ModelConfig
from official_resnet.train import checkpointing

SERVING_DEFAULT = "serving_default"
SERVING_IMAGES = "serving_images"
SERVING_TF_EXAMPLE = "serving_tf_example"
FEATURE_VECTOR = "feature_vector"
SIGNATURES = (SERVING_DEFAULT, SERVING_IMAGES, SERVING_TF_EXAMPLE, FEATURE_VECTOR)

KERAS_FILE = "model.keras"
TFLITE_FILE = "model.tflite"
TFLITE_DYNAMIC_RANGE_FILE = "model_dynamic_range.tflite"


def serving_normalization(model_config: ModelConfig, data_config: DataConfig) -> str | None:
  """The normalization the served function applies: None when the model normalizes itself."""
  if model_config.input_normalization is not None:
    return None
  return data_config.normalization


def _check_class_names(class_names, num_classes):
  if len(class_names) != num_classes:
    raise ValueError(f"`class_names` must have one name per model output ({num_classes}). "
                     f"Received: {len(class_names)} names")
  bad = [name for name in class_names if not name or "\n" in name or "\r" in name]
  if bad:
    raise ValueError("`class_names` must be non-empty single-line strings (labels.txt holds "
                     f"one a line). Received: {bad[:3]!r}")


def _model_image_size(model):
  shape = tuple(model.input_shape)
  if len(shape) != 4 or shape[1] is None or shape[1] != shape[2] or shape[3] != 3:
    raise ValueError("`model` must take [None, S, S, 3] images. "
                     f"Received: a model with input shape {shape}")
  return shape[1]


def serving_config(model_config: ModelConfig, image_size: int | None = None) -> ModelConfig:
  """The model exports hold: float32, stock Keras BatchNorm, no cross-replica moments, a
  fixed input of `image_size`.

  TFLite has no float16/bfloat16 kernels, and CPUs serve float32 best. The
  fused BatchNorm only speeds up training; stock layers let a .keras file load
  where official_resnet is not installed. `image_size` (default: the model's) is
  the size served, the eval size when it differs from the training size.
  """
  image_size = image_size or model_config.image_size
  if (image_size != model_config.image_size and model_config.include_top
      and model_config.pooling is None):
    raise ValueError(
        f"A model with a flatten head (pooling=None) serves only its training size "
        f"{model_config.image_size}: its weights fix the input size. Received: image_size="
        f"{image_size}")
  return dataclasses.replace(model_config, dtype_policy="float32", fused_batch_norm=False,
                             sync_batch_norm=False, image_size=image_size, any_input_size=False)


def serving_model(model: keras.Model, model_config: ModelConfig,
                  image_size: int | None = None) -> keras.Model:
  """`model` itself when already built with serving_config, else a copy built so.

  The variables are the same under every dtype policy, BatchNorm class and input
  size (float32, in one order; global pooling), so they copy over.
  """
  target = serving_config(model_config, image_size)
  if model_config == target:
    return model
  twin = models.build_model(target)
  twin.set_weights(model.get_weights())
  return twin


def _write_labels(directory, class_names):
  path = os.path.join(directory, constants.LABELS_FILE)
  with open(path, "w", encoding="utf-8") as labels:
    labels.write("".join(f"{name}\n" for name in class_names))
  return path


def build_serving_module(model: keras.Model, class_names: Sequence[str], *,
                         normalization: str | None, top_k: int = config_lib.DEFAULT_TOP_K,
                         eval_resize_size: int | None = None,
                         eval_resize_method: str = "bilinear"):
  """A tf.Module holding the serving functions, and the signatures to save it with.

  `model` maps [N, S, S, 3] (normalized with `normalization`, or raw pixels when
  it is None) to float32 logits. Encoded images are resized as the eval pipeline
  does (the shorter side to DataConfig.eval_shorter_side with eval_resize_method) and
  centre-cropped to S. The module holds the functions and the variables, not the Keras
  model, so every weight is saved once.
  """
  config_lib.check_top_k(top_k)
  num_classes = model.output_shape[-1]
  _check_class_names(class_names, num_classes)
  if normalization is not None:
    preprocessing.check_normalization(normalization)
  image_size = _model_image_size(model)
  features_model = models.feature_model(model)
  k = min(top_k, num_classes)

  def pixels_from_encoded(images):
    return tf.map_fn(
        lambda image: preprocessing.preprocess_for_eval(
            image, image_size, resize_size=eval_resize_size, method=eval_resize_method),
        images,
        fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32))

  def model_inputs(pixels):
    if normalization is None:
      return tf.cast(pixels, tf.float32)
    return preprocessing.normalize(pixels, normalization)

  def classify_pixels(images):
    logits = model(model_inputs(images), training=False)
    probabilities = tf.nn.softmax(tf.cast(logits, tf.float32))
    names = tf.constant(list(class_names))
    classes = tf.argmax(probabilities, axis=-1)
    top_k_probabilities, top_k_classes = tf.math.top_k(probabilities, k=k)
    return {
        "probabilities": probabilities,
        "classes": classes,
        "class_names": tf.gather(names, classes),
        "top_k_classes": tf.cast(top_k_classes, tf.int64),
        "top_k_probabilities": top_k_probabilities,
        "top_k_class_names": tf.gather(names, top_k_classes),
    }

  def classify_encoded(images):
    return classify_pixels(pixels_from_encoded(images))

  def classify_examples(examples):
    features = tf.io.parse_example(
        examples, {constants.KEY_ENCODED: tf.io.FixedLenFeature([], tf.string)})
    return classify_encoded(features[constants.KEY_ENCODED])

  def features_from_encoded(images):
    features = features_model(model_inputs(pixels_from_encoded(images)), training=False)
    return {"features": tf.cast(features, tf.float32)}

  encoded_spec = tf.TensorSpec([None], tf.string, name="images")
  pixels_shape = [None, image_size, image_size, 3]
  module = tf.Module(name="serving")
  module.serve_encoded = tf.function(classify_encoded, input_signature=[encoded_spec])
  module.serve_images = tf.function(classify_pixels)
  module.serve_tf_examples = tf.function(
      classify_examples, input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  module.feature_vector = tf.function(features_from_encoded, input_signature=[encoded_spec])
  # uint8 for callers of the restored function; the signature takes float32,
  # the dtype TFLite converts and the eval pipeline produces.
  module.serve_images.get_concrete_function(tf.TensorSpec(pixels_shape, tf.uint8, name="images"))
  signatures = {
      SERVING_DEFAULT: module.serve_encoded.get_concrete_function(),
      SERVING_IMAGES: module.serve_images.get_concrete_function(
          tf.TensorSpec(pixels_shape, tf.float32, name="images")),
      SERVING_TF_EXAMPLE: module.serve_tf_examples.get_concrete_function(),
      FEATURE_VECTOR: module.feature_vector.get_concrete_function(),
  }
  # Track the tf.Variables the functions capture: Keras 3 tracks its own
  # variable wrappers, which TF Serving's loader and the TFLite converter do
  # not resolve to the captures (the weights load as missing or garbage).
  captured = {id(v): v for function in signatures.values() for v in function.variables}
  module.captured_variables = list(captured.values())
  return module, signatures


def convert_to_tflite(saved_model_dir: str, *, dynamic_range: bool = False) -> bytes:
  """The serving_images signature as a TFLite flatbuffer.

  The encoded-image signatures do not convert with builtin TFLite ops (no
  image decoding); on device, decode and resize with the platform's image API
  and feed [N, S, S, 3] float32 pixels. `dynamic_range` stores weights as int8
  and dequantizes them at load (about 4x smaller, float activations).
  """
  converter = tf.lite.TFLiteConverter.from_saved_model(
      saved_model_dir, signature_keys=[SERVING_IMAGES])
  if dynamic_range:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  return converter.convert()


def version_numbers(export_dir: str) -> list[int]:
  """The versions under export_dir (integer-named subdirectories), ascending."""
  if not tf.io.gfile.isdir(export_dir):
    return []
  names = (name.rstrip("/") for name in tf.io.gfile.listdir(export_dir))
  return sorted(int(name) for name in names if name.isdigit())


def latest_version_dir(export_dir: str) -> str | None:
  versions = version_numbers(export_dir)
  return os.path.join(export_dir, str(versions[-1])) if versions else None


def _check_export_dir(export_dir, version):
  if tf.io.gfile.exists(export_dir) and not tf.io.gfile.isdir(export_dir):
    raise ValueError(f"`export_dir` must be a directory. Received: export_dir={export_dir!r}, "
                     "an existing file")
  if tf.saved_model.contains_saved_model(export_dir):
    raise ValueError("`export_dir` is the parent of the versioned exports, not a SavedModel. "
                     f"Received: export_dir={export_dir!r}, which holds a SavedModel")
  if version is None:
    return max(version_numbers(export_dir), default=0) + 1
  if isinstance(version, bool) or not isinstance(version, int) or version < 1:
    raise ValueError(f"`version` must be an integer >= 1 or None. Received: version={version!r}")
  if tf.io.gfile.exists(os.path.join(export_dir, str(version))):
    raise ValueError(f"Export version {version} already exists in {export_dir!r}; exports never "
                     f"overwrite. Received: version={version}")
  return version


def export_model(model: keras.Model, model_config: ModelConfig, data_config: DataConfig,
                 class_names: Sequence[str], export_dir: str, *,
                 formats: Sequence[str] = config_lib.EXPORT_FORMATS,
                 top_k: int = config_lib.DEFAULT_TOP_K, version: int | None = None) -> str:
  """Writes <export_dir>/<version>/ and returns its path.

  The SavedModel is always written (it is what TF Serving loads and what TFLite
  converts); `formats` adds the .keras file and the TFLite files. Everything
  computes in float32 with stock layers (see serving_config), at the data config's eval
  size and crop fraction. The .keras file is the model as trained, at that size:
  logits, inputs normalized like the training pipeline's (raw pixels when
  `model_config.input_normalization` is set).
  """
  config_lib.check_export_formats(formats)
  if not model_config.include_top:
    raise ValueError("Export needs a classifier: `model_config.include_top` must be True. "
                     "Received: include_top=False")
  config_lib.check_top_k(top_k)
  _check_class_names(class_names, model.output_shape[-1])
  normalization = serving_normalization(model_config, data_config)
  version = _check_export_dir(export_dir, version)
  model = serving_model(model, model_config, data_config.eval_size)
  final_dir = os.path.join(export_dir, str(version))
  tf.io.gfile.makedirs(export_dir)
  # Hidden and not a number, so TF Serving ignores it while it is written.
  temporary_dir = os.path.join(export_dir, f".tmp-{version}-{uuid.uuid4().hex}")
  try:
    with tempfile.TemporaryDirectory() as scratch:
      module, signatures = build_serving_module(
          model, class_names, normalization=normalization, top_k=top_k,
          eval_resize_size=data_config.eval_shorter_side,
          eval_resize_method=data_config.eval_resize_method)
      module.labels_file = tf.saved_model.Asset(_write_labels(scratch, class_names))
      tf.saved_model.save(module, temporary_dir, signatures=signatures)
    if "keras" in formats:
      model.save(os.path.join(temporary_dir, KERAS_FILE))
    if "tflite" in formats:
      for file_name, dynamic_range in ((TFLITE_FILE, False), (TFLITE_DYNAMIC_RANGE_FILE, True)):
        with tf.io.gfile.GFile(os.path.join(temporary_dir, file_name), "wb") as tflite_file:
          tflite_file.write(convert_to_tflite(temporary_dir, dynamic_range=dynamic_range))
    tf.io.gfile.rename(temporary_dir, final_dir, overwrite=False)
  except BaseException:
    if tf.io.gfile.exists(temporary_dir):
      tf.io.gfile.rmtree(temporary_dir)
    raise
  logging.info("Exported version %d to %s (%s).", version, final_dir, ", ".join(
      name for name in config_lib.EXPORT_FORMATS if name == "saved_model" or name in formats))
  return final_dir


def restore_model_dir(model_dir: str, *, weights: str = "auto", checkpoint: str = "latest"):
  """(model, RunConfig) from a checkpoint of a trainer's model_dir.

  checkpoint: "latest", or "best" (model_dir/best). weights: "auto" loads the average of
  the weights when the checkpoint holds one (what the run evaluated), else the trained
  weights; "ema" insists on the average; "raw" loads the trained weights.
  """
  checks.check_choice("weights", weights, config_lib.EXPORT_WEIGHTS)
  checks.check_choice("checkpoint", checkpoint, config_lib.EXPORT_CHECKPOINTS)
  if checkpoint == "best":
    path = best_checkpoint.checkpoint_path(model_dir)
  else:
    path = tf.train.latest_checkpoint(model_dir) if tf.io.gfile.isdir(model_dir) else None
    if path is None:
      raise ValueError("`model_dir` must hold a trainer checkpoint (ckpt-<step>). "
                       f"Received: model_dir={model_dir!r}, which has none")
  run_config = run_state.read_run_config(model_dir)
  # Checkpoints hold the same variables under every policy and BatchNorm class.
  run_config = dataclasses.replace(
      run_config, model=serving_config(run_config.model, run_config.data.eval_size))
  model = models.build_model(run_config.model)
  holds_average = checkpointing.restore(path, checkpointing.state_checkpoint(model),
                                        weights=weights)
  logging.info("Restored %s from %s (%s).", model.name, path,
               "the average of the weights" if holds_average else "the trained weights")
  return model, run_config


def export_from_model_dir(model_dir: str, export_dir: str, *,
                          formats: Sequence[str] = config_lib.EXPORT_FORMATS,
                          top_k: int = config_lib.DEFAULT_TOP_K, version: int | None = None,
                          weights: str = "auto",
                          checkpoint: str = "latest") -> str:
  """--mode=export: a checkpoint of model_dir exported; returns the version dir.

  weights and checkpoint as restore_model_dir takes them: by default the latest
  checkpoint, with the average of the weights when the run kept one.
  """
  config_lib.check_export_formats(formats)
  model, run_config = restore_model_dir(model_dir, weights=weights, checkpoint=checkpoint)
  return export_model(model, run_config.model, run_config.data, run_config.class_names,
                      export_dir, formats=formats, top_k=top_k, version=version)

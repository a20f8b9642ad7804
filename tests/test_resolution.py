"""Train at one size, evaluate and export at another (FixRes), and the augmentation flags:
the command line, the model, the trainer's evaluation, the export; and the flatten head that
cannot."""
import dataclasses
import os

from absl.testing import flagsaver
import keras
import numpy as np
import pytest
import tensorflow as tf

from cli_fixtures import parse
import image_fixtures
from input_pipeline import DataConfig
from input_pipeline import build_dataset
from input_pipeline import preprocessing
from official_resnet import config as config_lib
from official_resnet import export
from official_resnet import main
from official_resnet import models
from official_resnet import run_state
from official_resnet.models import ModelConfig

TRAIN_SIZE, EVAL_SIZE, CROP_FRACTION = 32, 48, 0.9


def write_photo_folder(root, per_class=4):
  """root/{train,validation}/class<c>/<n>.jpg: photo-like JPEGs larger than either size."""
  encoded = {}
  for split, offset in (("train", 0), ("validation", 1000)):
    for c in range(2):
      for n in range(per_class):
        path = image_fixtures.write_image(
            os.path.join(root, split, f"class{c}", f"{n}.jpg"),
            image_fixtures.image(offset + 10 * c + n, height=64, width=80))
        encoded[path] = open(path, "rb").read()
  return {path: data for path, data in encoded.items() if "validation" in path}


def _run_flags(data_dir, model_dir, export_dir, **overrides):
  values = dict(source="folder", data_dir=data_dir, num_classes=2, architecture="resnet18",
                base_width=8, image_size=TRAIN_SIZE, eval_image_size=EVAL_SIZE,
                eval_crop_fraction=CROP_FRACTION, normalization="torch", batch_size=4,
                train_steps=2, steps_per_loop=2, lr_schedule="constant", base_learning_rate=0.01,
                lr_base_batch_size=0, randaugment_layers=2, random_erasing_probability=0.25,
                distribution_strategy="off", num_gpus=0, seed=1, model_dir=model_dir,
                export_dir=export_dir)
  values.update(overrides)
  return [f"--{name}={value}" for name, value in values.items()]


@pytest.mark.slow
def test_train_at_32_evaluate_and_export_at_48(tmp_path):
  validation = write_photo_folder(str(tmp_path / "data"))
  model_dir, export_dir = str(tmp_path / "run"), str(tmp_path / "export")
  with flagsaver.flagsaver():
    parse(*_run_flags(str(tmp_path / "data"), model_dir, export_dir))
    stats = main.run()
  assert stats["step"] == 2 and stats["eval_examples"] == len(validation)

  run_config = run_state.read_run_config(model_dir)
  data = run_config.data
  assert (data.image_size, data.eval_image_size, data.eval_crop_fraction) == (
      TRAIN_SIZE, EVAL_SIZE, CROP_FRACTION)
  assert (data.randaugment_layers, data.random_erasing_probability) == (2, 0.25)
  assert run_config.model.any_input_size and run_config.model.image_size == TRAIN_SIZE
  # The trainer evaluated on 48 px batches and trained on 32 px ones.
  assert build_dataset(data, training=False).element_spec[0].shape.as_list() == [
      None, EVAL_SIZE, EVAL_SIZE, 3]
  assert build_dataset(data, training=True).element_spec[0].shape.as_list() == [
      4, TRAIN_SIZE, TRAIN_SIZE, 3]

  # The model as trained (any input size, fused BatchNorm) from its last checkpoint.
  trained = models.build_model(run_config.model)
  tf.train.Checkpoint(model=trained).restore(tf.train.latest_checkpoint(model_dir)).expect_partial()
  assert trained.input_shape == (None, None, None, 3)
  assert trained(np.zeros((1, TRAIN_SIZE, TRAIN_SIZE, 3), np.float32)).shape == (1, 2)

  loaded = tf.saved_model.load(stats["export_path"])
  images_spec = loaded.signatures[export.SERVING_IMAGES].structured_input_signature[1]["images"]
  assert images_spec.shape.as_list() == [None, EVAL_SIZE, EVAL_SIZE, 3]
  keras_file = keras.saving.load_model(os.path.join(stats["export_path"], export.KERAS_FILE))
  assert keras_file.input_shape == (None, EVAL_SIZE, EVAL_SIZE, 3)

  encoded = list(validation.values())
  shorter_side = preprocessing.eval_resize_size(EVAL_SIZE, CROP_FRACTION)  # 53
  assert data.eval_shorter_side == shorter_side
  pixels = tf.stack([preprocessing.preprocess_for_eval(image, EVAL_SIZE, shorter_side)
                     for image in encoded])
  expected = tf.nn.softmax(trained(preprocessing.normalize(pixels, "torch"), training=False))
  served = loaded.signatures[export.SERVING_DEFAULT](images=tf.constant(encoded))
  assert served["probabilities"].shape == (len(encoded), 2)
  np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5)
  np.testing.assert_allclose(loaded.serve_images(pixels)["probabilities"], expected, atol=1e-5)


def test_augmentation_and_resolution_flags_reach_the_data_config(tmp_path):
  with flagsaver.flagsaver():
    parse(f"--model_dir={tmp_path}", "--use_synthetic_data", "--architecture=resnet18",
          "--image_size=160",
          "--eval_image_size=224", "--train_crop_area_range=0.08,1", "--eval_crop_fraction=0.95",
          "--train_crop_aspect_range=0.75,1.3333", "--color_jitter=0.4",
          "--randaugment_layers=2", "--randaugment_magnitude=6", "--randaugment_magnitude_std=0.5",
          "--randaugment_variant=timm", "--random_erasing_probability=0.25",
          "--random_erasing_area_range=0.02,0.25")
    experiment = main.experiment_from_flags()
  data = experiment.data
  assert (data.image_size, data.eval_image_size, data.eval_size) == (160, 224, 224)
  assert data.train_crop_area_range == (0.08, 1.0)
  assert data.train_crop_aspect_range == (0.75, 1.3333)
  assert (data.eval_crop_fraction, data.color_jitter) == (0.95, 0.4)
  assert (data.randaugment_layers, data.randaugment_magnitude, data.randaugment_magnitude_std,
          data.randaugment_variant) == (2, 6.0, 0.5, "timm")
  assert (data.random_erasing_probability, data.random_erasing_area_range) == (0.25, (0.02, 0.25))
  assert experiment.model.any_input_size and experiment.model.image_size == 160


def test_flag_defaults_are_the_data_config_defaults(tmp_path):
  with flagsaver.flagsaver():
    parse(f"--model_dir={tmp_path}", "--use_synthetic_data")
    experiment = main.experiment_from_flags()
  default = DataConfig()
  names = ("eval_image_size", "train_crop_area_range", "train_crop_aspect_range",
           "eval_crop_fraction", "color_jitter", "autoaugment", "randaugment_layers",
           "randaugment_magnitude", "randaugment_magnitude_std", "randaugment_variant",
           "random_erasing_probability", "random_erasing_area_range")
  for name in names:
    assert getattr(experiment.data, name) == getattr(default, name), name
  assert not experiment.model.any_input_size and not experiment.data.augments


def test_flatten_head_cannot_evaluate_at_another_size(tmp_path):
  with flagsaver.flagsaver():
    parse(f"--model_dir={tmp_path}", "--use_synthetic_data", "--architecture=vgg16",
          "--pooling=none", "--image_size=32", "--eval_image_size=48")
    with pytest.raises(ValueError, match=r"--eval_image_size=48 differs from --image_size=32.*"
                                         r"Received: --pooling=none"):
      main.experiment_from_flags()
    # With global pooling VGG takes any size.
    parse(f"--model_dir={tmp_path}", "--use_synthetic_data", "--architecture=vgg16",
          "--pooling=avg", "--image_size=32", "--eval_image_size=48")
    assert main.experiment_from_flags().model.any_input_size
  flatten = ModelConfig(architecture="vgg16", pooling=None, image_size=32, base_width=8)
  with pytest.raises(ValueError, match=r"any_input_size needs global pooling.*Received: "
                                       r"any_input_size=True, pooling=None"):
    dataclasses.replace(flatten, any_input_size=True)
  with pytest.raises(ValueError, match=r"flatten head \(pooling=None\) serves only its training "
                                       r"size 32.*Received: image_size=48"):
    export.serving_config(flatten, 48)


def test_experiment_refuses_an_eval_size_the_model_cannot_take():
  data = DataConfig(image_size=32, eval_image_size=48, num_classes=4)
  model = ModelConfig(architecture="resnet18", image_size=32, num_classes=4, base_width=8)
  with pytest.raises(ValueError, match=r"needs a model built with any_input_size=True\. "
                                       r"Received: data image_size 32, eval_image_size 48"):
    config_lib.ExperimentConfig(data=data, model=model)
  config_lib.ExperimentConfig(data=data, model=dataclasses.replace(model, any_input_size=True))


@pytest.mark.parametrize("architecture,pooling", [("resnet18", "avg"), ("vgg16", "max")])
def test_any_input_size_model_gives_the_fixed_size_models_outputs(architecture, pooling):
  config = ModelConfig(architecture=architecture, pooling=pooling, image_size=32, base_width=8,
                       num_classes=3)
  flexible = models.build_model(dataclasses.replace(config, any_input_size=True))
  for size in (32, 48):
    fixed = models.build_model(dataclasses.replace(config, image_size=size))
    fixed.set_weights(flexible.get_weights())
    images = np.random.default_rng(size).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    np.testing.assert_allclose(flexible(images, training=False), fixed(images, training=False),
                               atol=1e-5)

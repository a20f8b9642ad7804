"""Our training step against the official trainer's own code, step for step.

tensorflow/models' resnet_ctl_imagenet_main setup and ResnetRunnable's train loop
(tests/official_trainer_oracle.py, in a process of its own) and our Trainer, both given the
official command line, start from the same ResNet-50 v1.5 weights and train on the same
photo-like batches. Each of our steps starts from the official state before that step
(weights, BatchNorm moving statistics, momentum, optimizer step), so every step is compared
on its own: the loss with its L2 term, the weights, velocities and moving statistics after
it, and the logits in inference and training mode; the learning rate at every boundary of
the official schedule. docs/official_flags.md lists what still differs and by how much.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from input_pipeline import preprocessing
from official_resnet import trainer as trainer_lib
from official_resnet.demo import photos
import image_fixtures
import test_recipes

ORACLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "official_trainer_oracle.py")
BATCH, STEPS = 4, 3
# The official command line, given to both trainers: one CPU, float32, its synthetic data
# (whose epoch is ImageNet's), channels_last as on a CPU.
OFFICIAL_FLAGS = (f"--batch_size={BATCH}", "--dtype=fp32", "--distribution_strategy=off",
                  "--num_gpus=0", "--use_synthetic_data=true", "--skip_eval",
                  "--data_format=channels_last")
# Where our defaults are not the official's, the documented flags that give its values
# (docs/official_flags.md): 1001 logits on unshifted labels, its schedule, ImageNet's epoch.
OURS = ("--num_classes=1001", "--label_offset=0", "--lr_schedule=piecewise",
        "--synthetic_num_examples=1281167")
STEPS_PER_EPOCH = 1281167 // BATCH
WARMUP_STEPS = 5 * STEPS_PER_EPOCH
# The last warm-up step, then two at the peak rate.
START_STEP = WARMUP_STEPS - 1


def _official_name(path):
  """Our variable path -> the official model's variable name (resnet_model.py's layer names:
  res2a_branch2a, bn2a_branch2a, conv1, bn_conv1, fc1000)."""
  layer, weight = path.split("/")
  if layer == "predictions":
    return f"fc1000/{weight}"
  if layer in ("conv1_conv", "conv1_bn"):
    return f"{'conv1' if layer == 'conv1_conv' else 'bn_conv1'}/{weight}"
  stage, block, index, kind = layer.split("_")
  branch = "branch1" if index == "0" else "branch2" + "abc"[int(index) - 1]
  letter = "abcdefghijklmnopqrstuvwxyz"[int(block.removeprefix("block")) - 1]
  prefix = "res" if kind == "conv" else "bn"
  return f"{prefix}{stage.removeprefix('conv')}{letter}_{branch}/{weight}"


def _batches():
  """(pixels, images, labels): [STEPS, BATCH, 224, 224, 3] photo-like uint8 crops as our
  pipeline gives them to the train step, which normalizes on the device; the same pixels
  minus the official RGB means, as the official step gets them; labels 0..999 as the
  official pipeline feeds them."""
  pixels = [preprocessing.to_uint8(preprocessing.preprocess_for_eval(
      photos.encode(image_fixtures.image(seed, 256 + 8 * seed, 320)), 224)).numpy()
            for seed in range(STEPS * BATCH)]
  pixels = np.stack(pixels).reshape(STEPS, BATCH, 224, 224, 3)
  images = preprocessing.normalize(pixels, "rgb_mean").numpy()
  labels = np.random.default_rng(0).integers(0, 1000, (STEPS, BATCH))
  return pixels, images, labels


RATE_STEPS = np.array([0, 1, WARMUP_STEPS // 2, WARMUP_STEPS - 1, WARMUP_STEPS,
                       30 * STEPS_PER_EPOCH - 1, 30 * STEPS_PER_EPOCH, 30 * STEPS_PER_EPOCH + 1,
                       60 * STEPS_PER_EPOCH, 80 * STEPS_PER_EPOCH, 90 * STEPS_PER_EPOCH - 1])


@pytest.fixture(scope="module")
def official(tmp_path_factory):
  """The oracle's record (see official_trainer_oracle.py), and our and its batches."""
  directory = tmp_path_factory.mktemp("official")
  pixels, images, labels = _batches()
  # A trained head's bias is not zero; at zero its decay would not show.
  head_bias = np.random.default_rng(1).normal(0.0, 1.0, 1001).astype(np.float32)
  batches = str(directory / "batches.npz")
  np.savez(batches, images=images, labels=labels, start_step=START_STEP, rate_steps=RATE_STEPS,
           head_bias=head_bias)
  record = str(directory / "record.npz")
  result = subprocess.run(
      [sys.executable, ORACLE, batches, record, "--", *OFFICIAL_FLAGS,
       f"--model_dir={directory / 'model_dir'}"],
      capture_output=True, text=True, timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return dict(np.load(record)), pixels, images, labels


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
  model_dir = tmp_path_factory.mktemp("ours")
  experiment = test_recipes.experiment(*OFFICIAL_FLAGS, *OURS, f"--model_dir={model_dir}")
  return trainer_lib.Trainer(experiment)


def _load_state(trainer, record, index):
  """The official state before step `index` into our model and optimizer."""
  model, optimizer = trainer.model, trainer.optimizer
  for variable in model.variables:
    variable.assign(record[f"state{index}/{_official_name(variable.path)}"])
  for variable, velocity in zip(model.trainable_variables, optimizer.momentums):
    # The official optimizer makes its slots at its first update: zero until then.
    velocity.assign(record.get(f"state{index}/{_official_name(variable.path)}/momentum",
                               np.zeros(velocity.shape, np.float32)))
  optimizer.iterations.assign(int(record[f"state{index}/iterations"]))


def _assert_rounding_apart(actual, expected, relative, err_msg=""):
  """Equal up to float32 rounding: `relative` of the largest magnitude, element by element (the
  two sides sum the same terms in other orders)."""
  np.testing.assert_allclose(actual, expected, rtol=0,
                             atol=relative * np.abs(expected).max() + 1e-12, err_msg=err_msg)


def _logits(model, images):
  """Logits in inference and training mode; training mode's moving statistics put back."""
  statistics = [(variable, variable.numpy()) for variable in model.non_trainable_variables]
  inference = model(images, training=False).numpy()
  training = model(images, training=True).numpy()
  for variable, value in statistics:
    variable.assign(value)
  return inference, training


@pytest.mark.slow
def test_the_official_learning_rate_at_every_boundary(official, ours):
  record = official[0]
  rates = [float(ours.learning_rate_schedule(step)) for step in RATE_STEPS]
  np.testing.assert_allclose(rates, record["rates"], rtol=1e-6)
  # Warm-up, peak (0.1 x 4/256), and the three decays: the schedule is not trivially equal.
  assert len(set(np.round(record["rates"], 12))) >= 7


@pytest.mark.slow
def test_logits_equal_the_official_model_in_inference_and_training_mode(official, ours):
  record, _, images, _ = official
  for index in (0, STEPS):
    _load_state(ours, record, index)
    inference, training = _logits(ours.model, images[0])
    _assert_rounding_apart(inference, record[f"inference_logits{index}"], 1e-5)
    _assert_rounding_apart(training, record[f"training_logits{index}"], 1e-5)
  # The moving statistics after the steps are not the initial ones: inference mode differs.
  assert not np.allclose(record[f"inference_logits{STEPS}"], record["inference_logits0"], atol=1e-2)


@pytest.mark.slow
def test_each_sgd_step_equals_the_official_step(official, ours):
  record, pixels, _, labels = official
  assert ours.normalizes_on_device
  train_function = ours.make_train_function()
  for step in range(STEPS):
    _load_state(ours, record, step)
    iterator = iter(tf.data.Dataset.from_tensors((pixels[step], labels[step])))
    results = train_function(iterator, tf.constant(1))
    # The loss with its L2 term (the L2 of every weight but BatchNorm's, the head's bias too).
    decay = float(tf.add_n(ours.model.losses))
    assert decay > 1.0
    np.testing.assert_allclose(float(results["loss_sum"]), record[f"loss{step}"], rtol=1e-6)
    after = f"state{step + 1}"
    before = f"state{step}"
    for variable in ours.model.variables:
      name = _official_name(variable.path)
      expected, start = record[f"{after}/{name}"], record[f"{before}/{name}"]
      # The change the step makes: what could differ (a lost Bessel's correction moves a
      # moving variance by 1/(n-1) of its change, the bias decay the head's velocity by 3%).
      _assert_rounding_apart(variable.numpy() - start, expected - start, 1e-4, err_msg=name)
    for variable, velocity in zip(ours.model.trainable_variables, ours.optimizer.momentums):
      name = _official_name(variable.path)
      _assert_rounding_apart(velocity.numpy(), record[f"{after}/{name}/momentum"], 1e-4,
                             err_msg=f"{name} velocity")
    assert int(ours.optimizer.iterations.numpy()) == int(record[f"{after}/iterations"])

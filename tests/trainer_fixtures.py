"""Small data sets and configs for the trainer tests.

The colour folder holds solid-colour PNGs whose class is their colour. Any
crop of a solid image, flipped and resized, is the same image, so the
pipeline's random augmentation cannot change what a step sees: training on it
is deterministic given the data seed, which the exact resume and
distribution-parity tests need. It is also learnable in a few steps.
"""
import dataclasses
import os

import numpy as np
from PIL import Image
import tensorflow as tf

from input_pipeline.config import DataConfig
from official_resnet import config as config_lib
from official_resnet import trainer as trainer_lib
from official_resnet.demo import photos
from official_resnet.models.config import ModelConfig

COLOURS = ((220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 210, 40))


def write_colour_folder(root, train_per_class, eval_per_class, size=32, seed=0, noise=0.0,
                        num_classes=len(COLOURS)):
  """root/{train,validation}/<class>/<n>.png, brightness jittered per image.

  noise > 0 adds per-pixel noise of that standard deviation: the images are no longer
  solid (augmentation then matters), and BatchNorm sees realistic feature variances.
  """
  rng = np.random.default_rng(seed)
  for split, count in (("train", train_per_class), ("validation", eval_per_class)):
    for index, colour in enumerate(COLOURS[:num_classes]):
      folder = os.path.join(root, split, f"class{index}")
      os.makedirs(folder, exist_ok=True)
      for n in range(count):
        shade = np.array(colour) * rng.uniform(0.7, 1.1)
        pixels = shade + rng.normal(0.0, noise, (size, size, 3)) if noise else np.broadcast_to(
            shade, (size, size, 3))
        image = np.clip(pixels, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(os.path.join(folder, f"{n}.png"))
  return root


def experiment(model_dir, data_dir=None, *, batch_size=8, train_steps=6, architecture="resnet18",
               strategy="off", training_loop="custom", steps_per_loop=2, seed=1, **train_overrides):
  """A tiny ExperimentConfig: 32 px, base_width 8, constant learning rate, fp32."""
  num_classes = len(COLOURS)
  if data_dir is None:
    data = DataConfig(source="synthetic", image_size=32, num_classes=num_classes,
                      batch_size=batch_size, synthetic_num_examples=4 * batch_size, seed=seed)
  else:
    data = DataConfig(source="folder", data_dir=data_dir, image_size=32, num_classes=num_classes,
                      batch_size=batch_size, normalization="unit", seed=seed)
  model = ModelConfig(architecture=architecture, num_classes=num_classes, image_size=32,
                      base_width=8)
  train = config_lib.TrainConfig(
      model_dir=str(model_dir), train_steps=train_steps, steps_per_loop=steps_per_loop,
      log_steps=2, training_loop=training_loop,
      schedule=config_lib.ScheduleConfig(name="constant", base_learning_rate=0.05,
                                         base_batch_size=None))
  train = dataclasses.replace(train, **train_overrides)
  runtime = config_lib.RuntimeConfig(distribution_strategy=strategy, num_gpus=0, seed=seed)
  return config_lib.ExperimentConfig(data=data, model=model, train=train, runtime=runtime)


def photo_batches(steps, batch_size, size=32, seed=0, solid=False):
  """uint8 images [steps, batch, size, size, 3] and int32 labels [steps, batch].

  Photo-like by default; solid=True gives each image one colour, as the colour folder.
  """
  rng = np.random.default_rng(seed)
  if solid:
    images = np.broadcast_to(rng.integers(0, 256, (steps, batch_size, 1, 1, 3), dtype=np.uint8),
                             (steps, batch_size, size, size, 3)).copy()
  else:
    images = np.stack([photos.photo_like_image(rng, size, size)
                       for _ in range(steps * batch_size)]).reshape(steps, batch_size, size, size, 3)
  labels = rng.integers(0, len(COLOURS), (steps, batch_size)).astype(np.int32)
  return images, labels


def replica_batches(images, labels, context=None):
  """The batches one input pipeline reads from global batches [steps, batch, ...]: under
  `context` (a tf.distribute.InputContext; None: one pipeline, one replica), replica r of the
  cluster gets rows [r * B/R, (r + 1) * B/R) of each global batch, whichever process it is
  in, so runs with any split into replicas and workers see the same data. A pipeline feeding
  several replicas gives them their slices in turn, step by step."""
  steps, batch_size = labels.shape
  replicas = context.num_replicas_in_sync if context else 1
  local = replicas // context.num_input_pipelines if context else 1
  first = context.input_pipeline_id * local if context else 0
  rows = batch_size // replicas

  def slices(values):
    values = values.reshape(steps, replicas, rows, *values.shape[2:])[:, first:first + local]
    return values.reshape(steps * local, rows, *values.shape[3:])

  return tf.data.Dataset.from_tensor_slices((slices(images), slices(labels)))


def distributed_batches(strategy, images, labels):
  """An iterator giving each replica its slice of every global batch, on every worker
  (replica_batches)."""
  return iter(strategy.distribute_datasets_from_function(
      lambda context: replica_batches(images, labels, context)))


def train_stream_of(images, labels):
  """A stand-in for input_pipeline.build_train_stream that reads the given global batches
  (replica_batches) from global step `start_step` on, whatever the data config says."""
  def build_train_stream(config, steps_per_epoch, input_context=None, start_step=0):
    del config, steps_per_epoch  # The batches are the stream.
    local = (input_context.num_replicas_in_sync // input_context.num_input_pipelines
             if input_context else 1)
    return replica_batches(images, labels, input_context).skip(start_step * local)

  return build_train_stream


def train_on_batches(experiment, images, labels):
  """A fresh Trainer of `experiment` after its train function ran over the given global
  batches (see distributed_batches), replicas synced."""
  trainer = trainer_lib.Trainer(experiment)
  iterator = distributed_batches(trainer.strategy, images, labels)
  trainer.make_train_function()(iterator, tf.constant(len(labels)))
  trainer.sync_replicas()
  return trainer


# Class colour casts of the photo-like folder: one channel held back per class (or two).
TINTS = ((1.0, 0.3, 0.3), (0.3, 1.0, 0.3), (0.3, 0.3, 1.0), (1.0, 1.0, 0.3))


def write_photo_folder(root, train_per_class, eval_per_class, height=40, width=48, seed=0):
  """root/{train,validation}/<class>/<n>.jpg: photo-like JPEGs under a colour cast per class.

  Every image is its own scene (official_resnet.demo.photos: lit background, occluding objects,
  texture), so crops and flips change what a step sees, unlike the solid colours; the
  class is the cast, learnable in tens of steps.
  """
  for split, count in (("train", train_per_class), ("validation", eval_per_class)):
    for index, tint in enumerate(TINTS):
      folder = os.path.join(root, split, f"class{index}")
      os.makedirs(folder, exist_ok=True)
      for n in range(count):
        rng = np.random.default_rng([seed, index, n, split == "train"])
        pixels = photos.photo_like_image(rng, height, width) * np.array(tint)
        with open(os.path.join(folder, f"{n}.jpg"), "wb") as f:
          f.write(photos.encode(pixels.astype(np.uint8)))
  return root

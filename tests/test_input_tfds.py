"""TFDS source: mocked cats_vs_dogs by name, and a tiny prepared data set for splits and
sharding."""
import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import image_fixtures
from input_pipeline import DataConfig
from input_pipeline import build_dataset
from input_pipeline import build_train_stream
from input_pipeline import dataset_info

SIZE = 32


@pytest.fixture(scope="module")
def tiny_pets_dir(tmp_path_factory):
  """A prepared TFDS data set "tiny_pets": generated JPEG cats and dogs, 2 files per split.

  Written as TFRecords plus TFDS metadata, the files `tfds build` leaves behind.
  """
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  version_dir = os.path.join(data_dir, "tiny_pets", "1.0.0")
  os.makedirs(version_dir)
  features = tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
      "label": tfds.features.ClassLabel(names=["cat", "dog"]),
  })
  for split, count in (("train", 12), ("test", 9)):
    for shard in range(2):
      path = os.path.join(version_dir, f"tiny_pets-{split}.tfrecord-{shard:05d}-of-00002")
      with tf.io.TFRecordWriter(path) as writer:
        for i in range(shard, count, 2):
          writer.write(features.serialize_example({"image": image_fixtures.image(i),
                                                   "label": i % 2}))
  tfds.folder_dataset.write_metadata(
      data_dir=version_dir, features=features, split_infos=None,
      filename_template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
      supervised_keys=("image", "label"))
  return data_dir


def _config(**overrides):
  return DataConfig(**{"source": "tfds", "image_size": SIZE, "batch_size": 4, **overrides})


def test_mocked_cats_vs_dogs_by_name():
  with tfds.testing.mock_data(num_examples=10):
    config = _config(tfds_name="cats_vs_dogs", eval_split="train")
    info = dataset_info(config, training=False)
    assert info.num_examples == 10 and info.class_names == ("cat", "dog")
    evaluation = build_dataset(config, training=False)
    sizes = [int(labels.shape[0]) for _, labels in evaluation]
    assert sorted(sizes) == [2, 4, 4]
    images, labels = next(iter(build_dataset(config, training=True)))
    assert images.shape == (4, SIZE, SIZE, 3) and images.dtype == tf.float32
    assert labels.dtype == tf.int32 and set(labels.numpy()) <= {0, 1}


def test_prepared_builder_reads_both_splits_with_the_fused_crop(tiny_pets_dir):
  config = _config(tfds_name="tiny_pets", data_dir=tiny_pets_dir, eval_split="test")
  assert dataset_info(config, training=True).num_examples == 12
  assert dataset_info(config, training=False) == dataset_info(config, training=False)
  labels = [int(x) for _, batch in build_dataset(config, training=False) for x in batch]
  assert sorted(labels) == sorted(i % 2 for i in range(9))
  images, _ = next(iter(build_dataset(config, training=True)))
  assert images.shape == (4, SIZE, SIZE, 3) and np.isfinite(images.numpy()).all()
  # The training stream seeds TFDS's file shuffling per epoch, and resumes where it stood.
  seeded = dataclasses.replace(config, seed=3)

  def labels(start_step, steps):
    stream = build_train_stream(seeded, steps_per_epoch=3, start_step=start_step)
    return [batch.numpy().tolist() for _, batch in stream.take(steps)]

  assert labels(4, 2) == labels(0, 6)[4:]


@pytest.mark.parametrize("pipelines", [2, 3], ids=["by_file", "by_record"])
def test_input_contexts_split_the_tfds_examples(tiny_pets_dir, pipelines):
  config = _config(tfds_name="tiny_pets", data_dir=tiny_pets_dir, eval_split="test",
                   normalization="unit", batch_size=pipelines)
  seen = []
  for index in range(pipelines):
    context = tf.distribute.InputContext(pipelines, index, pipelines)
    for images, _ in build_dataset(config, False, context):
      seen.extend(np.round(images.numpy().mean(axis=(1, 2, 3)), 5))
  assert len(seen) == 9 and len(set(seen)) == 9  # every test image once, none twice


def test_unknown_tfds_name_is_a_clear_error():
  with pytest.raises(ValueError,
                     match=r"tfds_name must name a TFDS data set.*Received: 'no_such_set'"):
    dataset_info(_config(tfds_name="no_such_set"), training=True)
  with pytest.raises(ValueError, match=r"needs tfds_name.*Received: tfds_name=None"):
    dataset_info(_config(), training=True)


def test_unknown_split_is_a_clear_error(tiny_pets_dir):
  config = _config(tfds_name="tiny_pets", data_dir=tiny_pets_dir, eval_split="validation")
  with pytest.raises(ValueError, match=r"eval_split must be a split of tiny_pets: "
                                       r"\['test', 'train'\]\. Received: 'validation'"):
    build_dataset(config, training=False)


def test_unprepared_data_set_is_a_clear_error(tmp_path):
  config = _config(tfds_name="cifar10", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match=r"'cifar10' is not prepared in data_dir.*tfds build"):
    dataset_info(config, training=True)

"""build_tfrecords: official-format shards whose pixels and labels round-trip, bad files
reported."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import image_fixtures
from input_pipeline import DataConfig
from input_pipeline import build_dataset
from input_pipeline import build_tfrecords
from input_pipeline import constants
from input_pipeline import dataset_info
from input_pipeline import folder
from input_pipeline import preprocessing

SIZE = 32


def _read_records(paths):
  features = {
      constants.KEY_ENCODED: tf.io.FixedLenFeature([], tf.string),
      constants.KEY_LABEL: tf.io.FixedLenFeature([], tf.int64),
      constants.KEY_LABEL_TEXT: tf.io.FixedLenFeature([], tf.string),
      constants.KEY_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
      constants.KEY_WIDTH: tf.io.FixedLenFeature([], tf.int64),
      "image/filename": tf.io.FixedLenFeature([], tf.string),
  }
  return [{k: v.numpy() for k, v in tf.io.parse_single_example(r, features).items()}
          for r in tf.data.TFRecordDataset(paths)]


@pytest.fixture
def mixed_folder(tmp_path):
  """cat/dog/fox JPEGs, a PNG, a palette BMP, and two files nothing can read."""
  root = str(tmp_path / "images")
  image_fixtures.make_image_folder(root, classes=("cat", "dog", "fox"), per_class=3)
  png = image_fixtures.write_image(os.path.join(root, "dog", "dog_png.png"),
                                   image_fixtures.image(77), "PNG")
  bmp = image_fixtures.write_image(os.path.join(root, "fox", "fox_bmp.bmp"),
                                   image_fixtures.image(78), "BMP", mode="P")
  with open(os.path.join(root, "cat", "broken.jpg"), "wb") as f:
    f.write(b"\xff\xd8\xff\xe0 truncated")
  with open(os.path.join(root, "fox", "notes.png"), "w") as f:
    f.write("not a picture")
  return root, png, bmp


def test_records_hold_the_images_and_labels(mixed_folder, tmp_path):
  root, png, bmp = mixed_folder
  out = str(tmp_path / "records")
  summary = build_tfrecords.convert(root, out, num_shards=2, num_processes=1)
  assert [os.path.basename(p) for p in summary.shard_paths] == [
      "train-00000-of-00002", "train-00001-of-00002"]
  assert summary.num_written == 11
  assert sorted(os.path.basename(p) for p, _ in summary.unreadable) == ["broken.jpg", "notes.png"]
  with open(os.path.join(out, "labels.txt")) as f:
    assert f.read() == "cat\ndog\nfox\n"

  records = _read_records(summary.shard_paths)
  assert len(records) == 11
  # Both shards hold a mix of classes.
  per_shard = [{r[constants.KEY_LABEL] for r in _read_records([p])} for p in summary.shard_paths]
  assert all(len(labels) >= 2 for labels in per_shard)
  by_name = {r["image/filename"].decode(): r for r in records}
  for path in [os.path.join(dirpath, f) for dirpath, _, files in os.walk(root) for f in files]:
    name = os.path.basename(path)
    if name in ("broken.jpg", "notes.png"):
      assert name not in by_name
      continue
    record = by_name[name]
    class_name = os.path.basename(os.path.dirname(path))
    assert record[constants.KEY_LABEL_TEXT].decode() == class_name
    assert record[constants.KEY_LABEL] == ("cat", "dog", "fox").index(class_name) + 1
    assert tf.io.is_jpeg(record[constants.KEY_ENCODED])
    with open(path, "rb") as f:
      original = f.read()
    stored = preprocessing.decode_image(record[constants.KEY_ENCODED]).numpy()
    assert stored.shape == (record[constants.KEY_HEIGHT], record[constants.KEY_WIDTH], 3)
    if path in (png, bmp):  # re-encoded as JPEG: the same picture, up to JPEG loss
      source = preprocessing.decode_image(original).numpy().astype(np.int32)
      assert np.abs(stored - source).mean() < 5.0
    else:  # valid JPEGs are stored byte for byte
      assert record[constants.KEY_ENCODED] == original


def test_pipeline_reads_the_records_as_it_reads_the_folder(tmp_path):
  root = str(tmp_path / "images")
  image_fixtures.make_image_folder(os.path.join(root, "validation"), per_class=4)
  image_fixtures.make_image_folder(os.path.join(root, "train"), per_class=1, seed=40)
  out = str(tmp_path / "records")
  build_tfrecords.convert(root, out, num_shards=3, split="validation", num_processes=1)

  def eval_examples(config):
    examples = [(int(label), image.tobytes()) for images, labels in build_dataset(config, False)
                for image, label in zip(images.numpy(), labels.numpy())]
    return sorted(examples)

  from_folder = eval_examples(DataConfig(source="folder", data_dir=root, image_size=SIZE,
                                         batch_size=3))
  records_config = DataConfig(source="imagenet", data_dir=out, image_size=SIZE, batch_size=3,
                              eval_file_pattern="validation-*-of-00003", num_classes=2)
  from_records = eval_examples(records_config)
  assert len(from_records) == 8 and from_records == from_folder
  assert dataset_info(records_config, training=False).class_names == ("cat", "dog")


def test_hash_split_matches_the_folder_source(tmp_path):
  root = str(tmp_path / "flat")
  image_fixtures.make_image_folder(root, per_class=8, layout="flat")
  out = str(tmp_path / "records")
  summary = build_tfrecords.convert(root, out, num_shards=1, split="validation",
                                    validation_fraction=0.3, num_processes=1)
  config = DataConfig(source="folder", data_dir=root, validation_fraction=0.3)
  assert summary.num_written == dataset_info(config, training=False).num_examples
  folder_names = {os.path.basename(p) for p in folder.list_image_folder(root, False, 0.3).paths}
  assert {r["image/filename"].decode() for r in _read_records(summary.shard_paths)} == folder_names


def test_bad_arguments_are_clear_errors(mixed_folder, tmp_path):
  root, _, _ = mixed_folder
  with pytest.raises(ValueError, match=r"num_shards must be in \[1, 13\].*Received: 50"):
    build_tfrecords.convert(root, str(tmp_path / "out"), num_shards=50, num_processes=1)
  with pytest.raises(ValueError,
                     match=r"split must be one of \('train', 'validation'\)\. Received: 'test'"):
    build_tfrecords.convert(root, str(tmp_path / "out"), num_shards=1, split="test")


@pytest.mark.slow
def test_command_line_with_two_processes(mixed_folder, tmp_path):
  root, _, _ = mixed_folder
  out = str(tmp_path / "records")
  result = subprocess.run(
      [sys.executable, "-m", "input_pipeline.build_tfrecords", "--image_dir", root,
       "--output_dir", out, "--num_shards", "3", "--num_processes", "2"],
      capture_output=True, text=True, timeout=240,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert result.returncode == 0, result.stderr[-2000:]
  assert sorted(os.listdir(out)) == ["labels.txt", "train-00000-of-00003",
                                     "train-00001-of-00003", "train-00002-of-00003"]
  assert "[3/3 shards]" in result.stderr
  assert "Left out unreadable image" in result.stderr and "broken.jpg" in result.stderr
  assert "11 images in 3 shards; 2 unreadable" in result.stdout
  assert len(_read_records([os.path.join(out, f"train-0000{i}-of-00003") for i in range(3)])) == 11

import os

import numpy as np
import pytest
from PIL import Image

from official_resnet.demo import data as demo_data


def test_subfolder_layout_writes_every_class(tmp_path):
  written = demo_data.write_dataset(str(tmp_path), demo_data.PRETRAIN_CLASSES, 3, image_size=40)
  assert written.num_images == 3 * len(demo_data.PRETRAIN_CLASSES)
  for name in demo_data.PRETRAIN_CLASSES:
    files = sorted(os.listdir(tmp_path / name))
    assert files == [f"{name}.{n}.jpg" for n in range(3)]
    with Image.open(tmp_path / name / files[0]) as image:
      assert image.size == (40, 40) and image.mode == "RGB"


def test_kaggle_layout_is_flat_and_deterministic(tmp_path):
  first, second = tmp_path / "a", tmp_path / "b"
  demo_data.write_dataset(str(first), demo_data.TRANSFER_CLASSES, 2, layout="kaggle", seed=7)
  demo_data.write_dataset(str(second), demo_data.TRANSFER_CLASSES, 2, layout="kaggle", seed=7)
  assert sorted(os.listdir(first)) == ["cat.0.jpg", "cat.1.jpg", "dog.0.jpg", "dog.1.jpg"]
  for name in os.listdir(first):
    assert (first / name).read_bytes() == (second / name).read_bytes()


def test_images_differ_between_draws(tmp_path):
  demo_data.write_dataset(str(tmp_path), ("circle",), 2)
  a, b = (np.asarray(Image.open(tmp_path / "circle" / f"circle.{n}.jpg")) for n in range(2))
  assert np.abs(a.astype(int) - b.astype(int)).mean() > 5


def test_rerun_keeps_existing_files(tmp_path):
  demo_data.write_dataset(str(tmp_path), ("square",), 1)
  path = tmp_path / "square" / "square.0.jpg"
  path.write_bytes(b"kept")
  demo_data.write_dataset(str(tmp_path), ("square",), 2)
  assert path.read_bytes() == b"kept"
  assert (tmp_path / "square" / "square.1.jpg").exists()


def test_bad_arguments_name_the_problem(tmp_path):
  with pytest.raises(ValueError, match="Received: 'zebra'"):
    demo_data.write_dataset(str(tmp_path), ("zebra",), 1)
  with pytest.raises(ValueError, match="layout"):
    demo_data.write_dataset(str(tmp_path), ("cat",), 1, layout="flat")

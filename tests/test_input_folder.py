"""Image folders: both layouts, split folders, the hash split, and the errors."""
import os

import numpy as np
import pytest

import image_fixtures
from input_pipeline import DataConfig
from input_pipeline import build_dataset
from input_pipeline import dataset_info
from input_pipeline import folder

SIZE = 32


def _config(root, **overrides):
  return DataConfig(source="folder", data_dir=root, image_size=SIZE, batch_size=4,
                    **{"validation_fraction": 0.0, **overrides})


def _make_split_folders(root, **kwargs):
  """The same images in root/train and root/validation, so eval reads them all in order."""
  for split in ("train", "validation"):
    image_fixtures.make_image_folder(os.path.join(root, split), **kwargs)


def _eval_by_class(config):
  """Mean colour per label of the eval pipeline's images (labels in 0..C-1)."""
  labels, means = [], []
  for images, batch_labels in build_dataset(config, training=False):
    labels.extend(batch_labels.numpy())
    means.extend(images.numpy().mean(axis=(1, 2)))
  return np.array(labels), np.array(means)


@pytest.mark.parametrize("layout", ["subfolders", "flat"])
def test_both_layouts_give_sorted_classes_and_matching_labels(tmp_path, layout):
  root = str(tmp_path)
  classes = ("dog", "cat", "zebra")  # written unsorted; labels follow sorted names
  _make_split_folders(root, classes=classes, per_class=2, layout=layout)
  config = _config(root)
  info = dataset_info(config, training=False)
  assert info.class_names == ("cat", "dog", "zebra") and info.num_examples == 6
  listing = folder.list_image_folder(root, False, 0.0)
  for path, label in zip(listing.paths, listing.labels):
    name = os.path.basename(path)
    assert name.startswith(info.class_names[label]), (path, label)
  labels, _ = _eval_by_class(config)
  assert sorted(labels) == [0, 0, 1, 1, 2, 2]


def test_flat_and_subfolder_layouts_read_the_same_images_alike(tmp_path):
  flat, nested = str(tmp_path / "flat"), str(tmp_path / "nested")
  _make_split_folders(flat, per_class=2, layout="flat", seed=5)
  _make_split_folders(nested, per_class=2, layout="subfolders", seed=5)
  flat_labels, flat_means = _eval_by_class(_config(flat, seed=0))
  nested_labels, nested_means = _eval_by_class(_config(nested, seed=0))
  order_flat, order_nested = np.lexsort(flat_means.T), np.lexsort(nested_means.T)
  np.testing.assert_array_equal(flat_labels[order_flat], nested_labels[order_nested])
  np.testing.assert_allclose(flat_means[order_flat], nested_means[order_nested], atol=1e-4)


def test_split_folders_are_used_when_present(tmp_path):
  root = str(tmp_path)
  image_fixtures.make_image_folder(os.path.join(root, "train"), per_class=3)
  image_fixtures.make_image_folder(os.path.join(root, "validation"), per_class=1, seed=50)
  config = _config(root, validation_fraction=0.5)  # ignored: the folders decide
  assert dataset_info(config, training=True).num_examples == 6
  assert dataset_info(config, training=False).num_examples == 2
  assert dataset_info(config, training=False).class_names == ("cat", "dog")
  listing = folder.list_image_folder(root, False, 0.5)
  assert all(os.sep + "validation" + os.sep in p for p in listing.paths)


def test_hash_split_is_deterministic_disjoint_and_complete(tmp_path):
  root = str(tmp_path)
  image_fixtures.make_image_folder(root, per_class=20, layout="flat")
  train = folder.list_image_folder(root, True, 0.25)
  validation = folder.list_image_folder(root, False, 0.25)
  assert folder.list_image_folder(root, False, 0.25) == validation
  assert not set(train.paths) & set(validation.paths)
  assert len(train.paths) + len(validation.paths) == 40
  assert 4 <= len(validation.paths) <= 18
  # The split depends on names relative to the root, not on where the folder lives.
  moved = str(tmp_path.parent / "moved")
  os.rename(root, moved)
  moved_validation = folder.list_image_folder(moved, False, 0.25)
  assert [os.path.basename(p) for p in moved_validation.paths] == [
      os.path.basename(p) for p in validation.paths]


def test_empty_folder_is_a_clear_error(tmp_path):
  (tmp_path / "readme.txt").write_text("no images here")
  with pytest.raises(ValueError, match=r"holds no images with extensions .*Received: '.*'"):
    dataset_info(_config(str(tmp_path)), training=True)
  with pytest.raises(ValueError,
                     match=r"data_dir must be an existing folder.*Received: '.*nowhere'"):
    dataset_info(_config(str(tmp_path / "nowhere")), training=True)


def test_one_class_folder_is_a_clear_error(tmp_path):
  image_fixtures.make_image_folder(str(tmp_path), classes=("cat",), per_class=2)
  with pytest.raises(ValueError, match=r"at least 2 classes.*Received: 1 class\(es\) \['cat'\]"):
    build_dataset(_config(str(tmp_path)), training=True)


def test_flat_names_without_a_class_are_a_clear_error(tmp_path):
  image_fixtures.make_image_folder(str(tmp_path), per_class=1, layout="flat")
  image_fixtures.write_image(str(tmp_path / "1234.jpg"), image_fixtures.image(0))
  with pytest.raises(ValueError, match=r"<class>\.<id>\.<ext>.*Received: '1234.jpg'"):
    dataset_info(_config(str(tmp_path)), training=True)


def test_mixed_layouts_are_a_clear_error(tmp_path):
  image_fixtures.make_image_folder(str(tmp_path), per_class=1, layout="flat")
  image_fixtures.make_image_folder(str(tmp_path), per_class=1, layout="subfolders")
  with pytest.raises(ValueError, match=r"mixes images at the top level with class subfolders"):
    dataset_info(_config(str(tmp_path)), training=True)


def test_empty_validation_split_is_a_clear_error(tmp_path):
  image_fixtures.make_image_folder(str(tmp_path), per_class=2)
  with pytest.raises(ValueError, match=r"'validation' split .* is empty.*validation_fraction=0.0"):
    dataset_info(_config(str(tmp_path)), training=False)

"""imagenet_validation: flat ILSVRC2012 validation images sorted into synset folders, then
written as records whose labels agree with the train split's."""
import os

import pytest
import tensorflow as tf

import image_fixtures
from input_pipeline import build_tfrecords
from input_pipeline import constants
from input_pipeline import imagenet_validation

SYNSETS = ("n01440764", "n01443537", "n01484850")
# Image i's synset, in the order of the official one-synset-per-line labels file.
VALIDATION_SYNSETS = ("n01484850", "n01440764", "n01443537", "n01440764", "n01484850")


def _val_name(number):
  return f"ILSVRC2012_val_{number:08d}.JPEG"


@pytest.fixture
def imagenet_dir(tmp_path):
  """imagenet/train/<synset>/ as the train tar unpacks, imagenet/validation/ flat."""
  root = tmp_path / "imagenet"
  image_fixtures.make_image_folder(str(root / "train"), classes=SYNSETS, per_class=2)
  for number in range(1, len(VALIDATION_SYNSETS) + 1):
    image_fixtures.write_image(str(root / "validation" / _val_name(number)),
                               image_fixtures.image(1000 + number))
  labels = tmp_path / "imagenet_2012_validation_synset_labels.txt"
  labels.write_text("".join(f"{s}\n" for s in VALIDATION_SYNSETS))
  return root, str(labels)


def _top_level_files(directory):
  return sorted(f for f in os.listdir(directory) if os.path.isfile(os.path.join(directory, f)))


def test_images_move_into_their_synset_folders_and_a_rerun_moves_nothing(imagenet_dir):
  root, labels = imagenet_dir
  validation = str(root / "validation")
  assert imagenet_validation.sort_into_synset_folders(validation, labels) == 5
  assert _top_level_files(validation) == []
  for number, synset in enumerate(VALIDATION_SYNSETS, start=1):
    assert os.path.isfile(os.path.join(validation, synset, _val_name(number)))
  assert imagenet_validation.sort_into_synset_folders(validation, labels) == 0


def test_kaggle_solution_csv_gives_the_same_labels(imagenet_dir, tmp_path):
  solution = tmp_path / "LOC_val_solution.csv"
  solution.write_text("ImageId,PredictionString\n" + "".join(
      f"ILSVRC2012_val_{n:08d},{s} 10 20 30 40 {s} 5 6 7 8\n"
      for n, s in reversed(list(enumerate(VALIDATION_SYNSETS, start=1)))))
  _, synset_lines = imagenet_dir
  assert (imagenet_validation.read_labels(str(solution)) ==
          imagenet_validation.read_labels(synset_lines) ==
          dict(enumerate(VALIDATION_SYNSETS, start=1)))


def test_sorted_validation_records_use_the_train_class_numbers(imagenet_dir, tmp_path):
  root, labels = imagenet_dir
  imagenet_validation.sort_into_synset_folders(str(root / "validation"), labels)
  out = str(tmp_path / "records")
  summary = build_tfrecords.convert(str(root), out, num_shards=1, split="validation",
                                    num_processes=1)
  features = {constants.KEY_LABEL: tf.io.FixedLenFeature([], tf.int64),
              "image/filename": tf.io.FixedLenFeature([], tf.string)}
  stored = {}
  for record in tf.data.TFRecordDataset(summary.shard_paths):
    example = tf.io.parse_single_example(record, features)
    stored[example["image/filename"].numpy().decode()] = int(example[constants.KEY_LABEL])
  # Sorted synset index + 1, as the train records number them.
  assert stored == {_val_name(n): SYNSETS.index(s) + 1
                    for n, s in enumerate(VALIDATION_SYNSETS, start=1)}


@pytest.mark.parametrize("labels_text, stray_file, message", [
    ("n01484850\nn01440764\n", None, r"no synset for ILSVRC2012_val_00000003.JPEG .*covers 2"),
    ("n01484850\nnot-a-synset\n", None, r"image 2's synset must look like n01440764"),
    ("".join(f"{s}\n" for s in VALIDATION_SYNSETS), "readme.txt",
     r"must be ImageNet validation images .*Received: 'readme.txt'"),
    ("".join(f"{s}\n" for s in VALIDATION_SYNSETS), os.path.join("n01440764", _val_name(4)),
     r"ILSVRC2012_val_00000004.JPEG is both at the top .* and in its synset folder n01440764"),
])
def test_bad_labels_or_stray_files_are_refused_before_anything_moves(
    imagenet_dir, labels_text, stray_file, message):
  root, labels = imagenet_dir
  validation = str(root / "validation")
  with open(labels, "w") as f:
    f.write(labels_text)
  if stray_file:
    os.makedirs(os.path.dirname(root / "validation" / stray_file), exist_ok=True)
    (root / "validation" / stray_file).write_text("notes")
  before = _top_level_files(validation)
  with pytest.raises(ValueError, match=message):
    imagenet_validation.sort_into_synset_folders(validation, labels)
  assert _top_level_files(validation) == before


def test_command_line_reports_a_missing_labels_file(imagenet_dir, capsys):
  root, _ = imagenet_dir
  status = imagenet_validation.main(["--image_dir", str(root / "validation"),
                                     "--labels", "/nonexistent/labels.txt"])
  assert status == 1
  assert "labels must be an existing file" in capsys.readouterr().err

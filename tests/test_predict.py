"""Prediction from a trainer's model_dir and from an export, as a table and as JSON."""
import io
import json
import logging
import os

from absl.testing import flagsaver

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from input_pipeline import DataConfig
from input_pipeline import preprocessing
from official_resnet import export
from official_resnet import main
from official_resnet import models
from official_resnet import predict
from official_resnet import run_state
from cli_fixtures import parse
from test_export import unsaturate

IMAGE_SIZE = 32
CLASS_NAMES = ("cat", "dog", "horse")
DATA_CONFIG = DataConfig(source="folder", image_size=IMAGE_SIZE, normalization="torch",
                         num_classes=len(CLASS_NAMES))
MODEL_CONFIG = models.ModelConfig(architecture="resnet18", base_width=8, image_size=IMAGE_SIZE,
                                  num_classes=len(CLASS_NAMES))


def image_bytes(mode, image_format, size, seed):
  coarse = np.random.default_rng(seed).integers(0, 256, (5, 5, 3), dtype=np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(coarse).resize(size, Image.BILINEAR).convert(mode).save(
      buffer, format=image_format)
  return buffer.getvalue()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  """A model_dir as the trainer leaves it: a ckpt-<step> checkpoint and config.json."""
  keras.utils.set_random_seed(3)
  model = models.build_model(MODEL_CONFIG)
  unsaturate(model, np.random.default_rng(0).uniform(-2, 2, (8, IMAGE_SIZE, IMAGE_SIZE, 3)))
  directory = str(tmp_path_factory.mktemp("model_dir"))
  checkpoint = tf.train.Checkpoint(model=model, optimizer=keras.optimizers.SGD(0.1),
                                   step=tf.Variable(7, dtype=tf.int64))
  tf.train.CheckpointManager(checkpoint, directory, max_to_keep=1).save(checkpoint_number=7)
  run_state.write_run_config(directory, MODEL_CONFIG, DATA_CONFIG, CLASS_NAMES)
  return model, directory


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  """A folder with images of several formats (one nested, one with a capital extension),
  a text file and a hidden file, plus one image outside it."""
  root = tmp_path_factory.mktemp("photos")
  (root / "folder" / "nested").mkdir(parents=True)
  files = {
      root / "folder" / "b.png": image_bytes("RGBA", "PNG", (40, 52), 0),
      root / "folder" / "a.JPG": image_bytes("RGB", "JPEG", (64, 48), 1),
      root / "folder" / "nested" / "c.jpeg": image_bytes("L", "JPEG", (33, 70), 2),
      root / "single.bmp": image_bytes("RGB", "BMP", (45, 45), 3),
  }
  for path, content in files.items():
    path.write_bytes(content)
  (root / "folder" / "notes.txt").write_text("not an image")
  (root / "folder" / "._a.JPG").write_text("macOS metadata, hidden")
  return root


def expected_probabilities(model, paths):
  pixels = tf.stack([preprocessing.preprocess_for_eval(tf.io.read_file(str(p)), IMAGE_SIZE)
                     for p in paths])
  logits = model(preprocessing.normalize(pixels, DATA_CONFIG.normalization), training=False)
  return tf.nn.softmax(logits).numpy()


def test_checkpoint_and_export_predict_the_in_process_model(model_dir, photos, tmp_path):
  model, directory = model_dir
  images = [str(photos / "folder"), str(photos / "single.bmp")]
  expected_paths = [str(photos / "folder" / name)
                    for name in ("a.JPG", "b.png", os.path.join("nested", "c.jpeg"))]
  expected_paths.append(str(photos / "single.bmp"))
  expected = expected_probabilities(model, expected_paths)

  from_checkpoint = predict.predict(directory, images, top_k=2)
  export_dir = str(tmp_path / "export")
  export.export_from_model_dir(directory, export_dir, formats=("saved_model",))
  # An export_dir resolves to its latest version; top_k beyond the classes is clipped.
  from_export = predict.predict(export_dir, images, top_k=10, batch_size=3)

  assert [p.image for p in from_checkpoint] == expected_paths
  assert [p.image for p in from_export] == expected_paths
  for row, checkpoint_prediction, export_prediction in zip(expected, from_checkpoint,
                                                           from_export):
    ranked = np.argsort(-row, kind="stable")
    assert [s.class_id for s in checkpoint_prediction.top_k] == list(ranked[:2])
    assert [s.class_id for s in export_prediction.top_k] == list(ranked)
    assert [s.name for s in export_prediction.top_k] == [CLASS_NAMES[i] for i in ranked]
    np.testing.assert_allclose([s.probability for s in checkpoint_prediction.top_k],
                               row[ranked[:2]], atol=1e-5)
    np.testing.assert_allclose([s.probability for s in export_prediction.top_k], row[ranked],
                               atol=1e-5)


def test_unreadable_files_are_named_and_the_others_still_predicted(model_dir, photos, tmp_path):
  folder = tmp_path / "mixed"
  folder.mkdir()
  for name in ("a.JPG", "b.png"):
    (folder / name).write_bytes((photos / "folder" / name).read_bytes())
  (folder / "fake.jpg").write_text("not a JPEG")
  (folder / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")  # Listed, but cannot be read.
  good = predict.predict(model_dir[1], [str(folder / "a.JPG"), str(folder / "b.png")])
  # batch_size=3 puts a good file in a batch with both bad ones.
  mixed = predict.predict(model_dir[1], [str(folder)], batch_size=3)
  assert [p.image for p in mixed] == [str(folder / name)
                                      for name in ("a.JPG", "b.png", "fake.jpg", "gone.jpg")]
  for got, want in zip(mixed[:2], good):
    assert got.error is None and [s.class_id for s in got.top_k] == [s.class_id for s in want.top_k]
    np.testing.assert_allclose([s.probability for s in got.top_k],
                               [s.probability for s in want.top_k], atol=1e-6)
  fake, gone = mixed[2:]
  assert fake.top_k == () and fake.error == "not a JPEG, PNG, GIF, BMP or WebP image"
  assert gone.top_k == () and gone.error.startswith("cannot be read (")
  lines = predict.format_predictions(mixed, "table").splitlines()
  assert lines[-2].split()[:4] == [str(folder / "fake.jpg"), "-", "-", "error:"]
  assert json.loads(predict.format_predictions(mixed, "json"))[3]["error"] == gone.error


def test_the_command_says_truncated_once_and_counts_what_it_skips(model_dir, photos, tmp_path,
                                                                  capfd, caplog):
  """--mode=predict as typed: a JPEG cut short, a text file named on the command line and a
  text file inside the folder."""
  folder = tmp_path / "mixed"
  folder.mkdir()
  jpeg = (photos / "folder" / "a.JPG").read_bytes()
  (folder / "a.jpg").write_bytes(jpeg)
  (folder / "cut.jpg").write_bytes(jpeg[:len(jpeg) // 2])
  (folder / "readme.txt").write_text("scanned on Monday")
  notes = tmp_path / "notes.txt"
  notes.write_text("not an image")
  with flagsaver.flagsaver():
    parse("--mode=predict", f"--model_dir={model_dir[1]}", f"--images={folder},{notes}",
          "--top_k=1")
    caplog.set_level(logging.INFO, logger="absl")
    stats = main.run()
  out, err = capfd.readouterr()
  assert (stats["images"], stats["failed"]) == (3, 2)
  rows = {line.split()[0]: " ".join(line.split()[1:]) for line in out.splitlines()[1:]}
  assert rows[str(folder / "cut.jpg")] == (
      "- - error: a truncated JPEG: the file ends before the image does")
  assert rows[str(notes)] == "- - error: not a JPEG, PNG, GIF, BMP or WebP image"
  assert rows[str(folder / "a.jpg")].startswith("1 ")
  # Said once, without the decoder's own lines.
  assert (out + err + caplog.text).count("truncated") == 1
  assert "Premature end" not in err and "jpeg" not in err.lower()
  assert (f"Skipped 1 file without an image extension (.jpg/.jpeg/.png/.gif/.bmp/.webp) in the "
          f"folders: {folder / 'readme.txt'}." in caplog.text)
  assert (f"2 of 3 files could not be classified: {folder / 'cut.jpg'}, {notes}"
          in caplog.text)


def test_bad_arguments_raise_before_loading_a_model(photos, tmp_path):
  image = str(photos / "single.bmp")
  with pytest.raises(ValueError, match="source"):
    predict.predict(str(tmp_path), [image])
  (tmp_path / "empty").mkdir()
  for images in ([], image, [str(tmp_path / "missing.jpg")], [str(tmp_path / "empty")]):
    with pytest.raises(ValueError, match="images|holds no"):
      predict.predict(str(tmp_path), images)
  with pytest.raises(ValueError, match="top_k"):
    predict.predict(str(tmp_path), [image], top_k=0)
  with pytest.raises(ValueError, match="batch_size"):
    predict.predict(str(tmp_path), [image], batch_size=0)
  with pytest.raises(ValueError, match="output_format"):
    predict.format_predictions([], "xml")


def test_folders_list_their_images_as_the_input_pipeline_does(tmp_path):
  for name in ("b.jpg", "sub/a.png", "sub/.c.jpg", ".git/d.jpg", "sub/.cache/e.jpg", "f.txt"):
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_bytes(b"")
  assert predict.image_paths([str(tmp_path)]) == [str(tmp_path / "b.jpg"),
                                                  str(tmp_path / "sub" / "a.png")]
  # A hidden file named on its own is still taken as given.
  hidden = str(tmp_path / "sub" / ".c.jpg")
  assert predict.image_paths([hidden]) == [hidden]


PREDICTIONS = [
    predict.Prediction("photos/a.jpg", (predict.ClassScore(1, "dog", 0.875),
                                        predict.ClassScore(0, "cat", 0.125))),
    predict.Prediction("b.png", (predict.ClassScore(2, "horse", 0.5),
                                 predict.ClassScore(1, "dog", 0.25))),
]


def test_table_lists_every_class_of_every_image_in_rank_order():
  lines = predict.format_predictions(PREDICTIONS, "table").splitlines()
  assert lines[0].split() == ["image", "rank", "class", "name", "probability"]
  assert [line.split() for line in lines[1:]] == [
      ["photos/a.jpg", "1", "1", "dog", "0.8750"], ["2", "0", "cat", "0.1250"],
      ["b.png", "1", "2", "horse", "0.5000"], ["2", "1", "dog", "0.2500"]]
  # Columns line up: every rank starts where the header's does.
  rank_column = lines[0].index("rank")
  assert all(line[rank_column] in "12" for line in lines[1:])


def test_json_round_trips_the_predictions():
  decoded = json.loads(predict.format_predictions(PREDICTIONS, "json"))
  assert decoded == [
      {"image": "photos/a.jpg", "top_k": [{"class_id": 1, "name": "dog", "probability": 0.875},
                                          {"class_id": 0, "name": "cat", "probability": 0.125}],
       "error": None},
      {"image": "b.png", "top_k": [{"class_id": 2, "name": "horse", "probability": 0.5},
                                   {"class_id": 1, "name": "dog", "probability": 0.25}],
       "error": None}]

"""--mode=export, --export_dir at the end of training, and --mode=predict from the command line."""
import json
import os
import subprocess
import sys

from absl import app
from absl import flags
from absl.testing import flagsaver
import numpy as np
import pytest
import tensorflow as tf

from input_pipeline import constants
from official_resnet import export
from official_resnet import main
from official_resnet import predict
import trainer_fixtures as fixtures
from cli_fixtures import REPO, colour_flags, parse, subprocess_env

FLAGS = flags.FLAGS


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A model_dir trained 2 steps with --export_dir: (data_dir, model_dir, export_dir, stats)."""
  root = tmp_path_factory.mktemp("export_cli")
  data = fixtures.write_colour_folder(str(root / "data"), 2, 2)
  model_dir, export_dir = str(root / "model"), str(root / "exports")
  with flagsaver.flagsaver():
    parse(*colour_flags(data, model_dir, train_steps=2, mode="train", export_dir=export_dir))
    stats = main.run()
  return data, model_dir, export_dir, stats


def test_training_with_export_dir_exports_version_one(trained):
  _, model_dir, export_dir, stats = trained
  assert stats["export_path"] == os.path.join(export_dir, "1")
  assert export.version_numbers(export_dir) == [1]
  files = set(os.listdir(stats["export_path"]))
  # Default formats: the SavedModel and the .keras file, no TFLite.
  assert {"saved_model.pb", "variables", "assets", export.KERAS_FILE} <= files
  assert export.TFLITE_FILE not in files
  labels = open(os.path.join(stats["export_path"], "assets", constants.LABELS_FILE)).read()
  assert labels.split() == [f"class{i}" for i in range(4)]
  assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-2")


@pytest.mark.slow
def test_export_mode_adds_a_version_and_predict_runs_as_a_command(trained, tmp_path):
  data, model_dir, export_dir, _ = trained
  with flagsaver.flagsaver():
    parse(*colour_flags(data, model_dir, mode="export", export_dir=export_dir,
                        export_format="saved_model,tflite", top_k=2))
    stats = main.run()
  version_two = os.path.join(export_dir, "2")
  assert stats == {"export_path": version_two} and export.version_numbers(export_dir) == [1, 2]
  files = set(os.listdir(version_two))
  assert {export.TFLITE_FILE, export.TFLITE_DYNAMIC_RANGE_FILE} <= files
  assert export.KERAS_FILE not in files

  images = os.path.join(data, "validation")
  command = [sys.executable, "-m", "official_resnet.main", "--mode=predict",
             f"--images={images}", f"--export_dir={export_dir}", "--output=json", "--top_k=3"]
  result = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  printed = json.loads(result.stdout)
  # The latest version, in a fresh process, agrees with the checkpoint in this one.
  expected = predict.predict(model_dir, [images], top_k=3)
  assert [p["image"] for p in printed] == [p.image for p in expected] and len(printed) == 8
  for got, want in zip(printed, expected):
    assert [s["class_id"] for s in got["top_k"]] == [s.class_id for s in want.top_k]
    np.testing.assert_allclose([s["probability"] for s in got["top_k"]],
                               [s.probability for s in want.top_k], atol=1e-5)
    assert [s["name"] for s in got["top_k"]] == [f"class{s.class_id}" for s in want.top_k]


def test_predict_prints_a_table_from_the_model_dir(trained, capsys):
  data, model_dir, _, _ = trained
  image = os.path.join(data, "validation", "class2", "0.png")
  with flagsaver.flagsaver():
    parse(*colour_flags(data, model_dir, mode="predict", images=image, top_k=4))
    stats = main.run()
  assert stats == {"source": model_dir, "images": 1, "failed": 0}
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0].split() == ["image", "rank", "class", "name", "probability"]
  assert len(lines) == 1 + 4 and lines[1].startswith(image)
  probabilities = [float(line.split()[-1]) for line in lines[1:]]
  assert probabilities == sorted(probabilities, reverse=True)
  assert sum(probabilities) == pytest.approx(1.0, abs=2e-4)


def test_export_and_predict_refuse_missing_inputs_and_write_nothing(trained, tmp_path):
  data, model_dir, _, _ = trained
  empty_model_dir, export_dir = str(tmp_path / "no_checkpoints"), str(tmp_path / "exports")
  os.makedirs(empty_model_dir)
  cases = [
      (dict(mode="export", model_dir=model_dir), app.UsageError, r"--mode=export needs --export_dir"),
      (dict(mode="export", model_dir=empty_model_dir, export_dir=export_dir), app.UsageError,
       r"--mode=export needs a checkpoint in --model_dir, or weights to export as they are "
       r"\(--pretrained, --init_checkpoint\)\. Received: --model_dir=.*no_checkpoints without "
       r"checkpoints, no weights flag"),
      (dict(mode="export", model_dir=model_dir, export_dir=export_dir, export_format="onnx"),
       app.UsageError, r"export_format must be a non-empty subset of \('saved_model', 'keras', "
                       r"'tflite'\). Received: \('onnx',\)"),
      (dict(mode="predict", model_dir=model_dir), app.UsageError, r"--mode=predict needs --images"),
      (dict(mode="predict", model_dir=empty_model_dir, images=data), ValueError,
       r"`source` must be an exported SavedModel"),
  ]
  for overrides, error, message in cases:
    with flagsaver.flagsaver():
      parse(*colour_flags(data, **overrides))
      with pytest.raises(error, match=message):
        main.run()
  assert not os.path.exists(export_dir) and os.listdir(empty_model_dir) == []

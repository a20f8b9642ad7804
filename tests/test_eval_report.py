"""The evaluation report (per-class figures, confusion matrix, CSV, PNG, TensorBoard) and
--mode=continuous_eval, on a ResNet-18 with BatchNorm trained a few steps on generated images."""
import csv
import dataclasses
import glob
import io
import os
import threading
import time

from absl import flags
from absl.testing import flagsaver
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

import input_pipeline
from official_resnet import config as config_lib
from official_resnet import continuous_eval
from official_resnet import eval_report
from official_resnet import main
from official_resnet import progress
from official_resnet import run as run_lib
from official_resnet import run_lock
from official_resnet import run_state
from official_resnet import trainer as trainer_lib
import trainer_fixtures as fixtures

# 4 classes; 32 training images (4 steps of 8 per epoch) and 20 evaluation images, which
# leave a last batch of 4: under `mirrored` one replica gets all of it.
TRAIN_PER_CLASS, EVAL_PER_CLASS, BATCH = 8, 5, 8


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return fixtures.write_colour_folder(str(tmp_path_factory.mktemp("data")), TRAIN_PER_CLASS,
                                      EVAL_PER_CLASS, seed=1, noise=40.0)


def _experiment(model_dir, data, **overrides):
  return fixtures.experiment(model_dir, data, batch_size=BATCH, **overrides)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
  """train_and_eval, 8 steps, evaluated at steps 4 and 8, with TensorBoard."""
  experiment = _experiment(tmp_path_factory.mktemp("run"), data, train_steps=8, steps_per_loop=4,
                           epochs_between_evals=1)
  return experiment, run_lib.train_and_evaluate(experiment)


def numpy_report(experiment):
  """Confusion matrix and per-class figures from the model's predictions, with NumPy."""
  trainer = trainer_lib.Trainer(dataclasses.replace(
      experiment, runtime=dataclasses.replace(experiment.runtime, distribution_strategy="off")))
  trainer.restore_or_initialize(write_config=False)
  predictions, labels = [], []
  for images, batch_labels in input_pipeline.build_dataset(experiment.data, training=False):
    predictions.append(np.argmax(trainer.model(images, training=False).numpy(), axis=-1))
    labels.append(batch_labels.numpy())
  predictions, labels = np.concatenate(predictions), np.concatenate(labels)
  classes = np.arange(experiment.model.num_classes)
  confusion = (labels[:, None, None] == classes[None, :, None]) & (
      predictions[:, None, None] == classes[None, None, :])
  hits = np.array([np.sum((predictions == c) & (labels == c)) for c in classes], dtype=float)
  predicted = np.array([np.sum(predictions == c) for c in classes], dtype=float)
  support = np.array([np.sum(labels == c) for c in classes], dtype=float)
  precision = np.where(predicted > 0, hits / np.maximum(predicted, 1), 0.0)
  recall = np.where(support > 0, hits / np.maximum(support, 1), 0.0)
  f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12),
                0.0)
  return confusion.sum(axis=0), precision, recall, f1, support


def test_per_class_figures_equal_numpy_on_the_models_predictions(trained):
  experiment, stats = trained
  confusion, precision, recall, f1, support = numpy_report(experiment)
  assert confusion.sum() == EVAL_PER_CLASS * 4
  # A few steps leave mistakes (which class they fall on varies from run to run): the matrix
  # is not symmetric, so mixing up rows and columns, or precision and recall, shows.
  assert not np.array_equal(confusion, confusion.T)
  np.testing.assert_array_equal(stats["eval_confusion_matrix"], confusion)
  per_class = stats["eval_per_class"]
  assert [row["class"] for row in per_class] == ["class0", "class1", "class2", "class3"]
  np.testing.assert_allclose([row["precision"] for row in per_class], precision, rtol=1e-12)
  np.testing.assert_allclose([row["recall"] for row in per_class], recall, rtol=1e-12)
  np.testing.assert_allclose([row["f1"] for row in per_class], f1, rtol=1e-12)
  assert [row["support"] for row in per_class] == support.tolist()
  assert stats["eval_top_1_accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum())
  # History entries keep the scalars only; stats.json holds the last evaluation's report.
  assert [entry["step"] for entry in stats["history"]] == [4, 8]
  assert all("eval_confusion_matrix" not in entry for entry in stats["history"])
  saved = run_state.read_stats(experiment.train.model_dir)
  assert saved["eval_confusion_matrix"] == stats["eval_confusion_matrix"]
  assert saved["eval_per_class"] == stats["eval_per_class"]


def test_zero_division_follows_scikit_learn():
  # Class 1 is never predicted, class 2 has no images.
  rows = eval_report.per_class([[2, 0, 1], [1, 0, 0], [0, 0, 0]], ["a", "b", "c"])
  assert [(row["precision"], row["recall"], row["f1"], row["support"]) for row in rows] == [
      (2 / 3, 2 / 3, pytest.approx(2 / 3), 3), (0.0, 0.0, 0.0, 1), (0.0, 0.0, 0.0, 0)]


def _read_csv(path):
  with open(path, newline="") as f:
    return list(csv.reader(f))


def _events(model_dir, kind, plugin):
  """{tag: [(step, value)]} of `plugin`'s summaries in model_dir/kind."""
  found = {}
  for path in glob.glob(os.path.join(model_dir, kind, "events.*")):
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name == plugin:
          found.setdefault(value.tag, []).append((event.step, tf.make_ndarray(value.tensor)))
  return found


def test_png_csv_and_tensorboard_agree_with_stats_json(trained):
  experiment, _ = trained
  model_dir = experiment.train.model_dir
  stats = run_state.read_stats(model_dir)
  report_dir = os.path.join(model_dir, eval_report.REPORT_DIR)
  names = [row["class"] for row in stats["eval_per_class"]]
  matrix = _read_csv(os.path.join(report_dir, eval_report.MATRIX_CSV))
  assert matrix[0] == ["true \\ predicted", *names]
  assert [row[0] for row in matrix[1:]] == names
  assert [[int(value) for value in row[1:]] for row in matrix[1:]] == stats["eval_confusion_matrix"]
  figures = _read_csv(os.path.join(report_dir, eval_report.PER_CLASS_CSV))
  assert figures[0] == list(eval_report.PER_CLASS_FIELDS)
  assert [{"class": row[0], "precision": float(row[1]), "recall": float(row[2]),
           "f1": float(row[3]), "support": int(row[4])} for row in figures[1:]] == stats[
               "eval_per_class"]
  png_path = os.path.join(report_dir, eval_report.PICTURE)
  with Image.open(png_path) as picture:
    assert picture.format == "PNG" and picture.mode == "RGB"
    assert picture.width >= 200 and picture.height >= 200
    assert picture.text["Title"] == (
        f"Confusion matrix at step 8: top-1 {stats['eval_top_1_accuracy']:.4f} over 20 images, "
        "4 classes")
    assert picture.text["Description"] == "\n".join(",".join(row) for row in matrix) + "\n"
  scalars = _events(model_dir, "eval", "scalars")
  for row in stats["eval_per_class"]:
    for name in ("precision", "recall", "f1"):
      (steps, values) = zip(*scalars[f"{name}/{row['class']}"])
      assert steps == (4, 8) and values[-1] == pytest.approx(row[name], abs=1e-7)
  assert {"loss", "top_1_accuracy", "top_5_accuracy"} <= set(scalars)
  images = _events(model_dir, "eval", "images")
  assert [step for step, _ in images["confusion_matrix"]] == [4, 8]
  width, height, png = images["confusion_matrix"][-1][1]
  with open(png_path, "rb") as f:
    assert png == f.read()
  with Image.open(io.BytesIO(png)) as image:
    assert (int(width), int(height)) == image.size


def test_more_than_50_classes_draw_the_most_confused_pairs(tmp_path):
  rng = np.random.default_rng(0)
  for num_classes, matrix_drawn in ((50, True), (51, False), (120, False)):
    confusion = rng.poisson(0.4, (num_classes, num_classes)) + np.diag(rng.integers(5, 30, num_classes))
    names = [f"n{index:03d}" for index in range(num_classes)]
    sums = {"loss_sum": 1.0, "top_1_correct": np.trace(confusion),
            "top_k_correct": confusion.sum(), "examples": confusion.sum()}
    metrics = progress.eval_result(sums, confusion, names)
    png = eval_report.picture(7, metrics)
    eval_report.write(str(tmp_path), metrics, png)
    with Image.open(tmp_path / eval_report.PICTURE) as picture:
      title, description = picture.text["Title"], picture.text["Description"]
    assert title.startswith("Confusion matrix at step 7" if matrix_drawn else
                            "Most confused pairs at step 7")
    if matrix_drawn:
      continue
    # The largest off-diagonal counts, ties in row-major order, from NumPy.
    true, predicted = np.nonzero(~np.eye(num_classes, dtype=bool))
    counts = confusion[true, predicted]
    order = np.lexsort((predicted, true, -counts))[:eval_report.PICTURE_PAIRS]
    expected = [["true", "predicted", "count"]] + [
        [names[true[i]], names[predicted[i]], str(counts[i])] for i in order]
    assert list(csv.reader(io.StringIO(description))) == expected
    assert counts[order[0]] > counts[order[-1]]
    # The CSV keeps the whole matrix.
    rows = _read_csv(tmp_path / eval_report.MATRIX_CSV)
    assert np.array_equal(np.array([row[1:] for row in rows[1:]], dtype=int), confusion)


def test_eval_mode_reports_and_mirrored_gives_the_same_confusion_matrix(trained):
  experiment, stats = trained
  model_dir = experiment.train.model_dir
  results = {}
  for strategy in ("off", "mirrored"):
    results[strategy] = run_lib.evaluate_checkpoint(dataclasses.replace(
        experiment, runtime=dataclasses.replace(experiment.runtime, distribution_strategy=strategy)))
    saved = run_state.read_stats(model_dir, run_state.EVAL_STATS_FILE)
    assert saved == results[strategy]
  # Every image once under both: 20 images in global batches of 8 over two replicas.
  assert results["off"]["eval_examples"] == results["mirrored"]["eval_examples"] == 20
  assert results["mirrored"]["eval_confusion_matrix"] == results["off"]["eval_confusion_matrix"] == (
      stats["eval_confusion_matrix"])
  assert results["mirrored"]["eval_per_class"] == results["off"]["eval_per_class"]
  # Sums over other splits of the batches: equal up to float32 rounding (an ulp of this
  # untrained model's loss, about 132, is 1.5e-5).
  assert results["mirrored"]["eval_loss"] == pytest.approx(results["off"]["eval_loss"], rel=1e-6)


# ----------------------------------------------------------------------- continuous eval


def _wait_for(condition, what, timeout_s=180):
  deadline = time.monotonic() + timeout_s
  while not condition():
    if time.monotonic() > deadline:
      raise TimeoutError(f"Waited {timeout_s} s for {what}.")
    time.sleep(0.2)


def _evaluated(model_dir):
  return [entry["step"] for entry in continuous_eval.evaluations(model_dir)]


def test_continuous_eval_takes_each_new_checkpoint_once_and_a_restart_redoes_nothing(
    data, tmp_path):
  model_dir = str(tmp_path / "run")
  # 4 steps in all: the eval job stops once step 4 is evaluated.
  experiment = _experiment(model_dir, data, train_steps=4, steps_per_loop=2, checkpoint_steps=4)
  writer = trainer_lib.Trainer(experiment)
  writer.restore_or_initialize()
  outcome = {}

  def job():
    try:
      outcome["stats"] = continuous_eval.continuous_evaluate(experiment, timeout_s=120)
    except BaseException as error:  # Re-raised in the test's thread.
      outcome["error"] = error

  # The trainer holds the run lock throughout; the eval job must not need it.
  with run_lock.RunLock(model_dir):
    thread = threading.Thread(target=job)
    thread.start()
    manager = tf.train.CheckpointManager(writer.checkpoint, model_dir, max_to_keep=5,
                                         checkpoint_name=trainer_lib.CHECKPOINT_NAME)
    writer.step.assign(2)
    manager.save(checkpoint_number=2)
    _wait_for(lambda: _evaluated(model_dir) == [2] or "error" in outcome, "step 2's evaluation")
    writer.train(evaluate=False)  # Steps 2 to 4, saving ckpt-4.
    thread.join(timeout=180)
  assert not thread.is_alive()
  if "error" in outcome:
    raise outcome["error"]
  stats = outcome["stats"]
  assert stats["evaluated_steps"] == [2, 4] and stats["finished"] and stats["final_step"] == 4
  entries = continuous_eval.evaluations(model_dir)
  assert [(entry["step"], entry["checkpoint"]) for entry in entries] == [(2, "ckpt-2"), (4, "ckpt-4")]
  # Each evaluation is of its own checkpoint: step 4's equals the trained weights'.
  final = writer.evaluate()
  assert entries[1]["eval_loss"] == pytest.approx(final["loss"], abs=1e-5)
  assert entries[0]["eval_loss"] != pytest.approx(final["loss"], abs=1e-3)
  saved = run_state.read_stats(model_dir, run_state.EVAL_STATS_FILE)
  assert saved["step"] == 4 and saved["eval_confusion_matrix"] == final["confusion_matrix"]
  # A restart, through the command line, finds the final step done and evaluates nothing.
  before = os.path.getmtime(os.path.join(model_dir, run_state.CONTINUOUS_EVAL_FILE))
  with flagsaver.flagsaver():
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["official_resnet.main", "--mode=continuous_eval", "--source=folder",
                 f"--data_dir={data}", "--num_classes=4", "--image_size=32", "--normalization=unit",
                 "--architecture=resnet18", "--base_width=8", f"--batch_size={BATCH}",
                 "--train_steps=4", f"--model_dir={model_dir}", "--distribution_strategy=off",
                 "--num_gpus=0", "--seed=1"])
    restarted = main.run()
  assert restarted == {"final_step": 4, "evaluated_steps": [], "finished": True}
  assert _evaluated(model_dir) == [2, 4]
  assert os.path.getmtime(os.path.join(model_dir, run_state.CONTINUOUS_EVAL_FILE)) == before


def test_continuous_eval_stops_after_its_timeout_skips_deleted_checkpoints_and_refuses_hosts(
    data, tmp_path, monkeypatch, caplog):
  experiment = _experiment(str(tmp_path), data, train_steps=4)
  began = time.monotonic()
  stats = continuous_eval.continuous_evaluate(experiment, timeout_s=1)
  assert stats == {"final_step": 4, "evaluated_steps": [], "finished": False}
  assert time.monotonic() - began < 60
  assert not os.path.exists(tmp_path / run_state.CONTINUOUS_EVAL_FILE)
  # Training deleted the checkpoint (--keep_checkpoints) between its listing and its reading.
  deleted = str(tmp_path / "ckpt-2")
  monkeypatch.setattr(tf.train, "checkpoints_iterator", lambda *args, **kwargs: iter([deleted]))
  stats = continuous_eval.continuous_evaluate(experiment)
  assert stats == {"final_step": 4, "evaluated_steps": [], "finished": False}
  assert f"{deleted} was deleted before it could be read" in caplog.text
  several = dataclasses.replace(experiment, runtime=config_lib.RuntimeConfig(
      distribution_strategy="multi_worker_mirrored", num_gpus=0))
  with pytest.raises(ValueError, match=r"continuous_eval' runs on one host.*Received: "
                                       r"'multi_worker_mirrored'"):
    continuous_eval.continuous_evaluate(several)

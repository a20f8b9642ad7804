"""benchmarks/short_runs.py's logic on tiny sizes: its images, log marks and summary (not
its timings)."""
import json
import os

import numpy as np
import pytest

from benchmarks import short_runs


def test_image_folder_holds_each_class_and_reads_back_labelled(tmp_path):
  short_runs.write_image_folder(str(tmp_path), classes=3, per_class=4, size=32, seed=0)
  assert sorted(os.listdir(tmp_path)) == ["class_00", "class_01", "class_02"]
  images, labels = short_runs._load_folder(str(tmp_path))  # pylint: disable=protected-access
  assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8
  np.testing.assert_array_equal(labels, [0] * 4 + [1] * 4 + [2] * 4)
  # Classes differ in their gradient's direction: even ones run left to right.
  first, second = images[0].astype(float), images[4].astype(float)
  assert first[:, -1].mean() - first[:, 0].mean() > 50
  assert second[-1].mean() - second[0].mean() > 50
  # A class looks the same in both splits: its colour does not depend on the seed.
  other_seed = tmp_path / "other"
  short_runs.write_image_folder(str(other_seed), classes=3, per_class=4, size=32, seed=1)
  again, _ = short_runs._load_folder(str(other_seed))  # pylint: disable=protected-access
  np.testing.assert_allclose(again[4:8].mean(axis=(0, 1, 2)), images[4:8].mean(axis=(0, 1, 2)),
                             atol=8)


def test_first_step_patterns_match_each_trainers_first_step_line_only():
  ours = ("I1206 19:41:14.777152 140685988993920 progress.py:134] step 1/16: loss 1.5119, "
          "top-1 0.2500")
  assert short_runs.OURS_FIRST_STEP.search(ours)
  assert not short_runs.OURS_FIRST_STEP.search(ours.replace("step 1/16", "step 12/16"))
  official = "I1206 20:01:02.1 1 controller.py:40] train | step:      1 | steps/sec:    0.1"
  assert short_runs.OFFICIAL_FIRST_STEP.search(official)
  assert not short_runs.OFFICIAL_FIRST_STEP.search(official.replace("step:      1",
                                                                    "step:     10"))
  assert not short_runs.OFFICIAL_FIRST_STEP.search(
      "train | step:      0 | training until step 16...")


def test_breakdown_splits_a_run_at_its_log_marks():
  marks = [(5.0, "training"), (12.0, "saved"), (14.5, "evaluated"), (16.0, "saved"),
           (17.0, "evaluated"), (17.2, "stats")]
  parts = short_runs.breakdown(marks, total=18.0)
  assert parts == {"startup": 5.0, "first_epoch": 7.0, "evaluations": 3.5, "exit": 0.8,
                   "later_epochs": 1.7}
  assert short_runs.breakdown(marks[:3], total=18.0) is None


def _rounds(ours_seconds, official_seconds):
  return [{"first_step": {"ours": {"seconds": mine}, "official": {"seconds": theirs},
                          "ours_smoke_recipe": {"seconds": mine / 2}}}
          for mine, theirs in zip(ours_seconds, official_seconds)]


def test_summary_divides_the_medians_of_the_rounds():
  summary = short_runs.summarize(_rounds([9.0, 30.0, 10.0], [8.0, 7.0, 20.0]))
  entry = summary["first_step"]
  assert (entry["ours"], entry["official"], entry["ours_smoke_recipe"]) == (10.0, 8.0, 5.0)
  assert entry["ratio"] == pytest.approx(1.25)
  assert entry["target"] == "<= 1.0"
  assert "ours/theirs 1.250 (target <= 1.0)" in short_runs.format_summary(summary)
  failed = _rounds([9.0], [8.0])
  failed[0]["first_step"]["official"] = {"seconds": None, "status": "failed"}
  assert short_runs.summarize(failed)["first_step"]["ratio"] is None


@pytest.mark.slow
def test_quick_small_images_runs_both_sides_and_writes_the_report(tmp_path, capsys):
  output = tmp_path / "report.json"
  short_runs.main(["--quick", "--items=small_images", f"--work_dir={tmp_path}",
                   f"--output={output}"])
  report = json.loads(output.read_text())
  record = report["rounds"][0]["small_images"]
  config = short_runs.QUICK_CONFIG
  trained = config.classes * config.train_per_class // config.batch_size * config.batch_size
  assert record["ours"]["images"] == record["keras_fit"]["images"] == trained * config.epochs
  assert set(record["ours"]["parts"]) == {"startup", "first_epoch", "evaluations", "exit",
                                          "later_epochs"}
  assert 0 < record["ours"]["outside_train_steps"] < 1
  assert "small_images (images_per_second)" in capsys.readouterr().out

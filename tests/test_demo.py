"""./run.sh demo's driver at test size: pre-train, frozen-backbone transfer, export, predict."""
import logging
import os
import re

from absl.testing import flagsaver
import pytest
import tensorflow as tf

from official_resnet.demo import stages
from official_resnet import export
from official_resnet import run_state


@pytest.mark.slow
def test_quick_demo_transfers_above_chance_and_a_rerun_reuses_its_runs(tmp_path, caplog):
  caplog.set_level(logging.INFO, logger="absl")
  # INFO, as stages.main sets it (a SavedModel's save puts absl's global verbosity back).
  with flagsaver.flagsaver(verbosity=0):
    summary = stages.run_demo(str(tmp_path), stages.QUICK_CONFIG)
  # Each stage says what it does, and its progress lines (INFO: logged however the output
  # is piped) carry its name.
  lines = [record.getMessage() for record in caplog.records]
  stage_lines = [line for line in lines if line.startswith("Demo stage ")]
  assert [line[:len("Demo stage 1/5:")] for line in stage_lines] == [
      f"Demo stage {number}/5:" for number in range(1, 6)]
  assert stage_lines[1].startswith("Demo stage 2/5: pre-training on 6 shape classes")
  for label, total in (("demo 2/5 pre-training", 640), ("demo 3/5 transfer", 80),
                       ("demo 4/5 from scratch", 80)):
    steps = [int(match[1]) for line in lines
             if (match := re.match(rf"\[{label}\] step (\d+)/{total}: loss ", line))]
    assert steps == list(range(20, total + 1, 20)), label
    assert any(line.startswith(f"[{label}] epoch ") and " done at step " in line
               for line in lines), label
  transfer, scratch, predict = summary["transfer"], summary["scratch"], summary["predict"]
  # Two balanced classes: chance is 0.5.
  assert transfer["eval_top_1_accuracy"] >= 0.75 and transfer["eval_examples"] >= 20
  assert transfer["eval_top_1_accuracy"] > scratch["eval_top_1_accuracy"]
  assert transfer["steps"] == scratch["steps"] == stages.QUICK_CONFIG.transfer_steps
  # JPEGs never trained on, classified through the SavedModel by another process.
  assert predict["images"] == 2 * stages.QUICK_CONFIG.heldout_images_per_class == 20
  assert predict["accuracy"] >= 0.7
  assert tf.saved_model.contains_saved_model(summary["export"])
  run_dir = os.path.dirname(transfer["model_dir"])
  assert run_state.read_stats(run_dir, name="summary.json")["export"] == summary["export"]
  text = stages.format_summary(summary)
  assert f"eval top-1 {transfer['eval_top_1_accuracy']:.3f}" in text and summary["export"] in text

  again = stages.run_demo(str(tmp_path), stages.QUICK_CONFIG)
  assert [again[key]["reused"] for key in ("pretrain", "transfer", "scratch")] == [True] * 3
  assert again["transfer"]["eval_top_1_accuracy"] == transfer["eval_top_1_accuracy"]
  assert export.version_numbers(os.path.dirname(summary["export"])) == [1]
  assert "reused from" in stages.format_summary(again)

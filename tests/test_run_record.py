"""Nothing of a run is lost or silently wrong: reruns of a finished run, a resume after Ctrl-C,
the data source a --data_dir implies, and refused runs that leave no folder behind."""
import json
import logging
import re
import signal

from absl.testing import flagsaver
import pytest

from input_pipeline import sources
from official_resnet import main
from official_resnet import run_state
from official_resnet import trainer as trainer_lib
import cli_fixtures
import image_fixtures
import trainer_fixtures as fixtures

RECORD_FILES = (run_state.CONFIG_FILE, run_state.STATS_FILE, run_state.HISTORY_FILE)


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
  # 8 training images (2 per class, 2 steps of 4 an epoch), 12 evaluation images.
  return fixtures.write_colour_folder(str(tmp_path_factory.mktemp("colours")), 2, 3)


def _flags(data_dir, model_dir, **overrides):
  """A tiny ResNet-18 on `data_dir`, given as a user would: without --source."""
  values = dict(data_dir=data_dir, num_classes=4, image_size=32, architecture="resnet18",
                base_width=8, batch_size=4, train_epochs=2, epochs_between_evals=1,
                lr_schedule="constant", base_learning_rate=0.05, lr_base_batch_size=0,
                distribution_strategy="off", num_gpus=0, seed=3, model_dir=model_dir)
  values.update(overrides)
  return [f"--{name}={value}" for name, value in values.items()]


def _run(caplog, args):
  """The command's stats, its INFO logs in caplog."""
  caplog.clear()
  with flagsaver.flagsaver():
    cli_fixtures.parse(*args)
    caplog.set_level(logging.INFO, logger="absl")
    return main.run()


def _refused(caplog, args):
  """The one error line of a command that exits 1."""
  caplog.clear()
  with flagsaver.flagsaver():
    cli_fixtures.parse(*args)
    with pytest.raises(SystemExit) as exit_info:
      main.main(["official_resnet.main"])
  assert exit_info.value.code == 1
  [error] = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
  return error


def _record(model_dir):
  return {name: (model_dir / name).read_bytes() for name in RECORD_FILES}


def _eval_steps(history):
  return [entry["step"] for entry in history if "eval_top_1_accuracy" in entry]


@pytest.mark.slow
def test_a_finished_run_is_kept_whole_by_reruns_and_extended_only_on_request(colours, tmp_path,
                                                                              caplog):
  model_dir = tmp_path / "run"
  command = _flags(colours, str(model_dir))
  trained = _run(caplog, command)
  # The folder's own images, not 1,024 synthetic ones.
  assert f"--data_dir={colours} holds images: --source=folder." in caplog.text
  assert (trained["step"], trained["eval_examples"]) == (4, 12)
  saved = run_state.read_run_config(str(model_dir))
  assert saved.data.source == "folder" and saved.class_names == ("class0", "class1", "class2", "class3")
  record = _record(model_dir)
  assert _eval_steps(json.loads(record[run_state.HISTORY_FILE])) == [2, 4]

  # The same command again trains nothing and writes nothing.
  assert _run(caplog, command) == run_state.read_stats(str(model_dir))
  assert "Step 4 already reaches the 4 steps to train: nothing trained, nothing written" in caplog.text
  assert _record(model_dir) == record

  # A changed flag that defines the run, or a shorter run, is refused; nothing changes.
  error = _refused(caplog, _flags(colours, str(model_dir), batch_size=8))
  assert "--batch_size asks for batch_size=8, the run has 4" in error
  assert "The run has trained all its 4 steps: a larger --train_epochs" in error
  error = _refused(caplog, _flags(colours, str(model_dir), train_epochs=1))
  assert "a run is made longer, never shorter" in error and "Received: 2 steps (1 epochs)" in error
  assert _record(model_dir) == record

  # A larger --train_epochs extends it, said in one line; the history grows.
  extended = _run(caplog, _flags(colours, str(model_dir), train_epochs=3))
  assert ("Extending the finished run from step 4 (2 epochs) to 6 (3 epochs), the schedule now "
          "spanning the new length (phase 'train' steps 0-6: constant, peak learning rate 0.05): "
          "training goes on at step 4 with learning rate 0.05.") in caplog.text
  assert (extended["start_step"], extended["step"]) == (4, 6)
  history = run_state.read_stats(str(model_dir))["history"]
  assert _eval_steps(history) == [2, 4, 6]
  assert history[:2] == json.loads(record[run_state.HISTORY_FILE])
  assert run_state.read_run_config(str(model_dir)).train.train_epochs == 3


@pytest.mark.slow
def test_a_finished_run_in_phases_is_extended_by_its_phases(colours, tmp_path, caplog):
  model_dir = tmp_path / "run"
  head = [*_flags(colours, str(model_dir), train_epochs=1), "--trainable=head"]
  assert _run(caplog, head)["step"] == 2
  record = _record(model_dir)
  # The run's length alone, as a user extending it would type.
  error = _refused(caplog, [f"--model_dir={model_dir}", "--train_epochs=2"])
  assert "holds a run in phases ['head'], whose lengths --train_epochs and --train_steps alone " \
         "do not set" in error
  assert _record(model_dir) == record
  extended = _run(caplog, [*_flags(colours, str(model_dir), train_epochs=2), "--trainable=head"])
  assert (extended["start_step"], extended["step"]) == (2, 4)
  assert "phase 'head' steps 0-4: constant" in caplog.text


@pytest.mark.slow  # 16 steps and 8 evaluations, in two runs
def test_ctrl_c_then_resume_keeps_every_evaluation(colours, tmp_path, caplog):
  # In-process: the trainer's handler is the command's (test_preemption.py: exact resume).
  model_dir = tmp_path / "run"
  # 16 steps, an evaluation every 2.
  command = _flags(colours, str(model_dir), train_epochs=8, steps_per_loop=1, log_steps=1)
  with flagsaver.flagsaver(), cli_fixtures.signal_self_at_step(5, signum=signal.SIGINT):
    cli_fixtures.parse(*command)
    caplog.set_level(logging.INFO, logger="absl")
    with pytest.raises(SystemExit) as exit_info:
      main.main(["official_resnet.main"])
  assert exit_info.value.code == trainer_lib.EXIT_PREEMPTED
  assert "Stopped by SIGINT at step 5 of 16 with a checkpoint" in caplog.text
  first_evaluations = [int(step) for step in re.findall(r"eval at step (\d+): loss", caplog.text)]
  assert first_evaluations == [2, 4]
  assert not (model_dir / run_state.STATS_FILE).exists()
  assert _eval_steps(run_state.read_history(str(model_dir))) == first_evaluations

  resumed = _run(caplog, command)
  assert resumed["step"] == 16
  resumed_evaluations = [int(step) for step in re.findall(r"eval at step (\d+): loss", caplog.text)]
  # Every evaluation either run made, in order, with its metrics.
  history = run_state.read_stats(str(model_dir))["history"]
  assert _eval_steps(history) == first_evaluations + resumed_evaluations
  assert resumed_evaluations[-1] == 16 and resumed["history"] == history


def test_refused_runs_leave_no_folder(colours, tmp_path, caplog):
  runs = tmp_path / "runs"
  model_dir = str(runs / "b")
  nowhere = str(tmp_path / "nowhere")
  error = _refused(caplog, _flags(nowhere, model_dir))
  assert error.startswith("data_dir must be an existing folder (of images, TFRecord shards or "
                          f"TFDS data sets). Received: '{nowhere}'")
  # Refused by the data pipeline, after the model_dir lock was taken.
  error = _refused(caplog, [*_flags(nowhere, model_dir), "--source=folder"])
  assert error.startswith(f"data_dir must be an existing folder of images. Received: '{nowhere}'")
  error = _refused(caplog, _flags(colours, model_dir, num_classes=3))
  assert error.startswith("num_classes must equal the 4 classes of the training data. Received: 3")
  assert not runs.exists()


def test_the_source_follows_what_data_dir_holds(tmp_path):
  image_fixtures.make_image_folder(str(tmp_path / "subfolders"))
  image_fixtures.make_image_folder(str(tmp_path / "kaggle"), layout="flat")
  image_fixtures.make_record_shards(str(tmp_path / "records"), 4, 2)
  (tmp_path / "tfds" / "tiny_pets" / "1.0.0").mkdir(parents=True)
  (tmp_path / "tfds" / "tiny_pets" / "1.0.0" / "dataset_info.json").write_text("{}")
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "notes.txt").write_text("no images")
  assert sources.infer_source(str(tmp_path / "subfolders")) == ("folder", None)
  assert sources.infer_source(str(tmp_path / "kaggle")) == ("folder", None)
  assert sources.infer_source(str(tmp_path / "records")) == ("imagenet", None)
  assert sources.infer_source(str(tmp_path / "tfds")) == ("tfds", "tiny_pets")
  with pytest.raises(ValueError, match=r"data_dir must hold images \(one subfolder per class, "
                                       r"or <class>\.<id>\.jpg names\), TFRecord shards"):
    sources.infer_source(str(tmp_path / "empty"))


def test_without_data_dir_the_images_are_synthetic_and_it_says_so(colours, tmp_path, caplog):
  with flagsaver.flagsaver():
    cli_fixtures.parse(f"--model_dir={tmp_path}", "--num_classes=4")
    caplog.set_level(logging.INFO, logger="absl")
    experiment = main.experiment_from_flags()
    assert experiment.data.source == "synthetic"
    assert "No --data_dir: synthetic images (--source=synthetic)." in caplog.text
    # A --data_dir given later to that run does not pass for its synthetic images.
    run_state.write_run_config(str(tmp_path), experiment.model, experiment.data,
                               ("0", "1", "2", "3"), experiment.train, experiment.runtime)
    cli_fixtures.parse(f"--model_dir={tmp_path}", f"--data_dir={colours}")
    with pytest.raises(ValueError, match=r"--data_dir asks for source='folder', the run has "
                                         r"'synthetic'"):
      main.experiment_from_flags()

"""What a new user meets first: CPU defaults, a schedule that fits, eval from the run's config, clear logs."""
import logging
import os

from absl import app
from absl import flags
from absl.testing import flagsaver
import pytest

from official_resnet import distribute
from official_resnet import main
from official_resnet import run_state
import image_fixtures
import trainer_fixtures as fixtures
from cli_fixtures import colour_flags, parse

FLAGS = flags.FLAGS


def parse_logging_info(caplog, *args):
  """parse(), then INFO logs into caplog (parsing sets absl's level from --verbosity)."""
  parse(*args)
  caplog.set_level(logging.INFO, logger="absl")


@pytest.mark.slow
def test_a_folder_on_the_cpu_with_defaults_then_eval_with_model_dir_alone(tmp_path, caplog):
  data = image_fixtures.write_digit_folder(str(tmp_path / "digits"), per_class=40)
  model_dir = str(tmp_path / "run")
  # The command a new user types first; only size and length are added, no schedule or device.
  command = ["--source=folder", f"--data_dir={data}", "--num_classes=10", "--image_size=32",
             "--architecture=resnet18", f"--model_dir={model_dir}",
             "--train_epochs=20", "--base_width=16", "--batch_size=32", "--seed=1"]
  with flagsaver.flagsaver():
    parse_logging_info(caplog, *command)
    trained = main.run()
    assert "No GPU visible: running on the CPU (--distribution_strategy=off)." in caplog.text
    # Ten classes: chance is 0.1.
    assert trained["eval_top_1_accuracy"] >= 0.4, trained
    assert trained["skipped_images"] == 0 and trained["skipped_image_files"] == []
    caplog.clear()
    parse_logging_info(caplog, "--mode=eval", f"--model_dir={model_dir}")
    evaluated = main.run()
    assert "its training recipe included" in caplog.text
    # The same checkpoint on the same held-out images.
    assert evaluated["step"] == trained["step"] == trained["total_steps"]
    assert evaluated["eval_examples"] == trained["eval_examples"]
    assert evaluated["eval_top_1_accuracy"] == trained["eval_top_1_accuracy"]
    assert evaluated["eval_loss"] == pytest.approx(trained["eval_loss"], abs=1e-5)
    # Where and how to evaluate may change; what the model is may not.
    parse("--mode=eval", f"--model_dir={model_dir}", "--batch_size=7")
    assert main.run()["eval_top_1_accuracy"] == trained["eval_top_1_accuracy"]
    parse("--mode=eval", f"--model_dir={model_dir}", "--architecture=resnet50", "--num_classes=10",
          "--image_size=64")
    with pytest.raises(app.UsageError) as refused:
      main.run()
  message = str(refused.value)
  assert "--architecture asks for architecture='resnet50', the run has 'resnet18'" in message
  assert "--image_size asks for image_size=64, the run has 32" in message
  assert "num_classes" not in message  # Given, but the run's value.


def test_devices_default_to_what_the_machine_has(caplog):
  caplog.set_level(logging.INFO, logger="absl")
  resolve = distribute.resolve_devices
  assert resolve(None, None, visible_gpus=0) == ("off", 0)
  assert "No GPU visible: running on the CPU" in caplog.text
  assert resolve(None, None, visible_gpus=4) == ("mirrored", 4)
  assert resolve(None, -1, visible_gpus=2) == ("mirrored", 2)
  assert resolve(None, 0, visible_gpus=2) == ("off", 0)
  assert "--num_gpus=0: running on the CPU" in caplog.text
  # Given flags win, and are checked where the strategy is built.
  assert resolve("one_device", None, visible_gpus=3) == ("one_device", 1)
  assert resolve("mirrored", None, visible_gpus=0) == ("mirrored", 0)
  assert resolve("mirrored", 2, visible_gpus=0) == ("mirrored", 2)
  assert resolve("multi_worker_mirrored", -1, visible_gpus=8) == ("multi_worker_mirrored", 8)
  with pytest.raises(ValueError, match=r"num_gpus must be -1 \(all visible GPUs\) or >= 0"):
    resolve(None, -3, visible_gpus=0)


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
  """The colour folder with one file in each split that is not an image."""
  root = fixtures.write_colour_folder(str(tmp_path_factory.mktemp("colours")), 3, 2)
  for split in ("train", "validation"):
    with open(os.path.join(root, split, "class0", "broken.png"), "w") as broken:
      broken.write("not an image")
  return root


@pytest.mark.slow
def test_phase_logs_stats_and_loader_say_what_happened(colours, tmp_path, caplog):
  source = str(tmp_path / "source")
  with flagsaver.flagsaver():
    parse_logging_info(caplog, *colour_flags(colours, source, architecture="resnet18",
                                             train_steps=3, mode="train"))
    stats = main.run()
  # The unreadable training image, once per pass over it (3 steps of 8 = 2 passes of 12).
  broken = os.path.join(colours, "train", "class0", "broken.png")
  assert stats["skipped_image_files"] == [broken] and stats["skipped_images"] >= 1
  assert run_state.read_stats(source)["skipped_images"] == stats["skipped_images"]

  caplog.clear()
  with flagsaver.flagsaver():
    parse_logging_info(
        caplog, *colour_flags(colours, str(tmp_path / "phases"), architecture="resnet18",
                              mode="train", log_steps=100, batch_size=4),
        f"--init_checkpoint={source}", "--phases=head,all", "--phase_steps=2,2",
        "--phase_learning_rates=0.01,0.001")
    main.run()
  # The backbone came from the checkpoint; the head kept its fresh initialization.
  assert "head layers ['predictions'] keep their fresh initialization" in caplog.text
  # Each phase's last log line shows the rate that phase trained with.
  assert "step 2/4: loss" in caplog.text and "step 4/4: loss" in caplog.text
  phase_lines = [line for line in caplog.text.splitlines() if "step 2/4" in line or "step 4/4" in line]
  assert ", lr 0.01," in phase_lines[0] and ", lr 0.001," in phase_lines[1]

  caplog.clear()
  with flagsaver.flagsaver():
    parse_logging_info(caplog, *colour_flags(colours, str(tmp_path / "all"), mode="train",
                                             architecture="resnet18", train_steps=1),
                       f"--init_checkpoint={source}", "--init_checkpoint_scope=all")
    main.run()
  assert "the head was loaded too" in caplog.text


def test_given_schedule_epochs_outside_the_run_are_warned_about(colours, tmp_path, caplog):
  with flagsaver.flagsaver():
    parse_logging_info(caplog, *colour_flags(colours, str(tmp_path / "run"), mode="train",
                                             architecture="resnet18", batch_size=4,
                                             lr_schedule="piecewise", lr_base_batch_size=256),
                       "--train_epochs=2", "--warmup_epochs=5", "--lr_decay_epochs=1,3")
    main.run()
  [warning] = [line for line in caplog.text.splitlines() if "Phase 'train' lasts" in line]
  assert "Phase 'train' lasts 2 epochs" in warning
  assert ("the warm-up (5 epochs, " in warning and
          "steps) does not end before it, so the rate never reaches its peak; the decays at "
          "epochs 3 come after it." in warning)


def test_predict_names_unreadable_files_and_exits_1(colours, tmp_path, capsys, caplog):
  model_dir = str(tmp_path / "run")
  with flagsaver.flagsaver():
    parse(*colour_flags(colours, model_dir, architecture="resnet18", train_steps=1, mode="train"))
    main.run()
    folder = os.path.join(colours, "validation", "class0")
    parse_logging_info(caplog, "--mode=predict", f"--model_dir={model_dir}", f"--images={folder}",
                       "--top_k=1")
    with pytest.raises(SystemExit) as exit_status:
      main.main(["official_resnet.main"])
  assert exit_status.value.code == 1
  rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
  assert [row[0] for row in rows] == [os.path.join(folder, name)
                                      for name in ("0.png", "1.png", "broken.png")]
  assert rows[0][1] == rows[1][1] == "1"
  assert rows[2][1:4] == ["-", "-", "error:"]
  assert f"1 of 3 files could not be classified: {os.path.join(folder, 'broken.png')}" in caplog.text


def test_num_classes_follows_the_class_folders_unless_given(tmp_path, caplog):
  """Keras' image_dataset_from_directory habit: 10 digit folders, no --num_classes."""
  data = image_fixtures.write_digit_folder(str(tmp_path / "digits"), per_class=4, size=32)
  model_dir = str(tmp_path / "run")
  command = [f"--data_dir={data}", "--architecture=resnet18", "--image_size=32",
             "--base_width=8", "--batch_size=8", f"--model_dir={model_dir}", "--train_steps=1",
             "--mode=train", "--distribution_strategy=off", "--num_gpus=0"]
  with flagsaver.flagsaver():
    parse_logging_info(caplog, *command)
    stats = main.run()
  assert (f"--num_classes=10: the classes of --data_dir={data} (0, 1, 2, 3, 4, ...)."
          in caplog.text)
  assert stats["step"] == 1
  assert run_state.read_run_config(model_dir).model.num_classes == 10
  # A given value is the user's (and checked against the data where the run starts).
  with flagsaver.flagsaver():
    parse(*command, f"--model_dir={tmp_path / 'other'}", "--num_classes=5")
    with pytest.raises(ValueError, match=r"num_classes must equal the 10 classes of the training "
                       r"data\. Received: 5"):
      main.run()

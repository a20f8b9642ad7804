"""The command line in-process: flagfiles, flag errors, the flag table, the smoke config.

As processes: kill -9 and resume (test_preemption.py), two workers (test_multi_worker.py)."""
import dataclasses
import json
import logging
import os

from absl import app
from absl import flags
from absl.testing import flagsaver
import pytest
import tensorflow as tf

from official_resnet import config as config_lib
from official_resnet import main
from official_resnet import run_state
from official_resnet import trainer as trainer_lib
from official_resnet.cli import flag_table
from official_resnet.cli import table
from cli_fixtures import FLAGS, REPO, SMOKE, parse

@pytest.mark.parametrize("name,strategy,dtype,batch_size,peak_learning_rate", [
    ("imagenet_resnet50_gpu.cfg", "mirrored", "fp16", 1024, 0.4),
    ("imagenet_resnet50_tpu.cfg", "tpu", "bf16", 1024, 0.4),
    ("imagenet_resnet50_multiworker.cfg", "multi_worker_mirrored", "fp16", 4096, 1.6),
])
def test_imagenet_configs_describe_the_official_recipe(name, strategy, dtype, batch_size,
                                                        peak_learning_rate):
  with flagsaver.flagsaver():
    parse(f"--flagfile={os.path.join(REPO, 'configs', name)}", "--data_dir=/data/imagenet")
    experiment = main.experiment_from_flags()
  assert experiment.runtime.distribution_strategy == strategy
  assert experiment.model.dtype_policy == config_lib.DTYPE_POLICIES[dtype]
  assert (experiment.model.architecture, experiment.model.variant) == ("resnet50", "v1.5")
  assert (experiment.data.source, experiment.data.batch_size) == ("imagenet", batch_size)
  train = experiment.train
  assert (train.train_epochs, train.schedule.decay_epochs, train.schedule.warmup_epochs) == (
      90, (30, 60, 80), 5)
  assert train.schedule.peak_learning_rate(batch_size) == pytest.approx(peak_learning_rate)
  assert experiment.model.weight_decay == 1e-4 and train.optimizer.momentum == 0.9


@pytest.mark.parametrize("flag,value,allowed", [
    ("mode", "export_all", "<train_and_eval|train|eval|continuous_eval|export|predict>"),
    ("distribution_strategy", "horovod", "<off|one_device|mirrored|multi_worker_mirrored|tpu>"),
    ("optimizer", "adagrad", "<sgd|adam|adamw|rmsprop|lamb|lars>"),
    ("lr_schedule", "linear", "<piecewise|cosine|constant|step|polynomial|exponential>"),
    ("dtype", "fp8", "<fp32|fp16|bf16>"),
    ("training_loop", "estimator", "<custom|fit>"),
    ("architecture", "resnet200", "<resnet18|resnet34|"),
])
def test_bad_flag_values_name_the_flag_and_its_values(flag, value, allowed):
  with flagsaver.flagsaver(), pytest.raises(flags.IllegalFlagValueError) as error:
    parse(f"--{flag}={value}")
  assert f"--{flag}={value}" in str(error.value) and allowed in str(error.value)


@pytest.mark.parametrize("args,message", [
    (["--training_loop=fit", "--distribution_strategy=multi_worker_mirrored"],
     r"training_loop='fit' works with distribution_strategy in \('off', 'one_device', 'mirrored'\)"),
    (["--distribution_strategy=mirrored", "--all_reduce_alg=ring"],
     r"all_reduce_alg \(with mirrored\) must be one of \('nccl', 'hierarchical_copy', "
     r"'reduction_to_one_device'\). Received: 'ring'"),
    (["--loss_scale=huge"], r"--loss_scale must be 'dynamic' or a positive number. Received: 'huge'"),
    (["--lr_decay_epochs=30,sixty"], r"--lr_decay_epochs must be comma-separated numbers"),
    (["--head_hidden_units=4096,x"], r"--head_hidden_units must be comma-separated integers"),
    (["--num_gpus=2", "--distribution_strategy=one_device"], r"uses at most one GPU"),
    (["--worker_hosts=a:1,b:2", "--task_index=5"], r"task_index must be in \[0, 2\)"),
])
def test_bad_flag_combinations_name_the_flags(args, message):
  with flagsaver.flagsaver():
    parse(*args)
    with pytest.raises(app.UsageError, match=message):
      main.run()


def test_batch_not_divisible_by_replicas_is_refused(tmp_path):
  with flagsaver.flagsaver():
    parse(f"--flagfile={SMOKE}", f"--model_dir={tmp_path}", "--distribution_strategy=mirrored",
          "--batch_size=31")
    with pytest.raises(ValueError, match=r"batch_size \(the global batch\) must be divisible by the "
                                         r"2 replicas in sync. Received: batch_size=31"):
      main.run()
  assert not os.listdir(tmp_path)


def test_normalize_in_model_hands_the_normalization_to_the_model(tmp_path):
  with flagsaver.flagsaver():
    parse(f"--flagfile={SMOKE}", f"--model_dir={tmp_path}", "--normalization=torch")
    pipeline_normalizes = main.experiment_from_flags()
    parse(f"--flagfile={SMOKE}", f"--model_dir={tmp_path}", "--normalization=torch",
          "--normalize_in_model")
    model_normalizes = main.experiment_from_flags()
  assert (pipeline_normalizes.model.input_normalization, pipeline_normalizes.data.output_dtype,
          trainer_lib.normalizes_on_device(pipeline_normalizes)) == (None, "float32", True)
  assert (model_normalizes.model.input_normalization, model_normalizes.data.normalization,
          model_normalizes.data.output_dtype,
          trainer_lib.normalizes_on_device(model_normalizes)) == ("torch", "torch", "uint8", False)


def test_each_setting_comes_from_a_flag_or_from_the_command_alone():
  """A run's config.json completes a command only where FLAG_FIELDS knows the flag of a field;
  the export settings come from each command's flags."""
  settable = {field for fields in flag_table.FLAG_FIELDS.values() for field in fields}
  experiment = config_lib.ExperimentConfig()
  every_field = {f"{section.name}.{field.name}" for section in dataclasses.fields(experiment)
                 for field in dataclasses.fields(getattr(experiment, section.name))}
  # A new config field needs a flag row that sets it, or its name in COMMAND_FIELDS.
  assert every_field - settable - set(flag_table.COMMAND_FIELDS) == set()
  assert settable | set(flag_table.COMMAND_FIELDS) <= every_field


def test_the_flag_table_declares_every_flag_of_ours():
  """No flag is defined beside the table: every flag an official_resnet module defines is a
  row of flag_table.GROUPS (ours or official_flags'), each row defined once."""
  names = [row.name for row in table.rows(flag_table.GROUPS)]
  assert len(names) == len(set(names))
  defined = {flag.name for module, module_flags in FLAGS.flags_by_module_dict().items()
             if module.startswith("official_resnet") for flag in module_flags}
  assert defined == set(names)
  assert flag_table.FLAG_FIELDS["adamw_weight_decay"] == ("train.optimizer",)


def test_helpshort_groups_the_flags_most_used_first(capsys):
  """--helpshort: the usage, then the flags by what they set, the run's first; the official
  names and absl's own flags only in --helpfull."""
  with pytest.raises(SystemExit) as exit_info:
    main.parse_flags(["main.py", "--helpshort"])
  shown = capsys.readouterr().out
  assert exit_info.value.code == 0
  assert shown.startswith("Usage: ./run.sh main")
  titles = [group.title for group in flag_table.GROUPS if group.in_short_help]
  positions = [shown.index(f"\n{title}:\n") for title in titles]
  assert positions == sorted(positions)
  run_group = shown[positions[0]:positions[1]]
  for name in ("mode", "model_dir", "data_dir", "batch_size", "train_epochs"):
    assert f"\n  --{name}: " in run_group
  assert "\n  --[no]random_flip: The random horizontal flip" in shown
  for hidden in ("enable_eager", "resnet_size", "verbosity", "FLAG_FIELDS"):
    assert hidden not in shown
  assert len(shown.splitlines()) < 300


@pytest.mark.slow  # 8 s: the fast tier trains in test_trainer.py
def test_smoke_config_trains_evaluates_and_reports(tmp_path, caplog):
  """configs/smoke.cfg, in-process through main.main (the command as a process: the kill -9
  test of test_preemption.py and the workers of test_multi_worker.py)."""
  with flagsaver.flagsaver():
    parse(f"--flagfile={SMOKE}", f"--model_dir={tmp_path}")
    caplog.set_level(logging.INFO, logger="absl")
    main.main(["official_resnet.main"])
  assert "step 16/16: loss" in caplog.text and "examples/s" in caplog.text
  stats = run_state.read_stats(str(tmp_path))
  assert (stats["step"], stats["epochs"], stats["eval_examples"]) == (16, 4.0, 128)
  # The stats file holds what the run logged (and the history the log leaves out).
  logged = json.loads(caplog.text.split("Run stats: ", 1)[1].splitlines()[0])
  assert logged == {key: value for key, value in stats.items() if key in logged}
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-16")
  run_config = run_state.read_run_config(str(tmp_path))
  assert (run_config.model.architecture, run_config.model.base_width) == ("resnet18", 8)
  assert run_config.data.source == "synthetic"

"""The tensorflow/models ResNet command lines and flags: each runs here, does what it says or says why not."""
import glob
import logging
import os
import textwrap

from absl import app
from absl import flags
from absl.testing import flagsaver
import keras
import numpy as np
import pytest
import tensorflow as tf

from input_pipeline import build_dataset
from input_pipeline.config import DataConfig
from official_resnet import main
from official_resnet import official_flags
from official_resnet import run_lock
from official_resnet import run_state
from official_resnet import trainer as trainer_lib
import trainer_fixtures as fixtures
from cli_fixtures import colour_flags, parse

FLAGS = flags.FLAGS
# Tiny sizes appended to the official lines: they override the official values (later flags win).
# Where a line trains, a ResNet-18 saves the official ResNet-50's compile time.
SMALLER_MODEL = "--architecture=resnet18"
TINY = ("--use_synthetic_data=true", "--num_gpus=-1", "--image_size=32", "--base_width=8",
        "--num_classes=4", "--batch_size=8", "--synthetic_num_examples=16", "--train_steps=2",
        "--steps_per_loop=1", "--log_steps=1")

# The ResNet-50 ImageNet command lines of tensorflow/models' official/legacy/image_classification/
# resnet/README.md, without `python3 resnet_ctl_imagenet_main.py`.
README_DATA_DIR = ["--data_dir=/path/to/imagenet"]
README_TYPICAL = ["--model_dir=/tmp/model_dir/something", "--num_gpus=2", "--batch_size=128",
                  "--train_epochs=90", "--train_steps=10", "--use_synthetic_data=false"]
README_TPU = ["--tpu=$TPU_NAME", "--model_dir=$MODEL_DIR", "--data_dir=$DATA_DIR",
              "--batch_size=1024", "--steps_per_loop=500", "--train_epochs=$TRAIN_EPOCHS",
              "--use_synthetic_data=false", "--dtype=fp32", "--enable_eager=true",
              "--enable_tensorboard=true", "--distribution_strategy=tpu", "--log_steps=50",
              "--single_l2_loss_op=true", "--use_tf_function=true"]
# What the shell would substitute in the TPU line.
SHELL_VALUES = {"$TPU_NAME": "my-tpu", "$MODEL_DIR": "gs://bucket/model",
                "$DATA_DIR": "gs://bucket/data", "$TRAIN_EPOCHS": "1"}
# An official-style flagfile: the settings of resnet_ctl_imagenet_benchmark's 8-GPU fp16 runs.
OFFICIAL_FLAGFILE = textwrap.dedent("""\
    --distribution_strategy=Mirrored
    --num_gpus=8
    --batch_size=2048
    --train_epochs=90
    --epochs_between_evals=10
    --dtype=fp16
    --loss_scale=dynamic
    --fp16_implementation=keras
    --enable_xla=false
    --datasets_num_private_threads=14
    --tf_gpu_thread_mode=gpu_private
    --per_gpu_thread_count=2
    --steps_per_loop=1252
    --log_steps=100
    --enable_eager=true
    --use_tf_function=true
    --use_tf_while_loop=true
    --single_l2_loss_op=true
    --report_accuracy_metrics=false
    --enable_checkpoint_and_export=true
    --enable_tensorboard=true
    --training_dataset_cache=false
    --data_format=channels_last
    """)


@pytest.fixture(autouse=True)
def restore_process_settings():
  """Official flags set environment variables and eager execution for the process."""
  environment = dict(os.environ)
  yield
  tf.config.run_functions_eagerly(False)
  os.environ.clear()
  os.environ.update(environment)


def parse_logging_info(caplog, *args):
  """parse(), then INFO logs into caplog (parsing sets absl's level from --verbosity)."""
  parse(*args)
  caplog.set_level(logging.INFO, logger="absl")


def run_command(args, caplog):
  with flagsaver.flagsaver():
    parse_logging_info(caplog, *args)
    return main.run()


@pytest.mark.slow
def test_the_official_readme_command_lines_run(tmp_path, caplog):
  """The first two lines make the configs they say, on the CPU; the TPU line, given the CPU,
  trains them (the same training as the others': only their model, the official ResNet-50,
  is larger)."""
  for index, line in enumerate((README_DATA_DIR, README_TYPICAL)):
    caplog.clear()
    with flagsaver.flagsaver():
      parse_logging_info(caplog, *line, *TINY, f"--model_dir={tmp_path / f'run{index}'}")
      experiment = main.experiment_from_flags()
    assert (experiment.model.architecture, experiment.train.train_steps) == ("resnet50", 2)
    assert (experiment.data.source, experiment.data.synthetic_num_examples) == ("synthetic", 16)
    # No strategy given: the CPU, which is also what --num_gpus=-1 means without GPUs.
    assert experiment.runtime.distribution_strategy == "off"
    assert "No GPU visible: running on the CPU" in caplog.text

  tpu_line = []
  for arg in README_TPU:
    name, value = arg.split("=", 1)
    tpu_line.append(f"{name}={SHELL_VALUES.get(value, value)}")
  model_dir = tmp_path / "tpu"
  caplog.clear()
  # No TPU here.
  stats = run_command([*tpu_line, *TINY, SMALLER_MODEL, f"--model_dir={model_dir}",
                       "--distribution_strategy=off"], caplog)
  assert stats["step"] == 2 and stats["eval_examples"] == 16
  assert run_state.read_run_config(str(model_dir)).model.architecture == "resnet18"
  assert "No GPU visible" not in caplog.text
  # The TPU line's --enable_tensorboard wrote summaries, and its two inert flags said so.
  assert glob.glob(str(model_dir / "train" / "events.out.tfevents.*"))
  assert "--enable_eager=true would enable eager execution" in caplog.text
  assert "--single_l2_loss_op=true would sum the L2 loss in one op" in caplog.text


@pytest.mark.slow
def test_an_official_style_flagfile_runs(tmp_path, caplog):
  flagfile = tmp_path / "official.cfg"
  flagfile.write_text(OFFICIAL_FLAGFILE)
  model_dir = tmp_path / "model"
  stats = run_command([f"--flagfile={flagfile}", *TINY, SMALLER_MODEL, "--dtype=fp32",
                       f"--model_dir={model_dir}"], caplog)
  assert stats["step"] == 2
  # --enable_checkpoint_and_export: a SavedModel under model_dir/saved_model.
  assert stats["export_path"] == str(model_dir / "saved_model" / "1")
  assert tf.saved_model.contains_saved_model(stats["export_path"])
  # --tf_gpu_thread_mode and --per_gpu_thread_count set the official environment.
  assert (os.environ["TF_GPU_THREAD_MODE"], os.environ["TF_GPU_THREAD_COUNT"]) == ("gpu_private", "2")
  for name in ("fp16_implementation", "use_tf_while_loop", "report_accuracy_metrics"):
    assert f"--{name}=" in caplog.text


def test_every_official_flag_parses_and_each_inert_one_says_why(caplog):
  inert = [f"--{name}={'true' if flag.kind == 'boolean' else 'x'}"
           for name, (flag, _) in official_flags.INERT.items()]
  with flagsaver.flagsaver():
    parse_logging_info(caplog, *inert, "--num_gpus=0")
    main.experiment_from_flags()
  for name, (_, reason) in official_flags.INERT.items():
    value = "true" if official_flags.INERT[name][0].kind == "boolean" else "x"
    assert f"--{name}={value} {reason}; nothing changes." in caplog.text
  # Every official flag of common.define_keras_flags and resnet_ctl_imagenet_main.py is defined.
  official = ("data_dir model_dir clean train_epochs epochs_between_evals batch_size num_gpus "
              "run_eagerly distribution_strategy use_synthetic_data dtype loss_scale "
              "fp16_implementation all_reduce_alg num_packs tf_gpu_thread_mode per_gpu_thread_count "
              "datasets_num_private_threads training_dataset_cache tf_data_experimental_slack "
              "enable_xla data_format benchmark_logger_type benchmark_test_id log_steps "
              "benchmark_log_dir gcp_project bigquery_data_set bigquery_run_table "
              "bigquery_run_status_table bigquery_metric_table worker_hosts task_index enable_eager "
              "skip_eval set_learning_phase_to_train explicit_gpu_placement use_trivial_model "
              "report_accuracy_metrics use_tensor_lr enable_tensorboard profile_steps train_steps "
              "batchnorm_spatial_persistent enable_get_next_as_optional enable_checkpoint_and_export "
              "tpu steps_per_loop use_tf_while_loop use_tf_function single_l2_loss_op model "
              "pretrained_filepath resnet_size resnet_version eval_dataset_cache").split()
  assert [name for name in official if name not in FLAGS] == []


@pytest.mark.parametrize("args,field,value", [
    (["--num_gpus=-1"], "runtime", ("off", 0)),
    (["--distribution_strategy=MIRRORED", "--num_gpus=-1"], "runtime", ("mirrored", 0)),
    (["--distribution_strategy=One_Device"], "runtime", ("one_device", 0)),
    (["--model=resnet50_v1.5", "--variant=v1.5"], "model", ("resnet50", "v1.5")),
    (["--resnet_size=18", "--resnet_version=1"], "model", ("resnet18", "v1.5")),
])
def test_official_names_and_values_mean_what_they_mean_there(args, field, value):
  with flagsaver.flagsaver():
    parse(*args)
    experiment = main.experiment_from_flags()
  if field == "runtime":
    assert (experiment.runtime.distribution_strategy, experiment.runtime.num_gpus) == value
  else:
    assert (experiment.model.architecture, experiment.model.variant) == value


@pytest.mark.parametrize("args,message", [
    (["--model=mobilenet"], r"--model must be one of \('resnet50_v1.5',\)"),
    (["--resnet_version=2"], r"version 2, pre-activation, is not built here"),
    (["--resnet_size=200"], r"--resnet_size must be one of"),
    (["--model=resnet50_v1.5", "--architecture=resnet18"],
     r"--model=resnet50_v1.5 asks for architecture 'resnet50'. Received: --architecture=resnet18"),
    (["--profile_steps=4,2"], r"--profile_steps must be two step numbers first,last"),
    (["--pretrained_filepath=a.h5", "--init_checkpoint=b"], r"Give the weights to start from once"),
    (["--mode=eval", "--skip_eval"], r"--skip_eval leaves --mode=eval nothing to do"),
    (["--mode=export", "--clean"], r"--mode=export would delete the run it acts on"),
    (["--num_gpus=-2"], r"num_gpus"),
])
def test_official_flag_mistakes_are_named(args, message):
  devices = [] if any(arg.startswith("--num_gpus") for arg in args) else ["--num_gpus=0"]
  with flagsaver.flagsaver():
    with pytest.raises((app.UsageError, flags.IllegalFlagValueError), match=message):
      parse(*args, *devices)
      main.run()


def test_fixed_loss_scale_and_process_settings(tmp_path):
  with flagsaver.flagsaver():
    parse("--flagfile=configs/smoke.cfg", f"--model_dir={tmp_path}", "--dtype=fp16",
          "--loss_scale=128", "--tf_gpu_thread_mode=gpu_private", "--per_gpu_thread_count=3",
          "--batchnorm_spatial_persistent=true", "--use_tf_function=false")
    experiment = main.experiment_from_flags()
    main.apply_process_settings(FLAGS)
  assert experiment.runtime.loss_scale == 128.0
  trainer = trainer_lib.Trainer(experiment)
  # A fixed scale: a plain optimizer with Keras' loss_scale_factor, never a dynamic one.
  assert not isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
  assert trainer.optimizer.loss_scale_factor == 128.0
  assert os.environ["TF_GPU_THREAD_MODE"] == "gpu_private"
  assert os.environ["TF_GPU_THREAD_COUNT"] == "3"
  assert os.environ["TF_USE_CUDNN_BATCHNORM_SPATIAL_PERSISTENT"] == "1"
  assert tf.config.functions_run_eagerly()
  # The official code also gives the input pipeline what the GPU threads leave of the cores.
  assert official_flags.gpu_thread_environment("gpu_private", 0) == {
      "TF_GPU_THREAD_MODE": "gpu_private", "TF_GPU_THREAD_COUNT": "2"}
  assert official_flags.datasets_private_threads(0, 8, None, 96) == 64
  assert official_flags.datasets_private_threads(4, 4, None, 24) == 24 - 16 - 4
  assert official_flags.datasets_private_threads(4, 4, None, 20) is None
  assert official_flags.datasets_private_threads(0, 2, 5, 96) == 5
  assert official_flags.datasets_private_threads(0, 0, None, 96) is None
  with flagsaver.flagsaver():
    parse("--batchnorm_spatial_persistent=false", "--num_gpus=0")
    main.apply_process_settings(FLAGS)
  assert "TF_USE_CUDNN_BATCHNORM_SPATIAL_PERSISTENT" not in os.environ
  assert not tf.config.functions_run_eagerly()


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
  return fixtures.write_colour_folder(str(tmp_path_factory.mktemp("colours")), 2, 2)


def test_skip_eval_profile_steps_and_clean(colours, tmp_path, caplog):
  model_dir = tmp_path / "run"
  first = run_command(colour_flags(colours, str(model_dir), train_steps=2, architecture="resnet18"),
                      caplog)
  assert first["step"] == 2 and "eval_examples" in first
  (model_dir / "notes.txt").write_text("left by the user")
  caplog.clear()
  # --clean starts over in the same model_dir, with another model: nothing of the old run is left.
  stats = run_command(colour_flags(colours, str(model_dir), train_steps=4, steps_per_loop=4,
                                   log_steps=4)
                      + ["--clean", "--skip_eval", "--profile_steps=2,3"], caplog)
  assert stats["start_step"] == 0 and stats["step"] == 4
  assert not any(name.startswith("eval_") for name in stats)
  assert not any(key.startswith("eval_") for entry in stats["history"] for key in entry)
  assert run_state.read_run_config(str(model_dir)).model.architecture == "vgg16"
  assert not (model_dir / "notes.txt").exists()
  # The trace holds the model's own ops, and the calls ended at its boundaries.
  [trace] = glob.glob(str(model_dir / "train" / "plugins" / "profile" / "*" / "*.xplane.pb"))
  assert b"Conv2D" in open(trace, "rb").read()
  assert "Profiling steps 2 to 3" in caplog.text
  # --clean does not touch a model_dir a trainer holds.
  with run_lock.RunLock(str(model_dir)):
    with pytest.raises(run_lock.RunLockedError):
      run_command(colour_flags(colours, str(model_dir), train_steps=1) + ["--clean"], caplog)
  assert os.path.exists(model_dir / "ckpt-4.index")


def test_pretrained_filepath_loads_the_whole_model(colours, tmp_path):
  source = tmp_path / "source"
  with flagsaver.flagsaver():
    parse(*colour_flags(colours, str(source), train_steps=1, mode="train"))
    main.run()
    parse(*colour_flags(colours, str(source), mode="eval"))
    trained = trainer_lib.Trainer(main.experiment_from_flags())
    parse(*colour_flags(colours, str(tmp_path / "new"), mode="train", seed=7),
          f"--pretrained_filepath={source}")
    experiment = main.experiment_from_flags()
  assert (experiment.train.init_checkpoint, experiment.train.init_checkpoint_scope) == (
      str(source), "all")
  trained.restore_or_initialize(write_config=False)
  started = trainer_lib.Trainer(experiment)
  started.restore_or_initialize(write_config=False)
  # Every weight, the head's included, is the trained model's (official load_weights).
  for got, want in zip(started.model.weights, trained.model.weights):
    np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=got.path)


def test_eval_dataset_cache_and_slack_reach_the_pipeline(tmp_path):
  data = fixtures.write_colour_folder(str(tmp_path / "data"), 2, 2)
  config = DataConfig(source="folder", data_dir=data, image_size=32, num_classes=4, batch_size=4,
                      eval_cache=True, experimental_slack=True)
  evaluation = build_dataset(config, training=False)
  assert build_dataset(config, training=True).options().experimental_slack
  assert not evaluation.options().experimental_slack
  first = sum(int(labels.shape[0]) for _, labels in evaluation)
  for path in glob.glob(os.path.join(data, "validation", "*", "*.png")):
    os.remove(path)
  # Cached: the second pass reads memory, not the deleted files.
  assert sum(int(labels.shape[0]) for _, labels in evaluation) == first == 8
  with flagsaver.flagsaver():
    parse("--eval_dataset_cache", "--tf_data_experimental_slack", "--num_gpus=0")
    experiment = main.experiment_from_flags()
  assert experiment.data.eval_cache and experiment.data.experimental_slack
  assert not experiment.data.cache

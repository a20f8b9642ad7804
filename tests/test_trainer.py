"""The training loop in-process: distribution parity, fit parity, exact eval, phases, resume, precision."""
import dataclasses
import glob
import os
import pathlib
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from official_resnet import best_checkpoint
from official_resnet import config as config_lib
from official_resnet import continuous_eval
from official_resnet import losses
from official_resnet import models
from official_resnet import run as run_lib
from official_resnet import run_state
from official_resnet import trainer as trainer_lib
import trainer_fixtures as fixtures

# Global batch == number of training images: every step trains on all of them, whatever
# order the pipeline reads them in, so runs on any number of replicas see the same data.
BATCH = 8


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
  # 8 training images (2 per class), 12 evaluation images (3 per class).
  return fixtures.write_colour_folder(str(tmp_path_factory.mktemp("colours")), 2, 3)


def train(experiment):
  trainer = trainer_lib.Trainer(experiment)
  trainer.restore_or_initialize()
  stats = trainer.train()
  return trainer, stats


def batches_experiment(model_dir, strategy, **model_overrides):
  experiment = fixtures.experiment(model_dir, batch_size=BATCH, strategy=strategy)
  return dataclasses.replace(
      experiment, model=dataclasses.replace(experiment.model, **model_overrides))


# Slow (19 s on 2 cores): the synchronized layer alone is checked against tf_keras' on
# the whole batch in the fast tier (tests/test_models.py).
@pytest.mark.slow
def test_two_replicas_with_synchronized_batch_norm_update_like_one(tmp_path):
  """ResNet-18 with BatchNorm: the same global batches on one replica and on two.

  With --sync_batch_norm both normalize over the whole global batch, so they differ only
  in the order of float32 sums (two partial sums of 4 examples, then their sum, instead
  of one sum of 8): 1e-7 relative per sum, which BatchNorm's 1/sigma and three steps of
  training grow to 1e-6-1e-5 (measured up to 8e-6 absolute on moving variances). The images
  are photo-like: solid-colour images make every position of a feature map cross a ReLU
  at once, so a last-bit difference flips whole maps and runs part by up to 40% (measured).
  """
  images, labels = fixtures.photo_batches(3, BATCH)
  one = fixtures.train_on_batches(
      batches_experiment(tmp_path / "one", "off", sync_batch_norm=True), images, labels)
  two = fixtures.train_on_batches(
      batches_experiment(tmp_path / "two", "mirrored", sync_batch_norm=True), images, labels)
  assert (one.strategy.num_replicas_in_sync, two.strategy.num_replicas_in_sync) == (1, 2)
  initial = batches_experiment(tmp_path / "initial", "off", sync_batch_norm=True)
  initial_weights = [w.numpy() for w in trainer_lib.Trainer(initial).model.weights]
  for first, second, start in zip(one.model.weights, two.model.weights, initial_weights):
    np.testing.assert_allclose(second.numpy(), first.numpy(), atol=5e-5, rtol=1e-4,
                               err_msg=first.path)
    # Every variable moved: the comparison is not between untouched initial values.
    assert not np.array_equal(first.numpy(), start), first.path


# Slow (24 s on 2 cores): two replicas trained and evaluated through the Trainer.
@pytest.mark.slow
def test_replica_copies_of_moving_statistics_agree_and_evaluation_uses_them(colours, tmp_path):
  """Default BatchNorm: each replica normalizes its own part and updates its own copy."""
  experiment = fixtures.experiment(tmp_path, colours, batch_size=BATCH, train_steps=3,
                                   strategy="mirrored", epochs_between_evals=3)
  trainer = trainer_lib.Trainer(experiment)
  images, labels = fixtures.photo_batches(2, BATCH)
  trainer.make_train_function()(fixtures.distributed_batches(trainer.strategy, images, labels),
                                tf.constant(2))
  statistics = trainer.moving_statistics()
  assert len(statistics) == 40
  before = [[copy.numpy() for copy in variable.values] for variable in statistics]
  # Each copy saw its own replica's half of the batches.
  assert all(not np.array_equal(*copies) for copies in before)
  trainer.sync_replicas()
  for variable, copies in zip(statistics, before):
    for copy in variable.values:
      np.testing.assert_array_equal(copy.numpy(), (copies[0] + copies[1]) / 2)

  # Through Trainer.train: the checkpoint holds the synced statistics, and evaluation
  # under two replicas (the last global batch of the 12 images leaves replica 1 empty)
  # equals one replica's evaluation of that checkpoint.
  stats = trainer.train()
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path)))
  saved = {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()}
  restored = trainer_lib.Trainer(dataclasses.replace(experiment, runtime=dataclasses.replace(
      experiment.runtime, distribution_strategy="off")))
  restored.checkpoint.restore(tf.train.latest_checkpoint(str(tmp_path))).expect_partial()
  for variable, copy in zip(trainer.moving_statistics(), restored.moving_statistics()):
    assert [np.array_equal(c.numpy(), copy.numpy()) for c in variable.values] == [True, True]
  assert any(np.array_equal(value, restored.moving_statistics()[0].numpy())
             for value in saved.values() if np.shape(value) == (8,))
  single_eval = restored.evaluate()
  assert stats["eval_examples"] == single_eval["examples"] == 12
  assert stats["eval_loss"] == pytest.approx(single_eval["loss"], abs=1e-5)
  assert stats["eval_top_1_accuracy"] == single_eval["top_1_accuracy"]


@pytest.mark.slow
def test_fit_under_mirrored_follows_the_custom_loop(colours, tmp_path):
  """ResNet-18 under fit with two replicas, and under the custom loop with one.

  fit splits each global batch into replicas its own way, so BatchNorm is synchronized
  here (each replica's own moments would differ with the split): it then normalizes over
  the global batch, as one replica does, and the custom loop's two replicas update like
  its one (test_two_replicas_with_synchronized_batch_norm_update_like_one). One step: the
  updates agree to float rounding, 3.1e-6 at most (measured) against the bound 1e-5; later
  steps on these solid-colour images part by up to 1e-3 through whole feature maps crossing
  a ReLU at once (see that test).
  """
  def run(loop, strategy):
    experiment = fixtures.experiment(tmp_path / loop, colours, batch_size=BATCH, train_steps=1,
                                     strategy=strategy, training_loop=loop)
    experiment = dataclasses.replace(
        experiment, model=dataclasses.replace(experiment.model, sync_batch_norm=True))
    trainer = trainer_lib.Trainer(experiment)
    trainer.restore_or_initialize()
    return trainer, trainer.train(evaluate=False)

  custom, custom_stats = run("custom", "off")
  fit, fit_stats = run("fit", "mirrored")
  assert fit.strategy.num_replicas_in_sync == 2
  assert fit_stats["training_loop"] == "fit" and fit_stats["step"] == 1
  assert fit_stats["train_loss"] == pytest.approx(custom_stats["train_loss"], abs=1e-6)
  # The weights include the moving statistics, which evaluation uses.
  for a, b in zip(custom.model.weights, fit.model.weights):
    np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-5, rtol=0, err_msg=a.path)
  for variable in fit.moving_statistics():
    np.testing.assert_array_equal(*[copy.numpy() for copy in variable.values])


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
  """A train_and_eval run on a learnable colour set (16 train, 8 eval images per class)."""
  root = fixtures.write_colour_folder(str(tmp_path_factory.mktemp("learnable")), 16, 8, seed=1,
                                     noise=40.0)
  model_dir = tmp_path_factory.mktemp("learned")
  experiment = fixtures.experiment(
      model_dir, root, batch_size=16, train_steps=60, steps_per_loop=5, epochs_between_evals=5,
      keep_checkpoints=2, checkpoint_steps=20, enable_tensorboard=True)
  trainer, stats = train(experiment)
  return experiment, trainer, stats


def test_learnable_set_reaches_well_above_chance(learned):
  experiment, _, stats = learned
  # 4 classes: chance is 0.25.
  assert stats["eval_top_1_accuracy"] >= 0.75
  assert stats["eval_examples"] == 32
  assert stats["history"][-1]["train_loss"] < stats["history"][0]["train_loss"]
  saved = run_state.read_stats(experiment.train.model_dir)
  assert saved["step"] == 60 and saved["steps_per_epoch"] == 4
  assert [entry["step"] for entry in saved["history"]] == [20, 40, 60]
  assert saved["eval_top_1_accuracy"] == stats["eval_top_1_accuracy"]
  assert saved["examples_per_second"] > 0


def test_checkpoints_config_and_tensorboard_on_disk(learned):
  """The defaults keep TensorBoard scalars and the best top-1's checkpoint."""
  experiment, trainer, stats = learned
  model_dir = experiment.train.model_dir
  # Every 20 steps, the last 2 kept.
  assert sorted(os.path.basename(p) for p in glob.glob(f"{model_dir}/ckpt-*.index")) == [
      "ckpt-40.index", "ckpt-60.index"]
  accuracies = [entry["eval_top_1_accuracy"] for entry in stats["history"]]
  best = best_checkpoint.read(model_dir)
  best_step = stats["history"][accuracies.index(max(accuracies))]["step"]
  assert (best["metric"], best["value"], best["step"]) == ("top_1_accuracy", max(accuracies),
                                                           best_step)
  assert os.path.exists(os.path.join(model_dir, "best", f"ckpt-{best_step}.index"))
  saved = run_state.read_run_config(model_dir)
  assert saved.model == experiment.model and saved.data == experiment.data
  assert saved.train == experiment.train and saved.runtime == experiment.runtime
  assert saved.class_names == ("class0", "class1", "class2", "class3")

  def tags(kind):
    found = set()
    for path in glob.glob(os.path.join(model_dir, kind, "events.*")):
      for record in tf.data.TFRecordDataset(path):
        event = tf.compat.v1.Event.FromString(record.numpy())
        found.update(value.tag for value in event.summary.value
                     if value.metadata.plugin_data.plugin_name == "scalars")
    return found

  # The train loss and its two terms; the eval loss is a cross entropy alone.
  assert tags("train") == {"loss", "cross_entropy", "l2", "learning_rate", "top_1_accuracy",
                           "top_5_accuracy", "examples_per_second"}
  assert tags("eval") == {"loss", "cross_entropy", "top_1_accuracy", "top_5_accuracy"} | {
      f"{name}/{class_name}" for name in ("precision", "recall", "f1")
      for class_name in saved.class_names}


def test_eval_modes_reproduce_the_last_evaluation_and_build_no_optimizer(learned, monkeypatch):
  experiment, _, stats = learned
  built = []
  construct = keras.optimizers.Optimizer.__init__

  def counted(optimizer, *args, **kwargs):
    built.append(type(optimizer).__name__)
    construct(optimizer, *args, **kwargs)

  monkeypatch.setattr(keras.optimizers.Optimizer, "__init__", counted)
  evaluated = run_lib.evaluate_checkpoint(experiment)
  assert evaluated["step"] == 60
  assert evaluated["eval_loss"] == pytest.approx(stats["eval_loss"], abs=1e-5)
  assert evaluated["eval_examples"] == 32
  assert run_state.read_stats(experiment.train.model_dir, run_state.EVAL_STATS_FILE) == evaluated
  watched = continuous_eval.continuous_evaluate(experiment, timeout_s=1)
  assert watched["evaluated_steps"] == [60] and watched["finished"]
  assert watched["eval_loss"] == pytest.approx(stats["eval_loss"], abs=1e-5)
  assert built == []
  # The count sees the optimizer a trainer builds.
  trainer_lib.Trainer(experiment)
  assert built == ["SGD"]


def test_init_checkpoint_loads_the_backbone_or_everything(learned, tmp_path):
  experiment, source, _ = learned
  source_weights = {w.path: w.numpy() for w in source.model.weights}
  for scope in ("backbone", "all"):
    fresh = dataclasses.replace(experiment, train=dataclasses.replace(
        experiment.train, model_dir=str(tmp_path / scope), init_checkpoint=experiment.train.model_dir,
        init_checkpoint_scope=scope))
    trainer = trainer_lib.Trainer(fresh)
    assert trainer.restore_or_initialize() == 0
    for weight in trainer.model.weights:
      loaded = np.array_equal(weight.numpy(), source_weights[weight.path])
      in_head = weight.path.startswith("predictions")
      assert loaded == (scope == "all" or not in_head), weight.path


def test_rerunning_a_finished_run_trains_and_writes_nothing(learned):
  experiment, _, stats = learned
  model_dir = pathlib.Path(experiment.train.model_dir)
  files = (run_state.CONFIG_FILE, run_state.STATS_FILE, run_state.HISTORY_FILE)
  before = {name: (model_dir / name).read_bytes() for name in files}
  rerun = run_lib.train_and_evaluate(experiment)
  # The stats of the run that trained, as stats.json keeps them.
  assert rerun == run_state.read_stats(model_dir)
  assert (rerun["start_step"], rerun["step"]) == (0, 60)
  assert rerun["eval_top_1_accuracy"] == stats["eval_top_1_accuracy"]
  assert {name: (model_dir / name).read_bytes() for name in files} == before


def test_resume_refuses_another_model_or_other_classes_and_writes_nothing(colours, tmp_path):
  experiment = fixtures.experiment(tmp_path, colours, batch_size=BATCH, train_steps=1)
  run_state.write_run_config(tmp_path, dataclasses.replace(experiment.model, architecture="resnet34"),
                             experiment.data, ("class0", "class1", "class2", "class3"))
  before = (tmp_path / run_state.CONFIG_FILE).read_bytes()
  with pytest.raises(ValueError, match=r"another model \(architecture: saved 'resnet34', requested "
                                       r"'resnet18'\).*Nothing was written"):
    trainer_lib.Trainer(experiment).restore_or_initialize()
  run_state.write_run_config(tmp_path, experiment.model, experiment.data, ("a", "b", "c", "d"))
  before = (tmp_path / run_state.CONFIG_FILE).read_bytes()
  with pytest.raises(ValueError, match=r"4 classes \['a', 'b', 'c', 'd'\], the data now has 4 "
                                       r"classes \['class0'"):
    trainer_lib.Trainer(experiment).restore_or_initialize()
  assert (tmp_path / run_state.CONFIG_FILE).read_bytes() == before
  assert sorted(os.listdir(tmp_path)) == [run_state.CONFIG_FILE]
  wrong_count = dataclasses.replace(
      experiment, data=dataclasses.replace(experiment.data, num_classes=5),
      model=dataclasses.replace(experiment.model, num_classes=5))
  with pytest.raises(ValueError, match=r"num_classes must equal the 4 classes of the training data. "
                                       r"Received: 5"):
    trainer_lib.Trainer(wrong_count)


def test_a_resumed_run_reads_the_stream_on_from_its_step(tmp_path):
  experiment = fixtures.experiment(tmp_path, batch_size=4, seed=5)
  trainer = trainer_lib.Trainer(experiment)
  assert trainer.steps_per_epoch == 4

  def labels(start_step, batches, context=None):
    iterator = iter(trainer.train_input.dataset(start_step, context))
    return [next(iterator)[1].numpy().tolist() for _ in range(batches)]

  stream = labels(0, 12)
  # Mid-epoch and at an epoch's start, a resumed run reads what the uninterrupted one read.
  assert labels(6, 6) == stream[6:]
  assert labels(4, 8) == stream[4:]
  # Each epoch is one pass over the 16 examples, in an order of its own, the same in every
  # run with this seed.
  epochs = [sum(stream[start:start + 4], []) for start in (0, 4, 8)]
  assert all(sorted(epoch) == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4 for epoch in epochs)
  assert epochs[0] != epochs[1] != epochs[2]
  assert labels(0, 4) == stream[:4]
  # Two replicas, fed by one pipeline (mirrored: a batch for each replica a step) or by one
  # pipeline a worker (the second worker's here), resume mid-epoch the same way. (At an
  # epoch's start nothing is skipped, whatever the replicas.)
  for pipelines, pipeline in ((1, 0), (2, 1)):
    context = tf.distribute.InputContext(pipelines, pipeline, num_replicas_in_sync=2)
    per_step = 2 // pipelines
    replica_stream = labels(0, 8 * per_step, context)
    assert len(replica_stream[0]) == 2  # each replica's half of the global batch
    assert labels(6, 2 * per_step, context) == replica_stream[6 * per_step:]


def test_cached_training_records_are_read_from_storage_once_for_every_epoch(tmp_path):
  """--training_dataset_cache: after the first epoch the stream reads the records kept in
  memory, not the files (overwritten with black images here); without it every epoch
  reads the files. A resumed run's stream reads what the uninterrupted one read."""
  for cache in (True, False):
    data = fixtures.write_colour_folder(str(tmp_path / f"cache_{cache}"), 2, 1)
    experiment = fixtures.experiment(tmp_path / f"run_{cache}", data, batch_size=8, seed=5)
    trainer = trainer_lib.Trainer(dataclasses.replace(
        experiment, data=dataclasses.replace(experiment.data, cache=cache)))
    # One batch a step and one step an epoch: all 8 training images.
    stream = iter(trainer.train_input.dataset(0))
    (first_images, first_labels), (second_images, second_labels) = (
        [tensor.numpy() for tensor in next(stream)] for _ in range(2))
    assert sorted(second_labels) == sorted(first_labels)
    assert second_labels.tolist() != first_labels.tolist()
    resumed_images, resumed_labels = next(iter(trainer.train_input.dataset(1)))
    np.testing.assert_array_equal(resumed_labels, second_labels)
    np.testing.assert_array_equal(resumed_images, second_images)

    for path in glob.glob(os.path.join(data, "train", "*", "*.png")):
      Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(path)
    # Far enough on that no batch was read before the files changed.
    later_images = [next(stream)[0].numpy() for _ in range(8)][-1]
    if cache:
      # uint8 pixels (the train step normalizes): every colour has a channel of 140 or more.
      assert later_images.dtype == np.uint8 and np.all(later_images.max(axis=(1, 2, 3)) >= 140)
    else:
      np.testing.assert_array_equal(later_images, 0)


def test_two_phases_freeze_then_train_and_resume_inside_phase_two(colours, tmp_path):
  constant = config_lib.ScheduleConfig(name="constant", base_learning_rate=0.05, base_batch_size=None)
  phases = (config_lib.PhaseConfig("head", steps=2, schedule=constant, trainable="head"),
            config_lib.PhaseConfig("all", steps=2, schedule=dataclasses.replace(
                constant, base_learning_rate=0.02), trainable="block3"))
  # VGG16 without BatchNorm: reading the same images in another order changes its update
  # by float rounding only, so the resumed run can be compared closely. No seed: each
  # epoch (here all 8 images, one step) reads them in an order of its own, the resumed
  # run restarts its data in a new one, and the order of one batch does not matter.
  experiment = fixtures.experiment(tmp_path / "whole", colours, batch_size=BATCH, phases=phases,
                                   checkpoint_steps=1, keep_checkpoints=10, epochs_between_evals=2,
                                   architecture="vgg16", seed=None)
  whole = trainer_lib.Trainer(experiment)
  initial = {w.path: w.numpy() for w in whole.model.weights}
  whole.restore_or_initialize()
  stats = whole.train()
  assert [(entry["phase"], entry["step"]) for entry in stats["history"]] == [("head", 2), ("all", 4)]
  final = {w.path: w.numpy() for w in whole.model.weights}

  # A copy of the run stopped after step 3, in phase 2.
  resumed_dir = tmp_path / "resumed"
  resumed_dir.mkdir()
  for path in glob.glob(str(tmp_path / "whole" / "ckpt-3.*")) + [
      str(tmp_path / "whole" / run_state.CONFIG_FILE)]:
    shutil.copy(path, resumed_dir)
  (resumed_dir / "checkpoint").write_text('model_checkpoint_path: "ckpt-3"\n')
  resumed = trainer_lib.Trainer(dataclasses.replace(
      experiment, train=dataclasses.replace(experiment.train, model_dir=str(resumed_dir))))
  tf.train.Checkpoint(model=resumed.model).restore(
      str(tmp_path / "whole" / "ckpt-2")).expect_partial()
  after_head = {w.path: w.numpy() for w in resumed.model.weights}
  conv1, conv4, head = "block1_conv1/kernel", "block4_conv1/kernel", "predictions/kernel"
  # Phase 1 trained the head alone; phase 2 everything from block3 on, block1 stayed frozen.
  assert np.array_equal(after_head[conv4], initial[conv4])
  assert not np.array_equal(after_head[head], initial[head])
  assert not np.array_equal(final[conv4], after_head[conv4])
  assert np.array_equal(final[conv1], initial[conv1])

  # It resumes at step 3, inside phase 2, and ends where the whole run did.
  assert resumed.restore_or_initialize() == 3
  resumed_stats = resumed.train()
  assert resumed_stats["start_step"] == 3 and resumed_stats["step"] == 4
  for weight in resumed.model.weights:
    np.testing.assert_allclose(weight.numpy(), final[weight.path], atol=1e-5, err_msg=weight.path)


# fp16 under mirrored: its replicas must agree on skipping non-finite steps (slow: the
# costliest test of the fast tier; bf16 keeps mixed precision there).
@pytest.mark.parametrize("dtype,strategy", [pytest.param("fp16", "mirrored", marks=pytest.mark.slow),
                                            ("bf16", "off")])
def test_mixed_precision_trains_with_float32_variables(colours, tmp_path, dtype, strategy):
  experiment = fixtures.experiment(tmp_path, colours, batch_size=BATCH, train_steps=2,
                                   strategy=strategy, epochs_between_evals=2)
  policy = config_lib.DTYPE_POLICIES[dtype]
  experiment = dataclasses.replace(
      experiment, model=dataclasses.replace(experiment.model, dtype_policy=policy))
  trainer, stats = train(experiment)
  assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer) == (dtype == "fp16")
  assert {w.dtype for w in trainer.model.trainable_weights} == {"float32"}
  assert np.isfinite(stats["train_loss"]) and np.isfinite(stats["eval_loss"])
  assert trainer.current_step() == 2
  # Steps were applied, not all skipped as non-finite.
  assert int(trainer.optimizer.iterations.numpy()) >= 1


@pytest.mark.slow
def test_xla_gives_the_same_update(colours, tmp_path):
  def run(name, xla):
    experiment = fixtures.experiment(tmp_path / name, colours, batch_size=BATCH, train_steps=2,
                                     architecture="vgg16")
    experiment = dataclasses.replace(
        experiment, runtime=dataclasses.replace(experiment.runtime, enable_xla=xla))
    trainer = trainer_lib.Trainer(experiment)
    trainer.restore_or_initialize()
    stats = trainer.train(evaluate=False)
    return [w.numpy() for w in trainer.model.weights], stats

  plain, plain_stats = run("plain", False)
  compiled, compiled_stats = run("xla", True)
  for a, b in zip(plain, compiled):
    np.testing.assert_allclose(b, a, atol=1e-4)
  assert compiled_stats["train_loss"] == pytest.approx(plain_stats["train_loss"], abs=1e-4)


def test_uint8_batches_normalized_on_device_update_like_the_float32_pipeline(colours, tmp_path):
  """The default: uint8 training batches, normalized in the train step, as the pipeline would.

  The colour images are solid with integer shades, so rounding to uint8 loses nothing and
  the two runs must agree; a step that skipped or repeated the normalization would not.
  """
  def run(name, on_device):
    experiment = fixtures.experiment(tmp_path / name, colours, batch_size=BATCH, train_steps=2,
                                     architecture="vgg16", normalize_on_device=on_device)
    trainer = trainer_lib.Trainer(experiment)
    batch_images = next(iter(trainer.train_input.dataset(0)))[0]
    trainer.restore_or_initialize()
    stats = trainer.train(evaluate=False)
    return trainer, batch_images, [w.numpy() for w in trainer.model.weights], stats

  on_device, uint8_images, on_device_weights, on_device_stats = run("on_device", True)
  in_pipeline, float_images, in_pipeline_weights, in_pipeline_stats = run("in_pipeline", False)
  assert on_device.normalizes_on_device and not in_pipeline.normalizes_on_device
  assert uint8_images.dtype == tf.uint8 and float_images.dtype == tf.float32
  assert uint8_images.shape == float_images.shape == (BATCH, 32, 32, 3)
  # "unit" normalization: [-1, 1], where the uint8 pixels are [0, 255].
  assert float(tf.reduce_max(tf.abs(float_images))) <= 1.0 < float(tf.reduce_max(uint8_images))
  for a, b in zip(in_pipeline_weights, on_device_weights):
    np.testing.assert_allclose(b, a, atol=1e-5)
  assert on_device_stats["train_loss"] == pytest.approx(in_pipeline_stats["train_loss"], abs=1e-5)


def test_fit_and_self_normalizing_models_keep_their_input():
  def normalizes(normalize_in_model=False, **overrides):
    experiment = fixtures.experiment("/tmp/unused")
    if normalize_in_model:
      experiment = dataclasses.replace(
          experiment, data=dataclasses.replace(experiment.data, output_dtype="uint8"),
          model=dataclasses.replace(experiment.model,
                                    input_normalization=experiment.data.normalization))
    return trainer_lib.normalizes_on_device(
        dataclasses.replace(experiment, train=dataclasses.replace(experiment.train, **overrides)))

  assert normalizes()
  assert not normalizes(normalize_on_device=False)
  # Keras fit feeds the model the pipeline's batches as they are.
  assert not normalizes(training_loop="fit")
  # A model with its own normalization layer takes uint8 from the pipeline already.
  assert not normalizes(normalize_in_model=True)
  # And only that model: pixels are normalized once, the configs say by whom.
  experiment = fixtures.experiment("/tmp/unused")
  with pytest.raises(ValueError, match=r"Received: input_normalization=None, "
                                       r"normalization='rgb_mean', output_dtype='uint8'$"):
    dataclasses.replace(experiment, data=dataclasses.replace(experiment.data, output_dtype="uint8"))
  with pytest.raises(ValueError, match=r"Received: input_normalization='unit', "
                                       r"normalization='rgb_mean', output_dtype='float32'$"):
    dataclasses.replace(experiment, model=dataclasses.replace(experiment.model,
                                                              input_normalization="unit"))


def test_loss_with_label_smoothing_matches_its_formula():
  logits = tf.constant([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
  labels = tf.constant([0, 1])
  log_probs = tf.nn.log_softmax(logits).numpy()
  smoothing = 0.3
  targets = np.full((2, 3), smoothing / 3)
  targets[[0, 1], [0, 1]] += 1 - smoothing
  expected = -(targets * log_probs).sum(axis=1)
  np.testing.assert_allclose(losses.per_example_crossentropy(labels, logits, smoothing), expected,
                             rtol=1e-5)
  np.testing.assert_allclose(losses.per_example_crossentropy(labels, logits),
                             -log_probs[[0, 1], [0, 1]], rtol=1e-5)
  loss = losses.SparseCrossentropy(label_smoothing=smoothing)
  assert float(loss(labels, logits)) == pytest.approx(expected.mean(), rel=1e-5)
  assert losses.SparseCrossentropy.from_config(loss.get_config()).label_smoothing == smoothing
  assert [float(c) for c in losses.correct_counts(labels, logits, 2)] == [1.0, 2.0]


def test_experiment_refuses_inconsistent_settings():
  with pytest.raises(ValueError, match=r"training_loop='fit' works with distribution_strategy in "
                                       r"\('off', 'one_device', 'mirrored'\).*keras-team/keras#20585"
                                       r".*Received: distribution_strategy='multi_worker_mirrored'"):
    config_lib.ExperimentConfig(
        train=config_lib.TrainConfig(training_loop="fit"),
        runtime=config_lib.RuntimeConfig(distribution_strategy="multi_worker_mirrored"))
  with pytest.raises(ValueError, match=r"^dtype_policy='mixed_float16' \(dtype='fp16'\) is not "
                     r"supported on TPU; use 'mixed_bfloat16' \(dtype='bf16'\)\. "
                     r"Received: dtype_policy='mixed_float16'$"):
    config_lib.ExperimentConfig(model=models.ModelConfig(dtype_policy="mixed_float16"),
                                runtime=config_lib.RuntimeConfig(distribution_strategy="tpu"))
  with pytest.raises(ValueError, match=r"Phase 'head' needs exactly one of epochs and steps"):
    config_lib.PhaseConfig("head")
  with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\). Received: 1.0"):
    config_lib.TrainConfig(label_smoothing=1.0)


def test_weight_penalties_added_after_the_tape_are_the_tapes_own_sums():
  """ResNet-18 with BatchNorm and L2 on its kernels, fp32 and fp16 with a loss scale: the step's
  gradients, each penalty's added after the tape, equal bit for bit a tape over cross entropy
  plus model.losses, on one replica and as one of two; a model with a loss of another kind
  is refused."""
  from official_resnet.train import step as step_lib  # pylint: disable=import-outside-toplevel
  model = models.build_model(models.ModelConfig(architecture="resnet18", num_classes=4,
                                                image_size=32, base_width=8, weight_decay=5e-4))
  images, labels = fixtures.photo_batches(1, 8)
  images, labels = tf.cast(images[0], tf.float32) - 128.0, tf.constant(labels[0])
  variables = model.trainable_variables
  penalties = step_lib.weight_penalties(model, variables)
  assert len(penalties) == 22  # 20 convolutions, the classifier's kernel and bias.
  plain = keras.optimizers.SGD(0.1)
  scaled = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1), initial_scale=1024.0)
  for optimizer in (plain, scaled):
    for num_replicas in (1, 2):
      with tf.GradientTape(persistent=True) as tape:
        logits = model(images, training=True)
        cross_entropy = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        l2 = tf.add_n(model.losses) / num_replicas
        expected = tape.gradient(optimizer.scale_loss(cross_entropy + l2), variables)
        first = tape.gradient(optimizer.scale_loss(cross_entropy), variables)
      gradients, step_l2 = step_lib._add_penalties(first, variables, penalties, optimizer,
                                                   num_replicas)
      for name, actual, wanted in zip([v.path for v in variables], gradients, expected):
        np.testing.assert_array_equal(actual.numpy(), wanted.numpy(), err_msg=name)
      np.testing.assert_allclose(step_l2.numpy(), l2.numpy(), rtol=1e-6)
  # A variable the loss does not reach gets its penalty's gradient alone.
  with tf.GradientTape() as tape:
    penalties_sum = tf.add_n(model.losses)
  penalty_alone = tape.gradient(penalties_sum, variables[0])
  gradients, _ = step_lib._add_penalties([None, *first[1:]], variables, penalties, plain, 1)
  np.testing.assert_array_equal(gradients[0].numpy(), penalty_alone.numpy())

  class ActivitySum(keras.layers.Layer):
    def call(self, inputs):
      self.add_loss(tf.reduce_sum(inputs))
      return inputs

  inputs = keras.Input([3])
  other = keras.Model(inputs, ActivitySum()(
      keras.layers.Dense(2, kernel_regularizer=keras.regularizers.L2(0.1))(inputs)))
  other(tf.ones([1, 3]))
  with pytest.raises(ValueError, match=r"adds the model's weight penalties .* and no other loss; "
                                       r"model .* has 2 losses for 1 penalized variables"):
    step_lib.weight_penalties(other, other.trainable_variables)

"""The training recipe in the train loop: the weight average, resume, best checkpoint,
clipping, exports of the average, and a run on photo-like images (ResNet-18 with BatchNorm)."""
import dataclasses
import glob
import json
import os
import re
import shutil

from absl import flags
from absl.testing import flagsaver
import numpy as np
import pytest
import tensorflow as tf

from official_resnet import best_checkpoint
from official_resnet import export
from official_resnet import main
from official_resnet import models
from official_resnet import progress
from official_resnet import run as run_lib
from official_resnet import run_state
from official_resnet import trainer as trainer_lib
from official_resnet.train import checkpointing
import trainer_fixtures as fixtures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
BATCH = 8
STEPS = 6
DECAY = 0.8


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
  # 24 training images (6 per class): the STEPS steps are two epochs of 3, so a run resumed
  # at step 3 starts the second epoch; it reads the seeded order of that epoch as an
  # uninterrupted run does. 12 evaluation images.
  return fixtures.write_colour_folder(str(tmp_path_factory.mktemp("colours")), 6, 3)


def recipe_experiment(model_dir, data_dir, **overrides):
  """ResNet-18 (BatchNorm) with MixUp and CutMix per example, BCE, clipping and the average."""
  settings = dict(batch_size=BATCH, train_steps=STEPS, checkpoint_steps=1, keep_checkpoints=10,
                  epochs_between_evals=1, mixup_alpha=0.4, cutmix_alpha=1.0, mix_mode="elem",
                  loss="bce", label_smoothing=0.1, gradient_clip_norm=5.0, ema_decay=DECAY)
  settings.update(overrides)
  return fixtures.experiment(model_dir, data_dir, **settings)


def weights_at(experiment, prefix):
  """The model weights (in model.weights order) of a checkpoint."""
  model = models.build_model(experiment.model)
  tf.train.Checkpoint(model=model).restore(prefix).expect_partial()
  return [w.numpy() for w in model.weights]


@pytest.fixture(scope="module")
def averaged(colours, tmp_path_factory):
  """A whole recipe run of STEPS steps, a checkpoint after every step."""
  experiment = recipe_experiment(str(tmp_path_factory.mktemp("whole")), colours)
  trainer = trainer_lib.Trainer(experiment)
  trainer.restore_or_initialize()
  initial = [w.numpy() for w in trainer.model.weights]
  stats = trainer.train()
  return experiment, trainer, initial, stats


def test_average_equals_a_numpy_average_of_the_weights(averaged):
  experiment, trainer, initial, stats = averaged
  model_dir = experiment.train.model_dir
  average = [w.astype(np.float32) for w in initial]
  for n in range(STEPS):
    # tf.train.ExponentialMovingAverage's warm-up, in float32 as the train step computes it.
    keep = np.float32(1.0) - np.minimum(np.float32(DECAY), np.float32(1.0 + n) / np.float32(10.0 + n))
    weights = weights_at(experiment, os.path.join(model_dir, f"ckpt-{n + 1}"))
    average = [a - (a - w) * keep for a, w in zip(average, weights)]
  assert int(trainer.ema.state.num_updates.numpy()) == STEPS
  names = [w.path for w in trainer.model.weights]
  assert any("moving_mean" in name for name in names)
  for name, got, expected in zip(names, trainer.ema.averages, average):
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-7, err_msg=name)
  # The last weights moved away from the average: the comparison is not trivial.
  final = [w.numpy() for w in trainer.model.weights]
  assert max(np.abs(f - a).max() for f, a in zip(final, average)) > 1e-3
  # Evaluation swaps the average in exactly and the weights back exactly.
  with trainer.evaluation_weights():
    for weight, expected in zip(trainer.model.weights, average):
      np.testing.assert_allclose(weight.numpy(), expected, rtol=1e-6, atol=1e-7)
    evaluated = trainer.evaluate()
  for weight, value in zip(trainer.model.weights, final):
    np.testing.assert_array_equal(weight.numpy(), value)
  assert evaluated["loss"] == pytest.approx(stats["eval_loss"], abs=1e-6)
  assert trainer.evaluate()["loss"] != pytest.approx(evaluated["loss"], abs=1e-6)


def test_resumed_run_ends_where_the_uninterrupted_run_ends(averaged, tmp_path):
  experiment, whole, _, _ = averaged
  source = experiment.train.model_dir
  for path in glob.glob(os.path.join(source, "ckpt-3.*")) + [os.path.join(source, run_state.CONFIG_FILE)]:
    shutil.copy(path, tmp_path)
  (tmp_path / "checkpoint").write_text('model_checkpoint_path: "ckpt-3"\n')
  resumed = trainer_lib.Trainer(dataclasses.replace(
      experiment, train=dataclasses.replace(experiment.train, model_dir=str(tmp_path))))
  assert resumed.restore_or_initialize() == 3
  assert int(resumed.ema.state.num_updates.numpy()) == 3
  resumed.train(evaluate=False)
  for weight, expected in zip(resumed.model.weights, whole.model.weights):
    np.testing.assert_allclose(weight.numpy(), expected.numpy(), atol=1e-5, err_msg=weight.path)
  for got, expected in zip(resumed.ema.averages, whole.ema.averages):
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5)


def test_exports_hold_the_average_unless_told_otherwise(averaged, tmp_path):
  experiment, trainer, _, _ = averaged
  model_dir = experiment.train.model_dir
  # export_from_model_dir and --mode=predict build their model with restore_model_dir.
  averaged_model, _ = export.restore_model_dir(model_dir)
  trained_model, _ = export.restore_model_dir(model_dir, weights="raw")
  for restored, average in zip(averaged_model.weights, trainer.ema.averages):
    np.testing.assert_array_equal(restored.numpy(), average.numpy())
  for restored, weight in zip(trained_model.weights, trainer.model.weights):
    np.testing.assert_array_equal(restored.numpy(), weight.numpy())
  with pytest.raises(ValueError,
                     match=r"^checkpoint must be one of \('latest', 'best'\)\. Received: 'first'$"):
    export.restore_model_dir(model_dir, checkpoint="first")
  # A run that evaluates keeps its best top-1 by default: model_dir/best holds its step's
  # checkpoint, the average included, as model_dir's checkpoint of that step does.
  best = best_checkpoint.read(model_dir)
  assert best["metric"] == "top_1_accuracy"
  for path in glob.glob(os.path.join(model_dir, f"ckpt-{best['step']}.*")) + [
      os.path.join(model_dir, run_state.CONFIG_FILE)]:
    shutil.copy(path, tmp_path)
  (tmp_path / "checkpoint").write_text(f'model_checkpoint_path: "ckpt-{best["step"]}"\n')
  best_model, _ = export.restore_model_dir(model_dir, checkpoint="best")
  step_model, _ = export.restore_model_dir(str(tmp_path))
  for restored, expected in zip(best_model.weights, step_model.weights):
    np.testing.assert_array_equal(restored.numpy(), expected.numpy())


def test_export_of_a_run_without_average_refuses_ema(colours, tmp_path):
  experiment = fixtures.experiment(tmp_path, colours, batch_size=BATCH, train_steps=1)
  trainer = trainer_lib.Trainer(experiment)
  trainer.restore_or_initialize()
  tf.train.CheckpointManager(trainer.checkpoint, str(tmp_path), 1,
                             checkpoint_name=trainer_lib.CHECKPOINT_NAME).save(checkpoint_number=1)
  with pytest.raises(ValueError, match=r"weights='ema' needs a checkpoint with an average of the "
                                       r"weights \(a run with --ema_decay\). Received: .*ckpt-1"):
    export.restore_model_dir(str(tmp_path), weights="ema")
  # "auto" falls back to the trained weights.
  model, _ = export.restore_model_dir(str(tmp_path))
  for restored, weight in zip(model.weights, trainer.model.weights):
    np.testing.assert_array_equal(restored.numpy(), weight.numpy())
  with pytest.raises(ValueError, match=r"must hold a best checkpoint .* Received: model_dir="):
    export.restore_model_dir(str(tmp_path), checkpoint="best")


def test_clipping_bounds_the_update_summed_over_replicas(colours, tmp_path):
  """One SGD step moves the weights by exactly lr x clip when the clip binds, on one replica
  and on two (Keras' own global_clipnorm clips each replica's half before the all-reduce)."""
  rate, clip = 0.05, 0.01

  def step_length(strategy, clip_norm):
    experiment = fixtures.experiment(tmp_path / f"{strategy}_{clip_norm}", colours, batch_size=BATCH,
                                     train_steps=1, architecture="vgg16", strategy=strategy,
                                     gradient_clip_norm=clip_norm)
    trainer = trainer_lib.Trainer(experiment)
    trainer.restore_or_initialize()
    before = [v.numpy() for v in trainer.model.trainable_variables]
    trainer.train(evaluate=False)
    return np.sqrt(sum(((v.numpy() - b) ** 2).sum()
                       for v, b in zip(trainer.model.trainable_variables, before)))

  assert step_length("off", None) > 2 * rate * clip
  assert step_length("off", clip) == pytest.approx(rate * clip, rel=1e-4)
  assert step_length("mirrored", clip) == pytest.approx(rate * clip, rel=1e-4)


@pytest.mark.slow
def test_best_checkpoint_keeps_the_best_of_a_scripted_sequence(colours, tmp_path):
  experiment = recipe_experiment(str(tmp_path), colours, train_steps=5,
                                 epochs_between_evals=1 / STEPS, best_metric="top_1_accuracy")

  def scripted_metrics(accuracy, class_names):
    """Eval metrics of 10 images of class 0 with `accuracy` of them right."""
    right = round(accuracy * 10)
    confusion = np.zeros([len(class_names)] * 2)
    confusion[0, :2] = right, 10 - right
    sums = {"loss_sum": 10.0, "top_1_correct": right, "top_k_correct": 10, "examples": 10}
    return progress.eval_result(sums, confusion, class_names)

  def run(experiment, accuracies):
    trainer = trainer_lib.Trainer(experiment)
    scripted = iter(accuracies)
    trainer.evaluate = lambda average=False: scripted_metrics(next(scripted), trainer.class_names)
    trainer.restore_or_initialize()
    return trainer.train()

  stats = run(experiment, [0.2, 0.6, 0.4, 0.6, 0.5])
  assert [entry["eval_top_1_accuracy"] for entry in stats["history"]] == [0.2, 0.6, 0.4, 0.6, 0.5]
  best = best_checkpoint.read(str(tmp_path))
  # A tie does not replace the kept checkpoint.
  assert (best["step"], best["value"], best["checkpoint"]) == (2, 0.6, "ckpt-2")
  assert sorted(os.listdir(tmp_path / "best")) == [
      "best.json", "ckpt-2.data-00000-of-00001", "ckpt-2.index"]
  # Step 2 was saved before its evaluation: the best is that checkpoint's files, linked.
  assert os.path.samefile(tmp_path / "best" / "ckpt-2.index", tmp_path / "ckpt-2.index")
  kept, _ = export.restore_model_dir(str(tmp_path), checkpoint="best", weights="raw")
  for weight, expected in zip(kept.weights, weights_at(experiment, str(tmp_path / "ckpt-2"))):
    np.testing.assert_array_equal(weight.numpy(), expected)

  # Resumed for three more steps: a lower value keeps step 2, a higher one replaces it.
  longer = dataclasses.replace(experiment, train=dataclasses.replace(experiment.train, train_steps=8))
  run(longer, [0.55, 0.9, 0.7])
  best = best_checkpoint.read(str(tmp_path))
  assert (best["step"], best["value"]) == (7, 0.9)
  assert sorted(os.listdir(tmp_path / "best")) == [
      "best.json", "ckpt-7.data-00000-of-00001", "ckpt-7.index"]
  assert json.loads((tmp_path / "best" / "best.json").read_text())["metrics"]["top_1_accuracy"] == 0.9
  with pytest.raises(ValueError, match=r"keeps the best 'top_1_accuracy'; a resumed run must keep "
                                       r"the same metric.*Received: best_metric='loss'"):
    # One step more: a run with nothing left to train would not get that far.
    run(dataclasses.replace(longer, train=dataclasses.replace(longer.train, best_metric="loss",
                                                              train_steps=9)), [])
  assert best_checkpoint.is_better("loss", 0.5, 0.6) and not best_checkpoint.is_better("loss", 0.7, 0.6)


@pytest.mark.parametrize("links", [True, False], ids=["links", "no_links"])
def test_a_checkpoint_saved_at_the_step_is_linked_else_copied_else_written(tmp_path, monkeypatch,
                                                                           links):
  """Saver.write of a step saved already: its files, linked or (no links) copied; of a step
  not saved yet: written. Each reads back the values of its step."""
  weight, step = tf.Variable([1.0, 2.0]), tf.Variable(3, dtype=tf.int64)
  saver = checkpointing.Saver(tf.train.Checkpoint(weight=weight, step=step), step, str(tmp_path),
                              tf.distribute.get_strategy(), keep=1)
  if not links:
    def refuse(*_):
      raise OSError("no hard links here")
    monkeypatch.setattr(os, "link", refuse)
  saver.save()
  saver.write(str(tmp_path / "same_step"))
  assert os.path.samefile(tmp_path / "same_step.index", tmp_path / "ckpt-3.index") == links
  step.assign(4)
  weight.assign([5.0, 6.0])
  saver.write(str(tmp_path / "next_step"))
  for prefix, expected in (("same_step", [1.0, 2.0]), ("next_step", [5.0, 6.0])):
    read_back = tf.Variable([0.0, 0.0])
    tf.train.Checkpoint(weight=read_back).read(str(tmp_path / prefix)).expect_partial()
    np.testing.assert_array_equal(read_back.numpy(), expected)


def test_recipe_settings_are_checked(tmp_path):
  with pytest.raises(ValueError, match=r"ema_decay needs training_loop='custom'.*Received: "
                                       r"training_loop='fit'"):
    fixtures.experiment(tmp_path, ema_decay=0.99, training_loop="fit")
  with pytest.raises(ValueError, match=r"mixup_alpha/cutmix_alpha needs training_loop='custom'"):
    fixtures.experiment(tmp_path, cutmix_alpha=1.0, training_loop="fit")
  with pytest.raises(ValueError, match=r"bce_target_threshold applies to loss='bce' only"):
    fixtures.experiment(tmp_path, bce_target_threshold=0.2)
  with pytest.raises(ValueError, match=r"ema_decay must be in \(0, 1\). Received: 1.0"):
    fixtures.experiment(tmp_path, ema_decay=1.0)
  with pytest.raises(ValueError, match=r"best_metric must be one of \('top_1_accuracy', "
                                       r"'top_5_accuracy', 'loss'\). Received: 'accuracy'"):
    fixtures.experiment(tmp_path, best_metric="accuracy")
  # The best checkpoint is kept by default, but only by a run that evaluates.
  for best_metric, evaluate in ((None, True), ("top_1_accuracy", False)):
    with pytest.raises(ValueError, match=r"export_checkpoint='best' needs a best checkpoint.*"
                                         rf"Received: best_metric={best_metric!r}, "
                                         rf"evaluate={evaluate}"):
      experiment = fixtures.experiment(tmp_path, best_metric=best_metric)
      run_lib.train_and_evaluate(dataclasses.replace(
          experiment, export=dataclasses.replace(experiment.export,
                                                 export_dir=str(tmp_path / "e"),
                                                 checkpoint="best")), evaluate=evaluate)
  assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_augmenting_mixing_and_averaging_train_photo_like_images_well_above_chance(tmp_path):
  """RandAugment (RSB A3's), MixUp/CutMix and the average of the weights together.

  The plain recipe on the same images and steps, and this one's figures, are in
  docs/training.md; plain training is held above chance by test_trainer's learnable set.
  """
  root = fixtures.write_photo_folder(str(tmp_path / "photos"), 24, 8)
  experiment = fixtures.experiment(tmp_path / "run", root, batch_size=16, train_steps=72,
                                   steps_per_loop=6, epochs_between_evals=6, mixup_alpha=0.2,
                                   cutmix_alpha=1.0, ema_decay=0.9)
  experiment = dataclasses.replace(experiment, data=dataclasses.replace(
      experiment.data, randaugment_variant="timm", randaugment_layers=2, randaugment_magnitude=6,
      randaugment_magnitude_std=0.5))
  trainer = trainer_lib.Trainer(experiment)
  trainer.restore_or_initialize()
  stats = trainer.train()
  # 4 classes, 32 evaluation images: chance is 0.25.
  assert stats["eval_examples"] == 32
  assert stats["eval_top_1_accuracy"] >= 0.6, stats["history"]


# Smoke size on the CPU: later flags override the flagfiles' data, size, steps and devices
# (and the network: a ResNet-18 traces in a fraction of a ResNet-50's time).
SMOKE_OVERRIDES = ("--architecture=resnet18", "--source=synthetic", "--synthetic_num_examples=16",
                   "--num_classes=4", "--image_size=32", "--eval_image_size=40", "--base_width=8",
                   "--batch_size=8", "--train_steps=2", "--epochs_between_evals=1",
                   "--steps_per_loop=1", "--distribution_strategy=off",
                   "--num_gpus=0", "--dtype=fp32", "--datasets_num_private_threads=1",
                   "--noenable_tensorboard", "--seed=1")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["imagenet_resnet50_rsb_a3.cfg", "imagenet_resnet50_model_garden.cfg"])
def test_recipe_flagfiles_describe_their_source_and_run_at_smoke_size(name, tmp_path):
  path = os.path.join(REPO, "configs", name)
  with flagsaver.flagsaver():
    FLAGS.unparse_flags()
    FLAGS(["official_resnet.main", f"--flagfile={path}", "--data_dir=/data/imagenet"])
    full = main.experiment_from_flags()
    FLAGS.unparse_flags()
    FLAGS(["official_resnet.main", f"--flagfile={path}", f"--model_dir={tmp_path}",
           *SMOKE_OVERRIDES])
    stats = main.run()
  train = full.train
  assert (full.model.architecture, full.model.variant, full.data.source) == (
      "resnet50", "v1.5", "imagenet")
  if name == "imagenet_resnet50_rsb_a3.cfg":
    assert (full.data.batch_size, full.model.image_size, train.train_epochs) == (2048, 160, 100)
    assert (train.optimizer.name, train.optimizer.weight_decay, full.model.weight_decay) == (
        "lamb", 0.02, 0.0)
    assert train.schedule.peak_learning_rate(2048) == pytest.approx(8e-3)
    assert (train.loss, train.bce_target_threshold, train.label_smoothing) == ("bce", 0.2, 0.0)
    assert (train.mixup_alpha, train.cutmix_alpha, train.mix_switch_prob) == (0.1, 1.0, 0.5)
    assert train.gradient_clip_norm == 1.0 and train.ema_decay is None
    data = full.data
    assert (data.randaugment_variant, data.randaugment_layers, data.randaugment_magnitude,
            data.randaugment_magnitude_std) == ("timm", 2, 6.0, 0.5)
    assert (data.eval_image_size, data.eval_crop_fraction, data.train_crop_area_range) == (
        224, 0.95, (0.08, 1.0))
  else:
    assert (full.data.batch_size, full.model.image_size, train.train_steps) == (2048, 224, 56160)
    # The Model Garden's l2_weight_decay 1e-4, which it applies as l2(1e-4 / 2).
    assert (train.optimizer.name, full.model.weight_decay, train.label_smoothing) == (
        "sgd", 5e-5, 0.1)
    assert train.schedule.peak_learning_rate(2048) == pytest.approx(0.8)
    # The Model Garden's boundaries and warm-up, from epochs at 1281167 // 2048 steps each.
    steps_per_epoch = 1281167 // 2048
    assert [round(e * steps_per_epoch) for e in train.schedule.decay_epochs] == [18750, 37500, 50000]
    assert round(train.schedule.warmup_epochs * steps_per_epoch) == 3125
    assert full.data.train_crop_area_range == (0.08, 1.0)
  assert train.best_metric == "top_1_accuracy"
  with open(path) as f:
    header = f.read()
  assert "python -m official_resnet.main --flagfile=configs/" + name in header
  assert ("78.1%" if "rsb" in name else "76.1%") in header
  assert stats["step"] == 2 and stats["eval_examples"] == 16
  assert best_checkpoint.read(str(tmp_path))["metric"] == "top_1_accuracy"


RECIPE_FLAGS = ("loss", "bce_target_threshold", "mixup_alpha", "cutmix_alpha", "mix_prob",
                "mix_switch_prob", "mix_mode", "gradient_clip_norm", "ema_decay", "ema_warmup",
                "best_metric", "decoupled_weight_decay", "rmsprop_rho", "lars_trust_coefficient",
                "lr_decay_every_epochs", "polynomial_power", "polynomial_end_fraction",
                "export_weights", "export_checkpoint")


def test_recipe_flags_reach_the_configs_and_list_their_defaults():
  with flagsaver.flagsaver():
    FLAGS.unparse_flags()
    FLAGS(["official_resnet.main", "--optimizer=lars", "--adamw_weight_decay=0.01",
           "--lars_trust_coefficient=0.002", "--rmsprop_rho=0.8", "--lr_schedule=polynomial",
           "--polynomial_power=2", "--polynomial_end_fraction=0.01", "--lr_decay_every_epochs=2.4",
           "--ema_decay=0.999", "--noema_warmup", "--mixup_alpha=0.2", "--mix_mode=elem",
           "--mix_prob=0.5", "--mix_switch_prob=0.25", "--cutmix_alpha=0.5", "--loss=bce",
           "--bce_target_threshold=0.3", "--gradient_clip_norm=2", "--best_metric=loss",
           "--export_weights=raw", "--export_checkpoint=best"])
    experiment = main.experiment_from_flags()
    help_text = FLAGS.get_help()
  train, optimizer, schedule = experiment.train, experiment.train.optimizer, experiment.train.schedule
  # --adamw_weight_decay is the former name of --decoupled_weight_decay.
  assert (optimizer.name, optimizer.weight_decay, optimizer.lars_trust_coefficient,
          optimizer.rho) == ("lars", 0.01, 0.002, 0.8)
  assert (schedule.name, schedule.polynomial_power, schedule.polynomial_end_fraction,
          schedule.decay_every_epochs) == ("polynomial", 2.0, 0.01, 2.4)
  assert (train.ema_decay, train.ema_warmup, train.best_metric) == (0.999, False, "loss")
  assert (train.mixup_alpha, train.cutmix_alpha, train.mix_prob, train.mix_switch_prob,
          train.mix_mode) == (0.2, 0.5, 0.5, 0.25, "elem")
  assert (train.loss, train.bce_target_threshold, train.gradient_clip_norm) == ("bce", 0.3, 2.0)
  assert (experiment.export.weights, experiment.export.checkpoint) == ("raw", "best")
  # --helpfull: every flag with its default (absl prints none for None: the help says it).
  for name in RECIPE_FLAGS:
    block = re.split(rf"\n  --(\[no\])?{name}:", help_text)[-1].split("\n  --", 1)[0]
    assert "(default: " in block or "Default: None" in block, (name, block)

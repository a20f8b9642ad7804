"""Recipe flagfiles, the phase and weight flags, and normalization chosen from the weights."""
import logging
import os

from absl import app
from absl import flags
from absl.testing import flagsaver
import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from input_pipeline.config import DataConfig
from official_resnet import main
from official_resnet import models
from official_resnet import run_state
from official_resnet import trainer as trainer_lib
from official_resnet.demo import data as demo_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
CATSDOGS = os.path.join(REPO, "configs", "catsdogs_vgg16_frozen.cfg")
CIFAR10 = os.path.join(REPO, "configs", "cifar10_resnet50_finetune.cfg")
TWO_PHASE = os.path.join(REPO, "configs", "folder_resnet50_two_phase.cfg")
# Small sizes for running a recipe on the CPU in seconds.
SMALL = ("--image_size=32", "--base_width=8", "--batch_size=8", "--distribution_strategy=off",
         "--num_gpus=0", "--seed=1", "--log_steps=1", "--validation_fraction=0.25")


def experiment(*args):
  with flagsaver.flagsaver():
    FLAGS.unparse_flags()
    FLAGS(["official_resnet.main", *args])
    return main.experiment_from_flags()


@pytest.fixture(scope="module")
def catsdogs(tmp_path_factory):
  """The Kaggle layout: cat.N.jpg and dog.N.jpg in one folder, 12 of each."""
  root = str(tmp_path_factory.mktemp("catsdogs"))
  return demo_data.write_dataset(root, demo_data.TRANSFER_CLASSES, 12, 32, "kaggle").root


def weights_of(model, kind):
  return {layer.name: [w.numpy() for w in layer.weights] for layer in model.layers
          if isinstance(layer, kind) and layer.weights}


def changed(before, after):
  return {name for name in before
          if any(not np.array_equal(b, a) for b, a in zip(before[name], after[name]))}


def train_recipe(*args, evaluate=True):
  """A Trainer built from the flags, its initial weights and its stats after training."""
  trainer = trainer_lib.Trainer(experiment(*args))
  trainer.restore_or_initialize()
  initial = {kind: weights_of(trainer.model, kind)
             for kind in (keras.layers.Conv2D, keras.layers.BatchNormalization, keras.layers.Dense)}
  stats = trainer.train(evaluate=evaluate)
  return trainer, initial, stats


def test_catsdogs_recipe_is_the_classic_vgg16_head():
  config = experiment(f"--flagfile={CATSDOGS}", "--data_dir=/data/train")
  model, train = config.model, config.train
  assert (model.architecture, model.pooling, model.image_size, model.num_classes) == (
      "vgg16", None, 224, 2)
  assert model.head == models.HeadConfig((4096, 4096), dropout=0.5, activation="relu")
  assert (config.data.source, config.data.normalization) == ("folder", "unit")
  assert (train.optimizer.name, train.schedule.name, train.schedule.peak_learning_rate(32)) == (
      "adam", "constant", 0.001)
  assert [(p.trainable, p.epochs) for p in train.phases] == [("head", 3)]


def test_cifar10_recipe_is_sgd_0001_batch_64_for_10_epochs():
  config = experiment(f"--flagfile={CIFAR10}")
  train = config.train
  assert (config.data.source, config.data.tfds_name, config.data.eval_split) == (
      "tfds", "cifar10", "test")
  assert (config.model.architecture, config.model.variant, config.model.num_classes) == (
      "resnet50", "v1", 10)
  assert (train.optimizer.name, train.optimizer.momentum, config.data.batch_size) == ("sgd", 0.9, 64)
  assert train.schedule.peak_learning_rate(64) == 0.001 and train.train_epochs == 10
  assert train.phases == () and train.init_checkpoint_scope == "backbone"


def test_two_phase_recipe_builds_both_phases():
  phases = experiment(f"--flagfile={TWO_PHASE}", "--num_classes=5").train.phases
  assert [(p.name, p.trainable, p.epochs, p.schedule.base_learning_rate) for p in phases] == [
      ("head", "head", 3, 0.01), ("conv4", "conv4", 5, 0.001)]
  # --phase_steps replaces the recipe's epochs, as --train_steps replaces --train_epochs.
  phases = experiment(f"--flagfile={TWO_PHASE}", "--num_classes=5", "--phase_steps=2,4").train.phases
  assert [(p.steps, p.epochs) for p in phases] == [(2, None), (4, None)]


@pytest.mark.parametrize("args,message", [
    (["--phases=head,conv9"], r"--phases items must be one of \('all', 'head', 'conv1', 'conv2', "
                              r"'conv3', 'conv4', 'conv5'\) for --architecture=resnet50. "
                              r"Received: 'conv9'"),
    (["--phases=head,head", "--phase_steps=1,1"], r"must not repeat an item. Received: --phases=head,head"),
    (["--phases=head,all", "--phase_epochs=3"],
     r"--phase_epochs must hold one positive number per phase \(2: head,all\). Received: "
     r"--phase_epochs=3.0"),
    (["--phases=head,all", "--phase_steps=1,1", "--phase_learning_rates=0.1,0"],
     r"--phase_learning_rates must hold one positive number per phase"),
    (["--phases=head,all"], r"--phases needs --phase_epochs or --phase_steps"),
    (["--phases=head,all", "--phase_steps=1,1", "--train_steps=5"],
     r"drop --train_steps. Received: --train_steps=5 with --phases=head,all"),
    (["--phase_epochs=1,2"], r"--phase_epochs applies with --phases. Received: --phase_epochs=1,2"),
    (["--trainable=block3"], r"--trainable must be one of .* Received: 'block3'"),
    (["--pretrained=/weights/resnet50_model_dir"],
     r"--pretrained: must be a weights file \(.h5, .pth, .pt, .bin, .safetensors\) or a name "
     r"\(imagenet, torchvision\[:WEIGHTS\], hf://ORG/REPO\); our checkpoints go to "
     r"--init_checkpoint. Received: --pretrained=/weights/resnet50_model_dir"),
    (["--pretrained=torchvision:IMAGENET1K_V9", "--architecture=resnet50"],
     r"--pretrained: torchvision's resnet50 weights are \('IMAGENET1K_V1', 'IMAGENET1K_V2'\)\. "
     r"Received: torchvision:IMAGENET1K_V9"),
    (["--pretrained=a.h5", "--init_checkpoint=b"], r"Received: --pretrained=a.h5 and --init_checkpoint=b"),
    (["--init_checkpoint=/nowhere/ckpt-3"], r"--init_checkpoint: `path` must be .* Received: "
                                            r"path='/nowhere/ckpt-3'"),
])
def test_bad_transfer_flags_name_the_flag(args, message):
  with flagsaver.flagsaver():
    FLAGS.unparse_flags()
    FLAGS(["official_resnet.main", *args])
    with pytest.raises(app.UsageError, match=message):
      main.run()


def test_catsdogs_recipe_trains_the_head_on_loaded_frozen_vgg16(catsdogs, tmp_path):
  # A weights file of the recipe's model at test size stands in for keras.applications' VGG16.
  small = ("--head_hidden_units=32,32", *SMALL)
  reference = models.build_model(experiment(f"--flagfile={CATSDOGS}", *small).model)
  weights_file = str(tmp_path / "vgg16.weights.h5")
  reference.save_weights(weights_file)
  command = (f"--flagfile={CATSDOGS}", f"--data_dir={catsdogs}",
             f"--model_dir={tmp_path / 'run'}", f"--pretrained={weights_file}", "--train_steps=3",
             *small)
  trainer, initial, stats = train_recipe(*command)
  assert trainer.config.data.normalization == "caffe"
  assert stats["step"] == 3 and stats["eval_examples"] > 0
  convs = weights_of(trainer.model, keras.layers.Conv2D)
  assert len(convs) == 13 and not any(trainer.model.get_layer(name).trainable for name in convs)
  # The convolutions hold the file's weights, untouched; every head layer trained.
  for name, values in convs.items():
    for value, expected in zip(values, reference.get_layer(name).get_weights()):
      np.testing.assert_array_equal(value, expected, err_msg=name)
  dense = initial[keras.layers.Dense]
  assert changed(dense, weights_of(trainer.model, keras.layers.Dense)) == {"fc1", "fc2", "predictions"}
  # The same command resumes with the weights file gone: the checkpoint holds every weight,
  # and config.json what the file implied.
  os.remove(weights_file)
  resumed = trainer_lib.Trainer(experiment(*command))
  resumed.restore_or_initialize()
  assert resumed.current_step() == 3
  assert (resumed.config.data.normalization, resumed.config.train.init_checkpoint) == (
      "caffe", weights_file)
  for layer in trainer.model.layers:
    for value, expected in zip(resumed.model.get_layer(layer.name).weights, layer.weights):
      np.testing.assert_array_equal(value.numpy(), expected.numpy(), err_msg=value.path)


def test_cifar10_recipe_fine_tunes_every_layer_from_scratch_with_a_warning(tmp_path, caplog):
  with tfds.testing.mock_data(num_examples=16), caplog.at_level(logging.WARNING):
    trainer, initial, stats = train_recipe(
        f"--flagfile={CIFAR10}", f"--model_dir={tmp_path}", "--train_steps=2", *SMALL, evaluate=False)
  assert "No weights to start from" in caplog.text and "training from scratch" in caplog.text
  assert trainer.config.data.normalization == "rgb_mean"
  assert stats["step"] == 2 and trainer.model.output_shape == (None, 10)
  for kind in (keras.layers.Conv2D, keras.layers.BatchNormalization, keras.layers.Dense):
    before = initial[kind]
    assert changed(before, weights_of(trainer.model, kind)) == set(before), kind.__name__


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
  """A model_dir of ours: ResNet-50 v1 at test size, one step on the shape classes, torch pixels."""
  root = tmp_path_factory.mktemp("shapes")
  data = demo_data.write_dataset(str(root / "data"), demo_data.PRETRAIN_CLASSES, 4, 32).root
  model_dir = str(root / "run")
  with flagsaver.flagsaver():
    FLAGS.unparse_flags()
    FLAGS(["official_resnet.main", f"--flagfile={TWO_PHASE}", f"--data_dir={data}",
           f"--model_dir={model_dir}", "--mode=train", "--num_classes=6", "--normalization=torch",
           "--phases=all", "--phase_steps=1", "--phase_learning_rates=0.01", *SMALL])
    main.run()
  return model_dir


# Slow (25 s on 2 cores): the fast tier freezes then trains in phases in
# tests/test_trainer.py (test_two_phases_freeze_then_train_and_resume_inside_phase_two).
@pytest.mark.slow
def test_two_phase_recipe_from_our_checkpoint_freezes_then_unfreezes_top_stages(
    shapes_run, catsdogs, tmp_path):
  model_dir = str(tmp_path / "run")
  trainer, initial, stats = train_recipe(
      f"--flagfile={TWO_PHASE}", f"--data_dir={catsdogs}", f"--model_dir={model_dir}",
      "--num_classes=2", f"--init_checkpoint={shapes_run}", "--phase_steps=2,2",
      "--checkpoint_steps=1", "--keep_checkpoints=10", *SMALL, evaluate=False)
  # The normalization of the run the weights come from, in its config.json.
  assert trainer.config.data.normalization == "torch"
  assert run_state.read_run_config(model_dir).data.normalization == "torch"
  assert [(entry["phase"], entry["step"]) for entry in stats["history"]] == [("head", 2), ("conv4", 4)]
  after_head = models.build_model(trainer.config.model)
  tf.train.Checkpoint(model=after_head).restore(os.path.join(model_dir, "ckpt-2")).expect_partial()
  for kind in (keras.layers.Conv2D, keras.layers.BatchNormalization):
    before = initial[kind]
    # Phase 1: the backbone frozen, BatchNorm statistics included (inference mode).
    assert not changed(before, weights_of(after_head, kind)), kind.__name__
    # Phase 2: conv4 and conv5 train, conv1 to conv3 stay as loaded.
    moved = changed(before, weights_of(trainer.model, kind))
    assert moved and all(name.startswith(("conv4", "conv5")) for name in moved), kind.__name__
    assert {name for name in before if name.startswith(("conv4", "conv5"))} == moved
  # What stayed frozen is what the checkpoint holds.
  source = models.build_model(trainer.config.model)
  models.load_pretrained(source, shapes_run, load_head=False)
  np.testing.assert_array_equal(trainer.model.get_layer("conv1_conv").kernel.numpy(),
                                source.get_layer("conv1_conv").kernel.numpy())
  assert changed(initial[keras.layers.Dense], weights_of(after_head, keras.layers.Dense)) == {
      "predictions"}


def test_explicit_normalization_wins_over_the_weights(shapes_run):
  config = experiment(f"--flagfile={TWO_PHASE}", "--num_classes=2", f"--init_checkpoint={shapes_run}",
                      "--normalization=unit")
  assert config.data.normalization == "unit" and config.train.init_checkpoint == shapes_run
  assert experiment(f"--init_checkpoint={shapes_run}").data.normalization == "torch"
  assert experiment().data.normalization == DataConfig().normalization


def test_a_trainer_warns_when_the_run_is_unlike_its_weights(shapes_run, catsdogs, tmp_path,
                                                             caplog):
  config = experiment(f"--flagfile={TWO_PHASE}", f"--data_dir={catsdogs}",
                      f"--model_dir={tmp_path}", "--num_classes=2",
                      f"--init_checkpoint={shapes_run}", "--normalization=unit", *SMALL)
  with caplog.at_level(logging.WARNING):
    trainer_lib.Trainer(config).restore_or_initialize(write_config=False)
  assert (f"This run differs from what {shapes_run} implies: data.normalization='unit' (the "
          "weights' 'torch'). initial_weights.start_from sets what weights imply.") in caplog.text


def test_the_flip_is_on_by_default_and_off_for_digits_and_text():
  """--norandom_flip: timm's --hflip 0, the Model Garden's aug_rand_hflip=False."""
  assert experiment().data.random_flip is True
  assert experiment("--norandom_flip").data.random_flip is False

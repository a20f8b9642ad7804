"""torchvision and timm weights: parity with torch itself, refusals, hub names, a frozen transfer."""
import dataclasses
import glob
import logging
import os

from absl import app
from absl.testing import flagsaver

import keras
import numpy as np
from PIL import Image
import pytest
import safetensors.torch
import tensorflow as tf

from input_pipeline import constants
from input_pipeline import preprocessing
from official_resnet import initial_weights
from official_resnet import main
from official_resnet import models
from official_resnet import run_state
from official_resnet.demo import data as demo_data
from official_resnet.models import weight_sources
from cli_fixtures import parse
import test_recipes
from torch_fixtures import randomize_batch_norm
from torch_fixtures import timm
from torch_fixtures import to_nchw
from torch_fixtures import torch
from torch_fixtures import torchvision
import trainer_fixtures

SIZE = 64  # Weight shapes of ResNet do not depend on the input size; 64 px keeps CPU time low.
TOLERANCE = 1e-4  # Of the largest output.
# torchvision's VGG head at test size (see _at_test_size); 4096 wide at 224 px.
HIDDEN = 256
TOP = models.HeadConfig((HIDDEN, HIDDEN), dropout=0.5)
# torchvision architecture -> our ModelConfig fields (with top; for ResNet the paddings that
# torchvision's weights imply, as a run started from them takes them).
TORCH_PADDINGS = dict(conv_padding=weight_sources.TORCH_INFO.conv_padding,
                      pool_padding=weight_sources.TORCH_INFO.pool_padding)
CONFIGS = {
    "resnet18": dict(architecture="resnet18", variant="v1.5", **TORCH_PADDINGS),
    "resnet50": dict(architecture="resnet50", variant="v1.5", **TORCH_PADDINGS),
    "vgg16": dict(architecture="vgg16", pooling=None, head=TOP),
    "vgg16_bn": dict(architecture="vgg16", vgg_batch_norm=True, pooling=None, head=TOP),
}


def _images(batch=2, size=SIZE, seed=0):
  return np.random.default_rng(seed).uniform(-2, 2, (batch, size, size, 3)).astype("float32")


def _assert_close(ours, theirs):
  theirs = theirs.numpy() if hasattr(theirs, "numpy") else theirs
  assert ours.shape == theirs.shape
  error = np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs))
  assert error < TOLERANCE, error


def _at_test_size(model):
  """torchvision's VGG at 64 px: its head reads the 2 x 2 map as 224 px gives the 7 x 7 one.

  At 224 px the adaptive pool before the classifier is the identity; at 64 px it
  would repeat each of the 2 x 2 positions, so it goes, and classifier.0 reads
  512 x 2 x 2 inputs in torchvision's [C, H, W] order. The hidden layers are
  HIDDEN wide instead of 4096, which only saves time: same modules, same names.
  """
  if isinstance(model, torchvision.models.VGG):
    model.avgpool = torch.nn.Identity()
    model.classifier[0] = torch.nn.Linear(512 * 2 * 2, HIDDEN)
    model.classifier[3] = torch.nn.Linear(HIDDEN, HIDDEN)
    model.classifier[6] = torch.nn.Linear(HIDDEN, 1000)
  return model


def _save(state_dict, directory, name):
  paths = dict(pth=str(directory / f"{name}.pth"), safetensors=str(directory / f"{name}.safetensors"))
  torch.save(state_dict, paths["pth"])
  safetensors.torch.save_file(state_dict, paths["safetensors"])
  return paths


@pytest.fixture(scope="module")
def torchvision_files(tmp_path_factory):
  """Per architecture: torchvision's model (weights=None, BatchNorm randomised) saved both ways,
  and its logits and pooled features on the test images."""
  directory = tmp_path_factory.mktemp("torchvision")
  images = to_nchw(_images())
  files = {}
  for seed, name in enumerate(CONFIGS):
    torch.manual_seed(seed)
    # init_weights=False: the 224-px head that _at_test_size replaces is not worth initialising.
    options = dict(init_weights=False) if name.startswith("vgg") else {}
    reference = getattr(torchvision.models, name)(weights=None, **options)
    reference = randomize_batch_norm(_at_test_size(reference), seed).eval()
    with torch.no_grad():
      logits = reference(images)
      pooled = (reference.features(images).mean((2, 3)) if name.startswith("vgg") else
                torch.nn.Sequential(*list(reference.children())[:-1])(images).flatten(1))
    files[name] = dict(_save(reference.state_dict(), directory, name), logits=logits,
                       pooled=pooled, state_dict=reference.state_dict())
  return files


def _ours(name, **changes):
  return models.build_model(models.ModelConfig(image_size=SIZE, **{**CONFIGS[name], **changes}))


@pytest.mark.parametrize("file_format", ["pth", "safetensors"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_equal_torchvision(torchvision_files, name, file_format):
  model = _ours(name)
  models.load_pretrained(model, torchvision_files[name][file_format])
  _assert_close(model(_images()).numpy(), torchvision_files[name]["logits"])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_pooled_features_equal_torchvision(torchvision_files, name):
  model = _ours(name, include_top=False, pooling="avg", head=models.HeadConfig())
  models.load_pretrained(model, torchvision_files[name]["safetensors"])
  _assert_close(model(_images()).numpy(), torchvision_files[name]["pooled"])


def test_same_padding_is_not_torchvision(torchvision_files):
  """TF's "same" padding shifts the strided 3x3 windows: the same weights, other logits."""
  model = _ours("resnet18", conv_padding="same")
  models.load_pretrained(model, torchvision_files["resnet18"]["pth"])
  reference = torchvision_files["resnet18"]["logits"].numpy()
  assert np.max(np.abs(model(_images()).numpy() - reference)) > 100 * TOLERANCE * np.max(
      np.abs(reference))


def test_legacy_torch_save_format(torchvision_files, tmp_path):
  """torch.save's layout before torch 1.6, which torchvision's first VGG files use."""
  path = str(tmp_path / "resnet18_legacy.pth")
  torch.save(torchvision_files["resnet18"]["state_dict"], path, _use_new_zipfile_serialization=False)
  model = _ours("resnet18")
  models.load_pretrained(model, path)
  _assert_close(model(_images()).numpy(), torchvision_files["resnet18"]["logits"])


def _weights(model):
  return [variable.numpy().copy() for variable in model.weights]


def _assert_refused(model, path, message):
  before = _weights(model)
  with pytest.raises(ValueError, match=message) as error:
    models.load_pretrained(model, path)
  assert "\n" not in str(error.value)
  for variable, value in zip(model.weights, before):
    np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.path)


class _RunsCode:
  """What a malicious pickle holds: unpickling it would call os.system."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


def test_pickle_with_other_objects_is_refused_without_running_it(torchvision_files, tmp_path):
  marker = tmp_path / "ran"
  path = str(tmp_path / "resnet18_with_code.pth")
  torch.save({**torchvision_files["resnet18"]["state_dict"], "extra": _RunsCode(marker)}, path)
  _assert_refused(_ours("resnet18"), path,
                  r"Refusing to load .*: its pickle names `posix.system`, which is not a tensor")
  assert not marker.exists()


def test_wrong_architecture_missing_key_and_truncated_files_are_refused(torchvision_files, tmp_path):
  files = torchvision_files
  _assert_refused(_ours("resnet50"), files["resnet18"]["pth"],
                  r"layer 'conv2_block1_1_conv' expects shapes \[\(1, 1, 64, 64\)\]\. Received: "
                  r"'layer1.0.conv1' with shapes \[\(3, 3, 64, 64\)\]")
  _assert_refused(_ours("vgg16_bn"), files["vgg16"]["safetensors"],
                  r"layer 'block1_conv1' has variables \['kernel'\] .* Received: 'features.0' with "
                  r"variables \['kernel', 'bias'\]")
  # keras.applications' ResNet (v1) has biased convolutions.
  _assert_refused(models.build_model(models.ModelConfig("resnet18", "v1", image_size=SIZE)),
                  files["resnet18"]["pth"], r"layer 'conv1_conv' has variables \['kernel', 'bias'\]")
  state_dict = dict(files["resnet18"]["state_dict"])
  del state_dict["layer1.0.bn1.running_var"]
  missing = _save(state_dict, tmp_path, "missing")
  for path in missing.values():
    _assert_refused(_ours("resnet18"), path,
                    r"layer 'conv2_block1_1_bn' has variables \['gamma', 'beta', 'moving_mean', "
                    r"'moving_variance'\] with shapes \[\(64,\), \(64,\), \(64,\), \(64,\)\]\. "
                    r"Received: 'layer1.0.bn1' with variables \['gamma', 'beta', 'moving_mean'\]")
  for file_format in ("pth", "safetensors"):
    with open(files["resnet18"][file_format], "rb") as file:
      content = file.read()
    truncated = tmp_path / f"truncated.{file_format}"
    truncated.write_bytes(content[:len(content) * 2 // 3])
    _assert_refused(_ours("resnet18"), str(truncated), r"^Cannot read .* as PyTorch weights: "
                    r".*truncated file\?\)\. Received: path=")


def test_torchvision_table_is_torchvisions(monkeypatch):
  for key, sets in weight_sources.TORCHVISION_WEIGHTS.items():
    enum = torchvision.models.get_model_weights(key)
    assert list(sets)[-1] == enum.DEFAULT.name
    for name, (file, resize) in sets.items():
      weights = enum[name]
      transforms = weights.transforms()
      assert weight_sources.TORCHVISION_URL + file == weights.url
      assert (transforms.resize_size, transforms.crop_size) == (
          [resize], [weight_sources.TORCHVISION_PUBLISHED_CROP])
      assert (transforms.interpolation.value, transforms.antialias) == ("bilinear", True)
      assert tuple(transforms.mean) == constants.TORCH_MEANS
      assert tuple(transforms.std) == constants.TORCH_STDS


def test_eval_resize_is_close_to_torchvisions_protocol():
  """torchvision V2's eval (232, antialiased bilinear, 224 crop) on a photo-like 300 x 400 image."""
  rng = np.random.default_rng(3)
  smooth = tf.image.resize(rng.uniform(0, 255, (1, 30, 40, 3)), (300, 400), "bicubic")[0]
  image = np.clip(smooth.numpy() + rng.normal(0, 8, (300, 400, 3)), 0, 255).astype(np.uint8)
  encoded = tf.io.encode_png(image)
  ours = preprocessing.preprocess_for_eval(encoded, 224, resize_size=232,
                                           method="bilinear_antialias").numpy()
  transforms = torchvision.models.ResNet50_Weights.IMAGENET1K_V2.transforms()
  theirs = torchvision.transforms.functional.center_crop(
      torchvision.transforms.functional.resize(
          torch.from_numpy(image).permute(2, 0, 1), transforms.resize_size, antialias=True),
      transforms.crop_size).permute(1, 2, 0).numpy()
  official = preprocessing.preprocess_for_eval(encoded, 224).numpy()
  assert ours.shape == theirs.shape == (224, 224, 3)
  # Within a grey level on average (torch rounds to uint8), far closer than the official eval.
  assert np.mean(np.abs(ours - theirs)) < 0.6
  assert np.mean(np.abs(official - theirs)) > 10 * np.mean(np.abs(ours - theirs))


def _hub_cache(cache, repo_id, model):
  """What huggingface_hub leaves in its cache after downloading a timm repository."""
  commit = "0" * 40
  repo = cache / f"models--{repo_id.replace('/', '--')}"
  (repo / "refs").mkdir(parents=True)
  (repo / "refs" / "main").write_text(commit)
  timm.models.save_for_hf(model, str(repo / "snapshots" / commit), safe_serialization=True)
  return repo / "snapshots" / commit


def test_hub_name_resolves_from_the_cache_with_timms_protocol(tmp_path, monkeypatch):
  import huggingface_hub
  torch.manual_seed(5)
  reference = randomize_batch_norm(timm.create_model("resnet18.a1_in1k"), 5).eval()
  snapshot = _hub_cache(tmp_path, "timm/resnet18.a1_in1k", reference)
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
  path, info = weight_sources.resolve("hf://timm/resnet18.a1_in1k", architecture="resnet18")
  assert path == str(snapshot / "model.safetensors")
  # resnet18.a1_in1k: crop_pct 0.95, bicubic; timm resizes to floor(224 / 0.95).
  assert (info.normalization, info.variant, info.conv_padding) == ("torch", "v1.5", "symmetric")
  assert (info.eval_resize, info.eval_crop, info.eval_resize_method) == (
      235, 224, "bicubic_antialias")
  model = _ours("resnet18")
  models.load_pretrained(model, path)
  with torch.no_grad():
    _assert_close(model(_images()).numpy(), reference(to_nchw(_images())))
  # The same files given by path: the config.json beside them still travels.
  assert initial_weights.weights_info(path) == dataclasses.replace(info, source=info.source.replace(
      "hf://timm/resnet18.a1_in1k", path))
  with pytest.raises(ValueError, match=r"holds a timm 'resnet18'; the model is resnet50"):
    weight_sources.resolve("hf://timm/resnet18.a1_in1k", architecture="resnet50")
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
  with pytest.raises(ValueError, match=r"Cannot download https://huggingface.co/timm/resnet34.a1_in1k/"
                     r"resolve/main/config.json .*give --pretrained=<folder>/model.safetensors"):
    weight_sources.resolve("hf://timm/resnet34.a1_in1k", architecture="resnet34")


def test_timms_pytorch_model_bin_with_its_config(tmp_path):
  """timm's hub files in the torch.save format: pytorch_model.bin beside config.json."""
  torch.manual_seed(9)
  reference = randomize_batch_norm(timm.create_model("resnet18.a1_in1k"), 9).eval()
  timm.models.save_for_hf(reference, str(tmp_path), safe_serialization=False)
  path = str(tmp_path / "pytorch_model.bin")
  config = test_recipes.experiment(f"--pretrained={path}", "--architecture=resnet18")
  assert (config.data.normalization, config.model.variant, config.model.conv_padding) == (
      "torch", "v1.5", "symmetric")
  assert (config.data.eval_resize_size, config.data.eval_resize_method) == (
      235, "bicubic_antialias")
  model = _ours("resnet18")
  models.load_pretrained(model, path)
  with torch.no_grad():
    _assert_close(model(_images()).numpy(), reference(to_nchw(_images())))


def test_timm_vgg16_head_of_convolutions(tmp_path):
  """timm's VGG head is convolutions (pre_logits.fc1 over the whole map, fc2 1 x 1) and head.fc.

  At 64 px fc1 spans the 2 x 2 map as it spans the 7 x 7 one at 224 px.
  """
  torch.manual_seed(6)
  reference = timm.create_model("vgg16_bn")
  # As _at_test_size does for torchvision's VGG: fc1 spans the 2 x 2 map, HIDDEN wide.
  reference.pre_logits.fc1 = torch.nn.Conv2d(512, HIDDEN, 2)
  reference.pre_logits.input_kernel_size = 2
  reference.pre_logits.fc2 = torch.nn.Conv2d(HIDDEN, HIDDEN, 1)
  reference.head.fc = torch.nn.Linear(HIDDEN, 1000)
  reference = randomize_batch_norm(reference, 6).eval()
  path = str(tmp_path / "vgg16_bn.safetensors")
  safetensors.torch.save_file(reference.state_dict(), path)
  model = _ours("vgg16_bn")
  models.load_pretrained(model, path)
  with torch.no_grad():
    _assert_close(model(_images()).numpy(), reference(to_nchw(_images())))


@pytest.mark.slow
def test_catsdogs_recipe_from_a_torchvision_file_keeps_the_backbone_bit_identical(tmp_path):
  """The recipe's frozen VGG16 from a torchvision-format file (torchvision's own VGG class and
  layer builder at the test's base width 8), trained a few steps under --trainable=head."""
  catsdogs = demo_data.write_dataset(str(tmp_path / "catsdogs"), demo_data.TRANSFER_CLASSES, 12,
                                     32, "kaggle").root
  widths = [width // 8 if width != "M" else width for width in torchvision.models.vgg.cfgs["D"]]
  torch.manual_seed(7)
  source = torchvision.models.vgg.VGG(torchvision.models.vgg.make_layers(widths), num_classes=2)
  path = str(tmp_path / "vgg16_small.pth")
  torch.save(source.state_dict(), path)
  small = ("--head_hidden_units=32,32", *test_recipes.SMALL)
  trainer, initial, stats = test_recipes.train_recipe(
      f"--flagfile={test_recipes.CATSDOGS}", f"--data_dir={catsdogs}",
      f"--model_dir={tmp_path / 'run'}", f"--pretrained={path}", "--train_steps=3", *small,
      evaluate=False)
  assert stats["step"] == 3
  saved = run_state.read_run_config(str(tmp_path / "run"))
  assert saved.data.normalization == trainer.config.data.normalization == "torch"
  convs = [layer for layer in trainer.model.layers if isinstance(layer, keras.layers.Conv2D)]
  assert len(convs) == 13
  state_dict = source.state_dict()
  for layer, index in zip(convs, (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)):
    assert not layer.trainable
    kernel = state_dict[f"features.{index}.weight"].numpy().transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(layer.kernel.numpy(), kernel, err_msg=layer.name)
    np.testing.assert_array_equal(layer.bias.numpy(), state_dict[f"features.{index}.bias"].numpy())
  assert test_recipes.changed(initial[keras.layers.Dense],
                              test_recipes.weights_of(trainer.model, keras.layers.Dense)) == {
                                  "fc1", "fc2", "predictions"}


@pytest.fixture(scope="module")
def four_colour_classifier(tmp_path_factory):
  """torchvision's resnet18 for 4 classes (BatchNorm randomised) saved as a .pth, a folder of
  4 solid colours (2 validation images each), and torch's probabilities for those images."""
  directory = tmp_path_factory.mktemp("published")
  torch.manual_seed(8)
  reference = randomize_batch_norm(torchvision.models.resnet18(weights=None, num_classes=4),
                                   8).eval()
  path = str(directory / "resnet18_colours.pth")
  torch.save(reference.state_dict(), path)
  data = trainer_fixtures.write_colour_folder(str(directory / "colours"), 2, 2)
  files = sorted(glob.glob(os.path.join(data, "validation", "*", "*.png")))
  # Solid images: the eval resize and crop leave every pixel as it is.
  pixels = np.stack([np.asarray(Image.open(file), np.float32) for file in files])
  normalized = (pixels / 255 - constants.TORCH_MEANS) / constants.TORCH_STDS
  with torch.no_grad():
    logits = reference(to_nchw(normalized.astype(np.float32)))
  labels = torch.tensor([int(os.path.basename(os.path.dirname(file))[-1]) for file in files])
  return dict(path=path, data=data, files=files,
              probabilities=torch.softmax(logits, -1).numpy(),
              loss=float(torch.nn.functional.cross_entropy(logits, labels)))


@pytest.mark.slow
def test_published_weights_evaluate_and_export_as_published_without_a_checkpoint(
    four_colour_classifier, tmp_path, caplog):
  """timm's validate.py habit: --mode=eval (and export) of a weights file, no run needed."""
  published = four_colour_classifier
  command = (f"--pretrained={published['path']}", "--architecture=resnet18", "--num_classes=4",
             "--image_size=32", f"--data_dir={published['data']}", "--batch_size=4",
             "--distribution_strategy=off", "--num_gpus=0")
  with flagsaver.flagsaver():
    parse("--mode=eval", f"--model_dir={tmp_path / 'eval'}", *command)
    caplog.set_level(logging.INFO, logger="absl")
    evaluated = main.run()
    # torch's normalization and padding, the head loaded: torch's own loss on the images.
    assert f"Normalization torch, what {published['path']} was trained with." in caplog.text
    assert "ResNet variant v1.5, what torchvision/timm weights are (--variant)." in caplog.text
    assert evaluated["eval_examples"] == 8
    assert evaluated["eval_loss"] == pytest.approx(published["loss"], abs=1e-4)
    export_dir = str(tmp_path / "export")
    parse("--mode=export", f"--model_dir={tmp_path / 'new'}", f"--export_dir={export_dir}",
          "--export_format=saved_model", *command)
    assert main.run()["export_path"] == os.path.join(export_dir, "1")
    truncated = tmp_path / "resnet18_colours.safetensors"
    safetensors.torch.save_file(torch.load(published["path"]), str(truncated))
    truncated.write_bytes(truncated.read_bytes()[:-1000])
    parse("--mode=eval", f"--model_dir={tmp_path / 'truncated'}", *command,
          f"--pretrained={truncated}")
    with pytest.raises(ValueError, match=r"^Cannot read .* as PyTorch weights: the file holds "
                       r"\d+ bytes, its header describes \d+ \(truncated file\?\)\."):
      main.run()
    parse("--mode=export", f"--model_dir={tmp_path / 'nothing'}", f"--export_dir={export_dir}")
    with pytest.raises(app.UsageError, match=r"--mode=export needs a checkpoint in --model_dir, "
                       r"or weights to export as they are \(--pretrained, --init_checkpoint\)\. "
                       r"Received: --model_dir=.*nothing without checkpoints, no weights flag"):
      main.run()
  assert not os.path.exists(tmp_path / "new")  # Nothing written where no run is.
  loaded = tf.saved_model.load(os.path.join(export_dir, "1"))
  encoded = tf.constant([open(file, "rb").read() for file in published["files"]])
  served = loaded.signatures["serving_default"](images=encoded)
  np.testing.assert_allclose(served["probabilities"].numpy(), published["probabilities"],
                             atol=1e-4)
  with open(os.path.join(export_dir, "1", "assets", constants.LABELS_FILE)) as labels:
    assert labels.read().split() == ["class0", "class1", "class2", "class3"]


def test_a_vgg_file_says_its_batch_norm_and_classic_head(four_colour_classifier, tmp_path, caplog):
  """torchvision's vgg16_bn layers at base width 8 with a 32-wide classic head for 4 classes:
  --architecture=vgg16 alone takes BatchNorm and the head from the file."""
  widths = [width // 8 if width != "M" else width for width in torchvision.models.vgg.cfgs["D"]]
  torch.manual_seed(10)
  reference = torchvision.models.vgg.VGG(
      torchvision.models.vgg.make_layers(widths, batch_norm=True), num_classes=4,
      init_weights=False)
  # At 32 px the map before the head is 1 x 1 x 64 (see _at_test_size).
  reference.avgpool = torch.nn.Identity()
  reference.classifier[0] = torch.nn.Linear(64, 32)
  reference.classifier[3] = torch.nn.Linear(32, 32)
  reference.classifier[6] = torch.nn.Linear(32, 4)
  reference = randomize_batch_norm(reference, 10).eval()
  path = str(tmp_path / "vgg16_bn_small.pth")
  torch.save(reference.state_dict(), path)
  published = four_colour_classifier
  pixels = np.stack([np.asarray(Image.open(file), np.float32) for file in published["files"]])
  labels = torch.tensor([int(os.path.basename(os.path.dirname(file))[-1])
                         for file in published["files"]])
  with torch.no_grad():
    logits = reference(to_nchw(((pixels / 255 - constants.TORCH_MEANS) / constants.TORCH_STDS)
                               .astype(np.float32)))
  with flagsaver.flagsaver():
    parse("--mode=eval", f"--pretrained={path}", "--architecture=vgg16", "--base_width=8",
          "--num_classes=4", "--image_size=32", f"--data_dir={published['data']}",
          "--batch_size=4", "--distribution_strategy=off", "--num_gpus=0",
          f"--model_dir={tmp_path / 'eval'}")
    caplog.set_level(logging.INFO, logger="absl")
    evaluated = main.run()
  assert (f"--vgg_batch_norm: {path} has BatchNorm after each convolution "
          "(features.1.running_var)." in caplog.text)
  assert (f"--pooling=none --head_hidden_units=32,32: the classic head of {path} "
          "(classifier.0.weight, classifier.3.weight)." in caplog.text)
  assert evaluated["eval_loss"] == pytest.approx(
      float(torch.nn.functional.cross_entropy(logits, labels)), abs=1e-4)
  # Training with the default scope, which keeps no head: a new one, and how to keep the file's.
  caplog.clear()
  with caplog.at_level(logging.INFO, logger="absl"):
    config = test_recipes.experiment(f"--pretrained={path}", "--architecture=vgg16",
                                     "--verbosity=0")
  assert (config.model.vgg_batch_norm, config.model.pooling, config.model.head.hidden_units) == (
      True, "avg", ())
  assert (f"{path} has a classic head (classifier.0.weight, classifier.3.weight), which "
          "--init_checkpoint_scope=backbone leaves out: the model gets a new head. --pooling=none "
          "--head_hidden_units=32,32 builds the file's (its weights load with "
          "--init_checkpoint_scope=all)." in caplog.text)
  config = test_recipes.experiment(f"--pretrained={path}", "--architecture=vgg16",
                                   "--init_checkpoint_scope=all")
  assert (config.model.pooling, config.model.head.hidden_units) == (None, (32, 32))
  # Flags given win; a --vgg_batch_norm the file contradicts is named.
  config = test_recipes.experiment(f"--pretrained={path}", "--architecture=vgg16",
                                   "--init_checkpoint_scope=all", "--pooling=max")
  assert (config.model.vgg_batch_norm, config.model.pooling, config.model.head.hidden_units) == (
      True, "max", ())
  with pytest.raises(ValueError, match=r"^--pretrained: .*vgg16_bn_small.pth holds a VGG with "
                     r"BatchNorm after each convolution \(features.1.running_var\): leave "
                     r"--vgg_batch_norm out \(it follows the weights\) or give --vgg_batch_norm\. "
                     r"Received: --novgg_batch_norm$"):
    test_recipes.experiment(f"--pretrained={path}", "--architecture=vgg16", "--novgg_batch_norm")

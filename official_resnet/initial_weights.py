"""The weights a run starts from, and the settings they imply, decided in one place.

Weights give their published accuracy only with what they were trained and evaluated
with: the pixel normalization, ResNet's padding of strided convolutions (torchvision's
is symmetric) and of its stem pool (keras.applications' and torchvision's are symmetric,
the official model's is TF's "same") and the eval resize. A run that starts from a set of weights takes those
settings from the weights, except the ones its caller chose.

    experiment = initial_weights.start_from(experiment, "torchvision")

is what `--pretrained=torchvision` does on the command line (main.py calls the same
resolve and follow_weights).
"""
import dataclasses
import os

from absl import logging

from input_pipeline import constants
from official_resnet import run_state
from official_resnet.models import torch_files
from official_resnet.models import torch_weights
from official_resnet.models import weight_sources
from official_resnet.models import weights as weights_lib

# timm keeps its preprocessing in this file beside model.safetensors.
TIMM_CONFIG_FILE = "config.json"
# The "section.field" settings weights can imply.
IMPLIED_FIELDS = ("data.normalization", "model.conv_padding", "model.pool_padding",
                  "data.eval_resize_size", "data.eval_resize_method")


def weights_info(path) -> weight_sources.WeightsInfo:
  """What the weights at `path` were trained with, as far as the file says.

  A .h5 file counts as keras.applications weights (a .weights.h5 file only for the
  normalization); a .pth/.pt/.bin/.safetensors file as torchvision or timm weights (torch
  normalization, symmetric padding), with timm's preprocessing when its config.json lies
  beside it, and a torchvision set's published eval when it has that set's file name; a
  checkpoint of ours says it in its model_dir's config.json, when that is there.
  """
  path = weights_lib.resolve_path(path)
  if path.endswith(".weights.h5"):
    # Keras 3 writes these for any model, ours too: only the normalization is assumed.
    return weight_sources.WeightsInfo(normalization="caffe", source=path)
  if path.endswith(".h5"):
    return weight_sources.KERAS_APPLICATIONS_INFO
  if torch_files.is_torch_file(path):
    timm_config = os.path.join(os.path.dirname(path), TIMM_CONFIG_FILE)
    if os.path.isfile(timm_config):
      config, info = weight_sources.read_timm_config(timm_config, path)
      # Another config.json (a run of ours keeps one in its model_dir) says nothing here.
      if "pretrained_cfg" in config:
        return info
    return weight_sources.torchvision_file_info(path) or weight_sources.TORCH_INFO
  try:
    run_config = run_state.read_run_config(os.path.dirname(path))
  except FileNotFoundError:
    return weight_sources.WeightsInfo(source=path)
  data = run_config.data
  return weight_sources.WeightsInfo(
      normalization=data.normalization, variant=run_config.model.variant,
      conv_padding=run_config.model.conv_padding,
      pool_padding=run_config.model.pool_padding,
      eval_resize=data.eval_resize_size,
      eval_crop=data.image_size if data.eval_resize_size else None,
      eval_resize_method=data.eval_resize_method, source=path)


def vgg_layout(path):
  """The torch_weights.VggLayout of a torch or safetensors VGG file (read from its pickle or
  header alone); None for other files."""
  if not torch_files.is_torch_file(path):
    return None
  return torch_weights.vgg_layout(torch_files.read_shapes(path))


def resolve(weights, *, architecture, variant=None, vgg_batch_norm=False,
            num_classes=constants.IMAGENET_NUM_CLASSES):
  """(path, WeightsInfo) of `weights` for the model.

  `weights`: a name (imagenet, torchvision[:WEIGHTS], hf://ORG/REPO; weight_sources),
  resolved to its local file, downloaded if need be; or a path (a weights file, a
  checkpoint prefix or model_dir of ours), kept as given. A ResNet of another variant
  than the weights' raises ValueError.
  """
  if weight_sources.is_named(weights):
    return weight_sources.resolve(weights, architecture=architecture, variant=variant,
                                  vgg_batch_norm=vgg_batch_norm, num_classes=num_classes)
  info = weights_info(weights)
  if variant:
    weight_sources.check_variant(info, architecture, variant)
  return os.fspath(weights), info


def implied_settings(info, data):
  """{"section.field": value} of the IMPLIED_FIELDS that weights with `info` say, for a run
  with DataConfig `data` (the published eval resize is scaled to data.eval_size)."""
  settings = {"data.normalization": info.normalization,
              "model.conv_padding": info.conv_padding,
              "model.pool_padding": info.pool_padding,
              "data.eval_resize_size": info.eval_resize_size(data.eval_size),
              "data.eval_resize_method": info.eval_resize_method}
  return {field: value for field, value in settings.items() if value is not None}


def follow_weights(experiment, info, *, keep=()):
  """`experiment` with the settings weights described by `info` imply (implied_settings).

  keep: "section.field" names the caller chose, left as they are. The eval resize is
  also left to an eval_crop_fraction set away from its default, which sets the shorter
  side itself. A model that normalizes its own input (input_normalization) follows the
  data's normalization.
  """
  settings = implied_settings(info, experiment.data)
  if experiment.data.eval_crop_fraction != constants.EVAL_CROP_FRACTION:
    settings.pop("data.eval_resize_size", None)
  settings = {field: value for field, value in settings.items() if field not in keep}
  weights = experiment.train.init_checkpoint
  if "data.normalization" in settings:
    logging.info("Normalization %s, what %s was trained with.", settings["data.normalization"],
                 weights or info.source)
  elif weights and "data.normalization" not in keep:
    logging.warning("%s does not say its normalization (an init checkpoint without the "
                    "config.json of its run beside it?): using normalization=%s; set it to match "
                    "the weights.", weights, experiment.data.normalization)
  sections = {"data": {}, "model": {}}
  for field, value in settings.items():
    section, name = field.split(".")
    sections[section][name] = value
  if "normalization" in sections["data"] and experiment.model.input_normalization is not None:
    sections["model"]["input_normalization"] = sections["data"]["normalization"]
  return dataclasses.replace(
      experiment, data=dataclasses.replace(experiment.data, **sections["data"]),
      model=dataclasses.replace(experiment.model, **sections["model"]))


def start_from(experiment, weights, *, keep=()):
  """`experiment` training from `weights` (a name or a path, as resolve takes them): its
  train.init_checkpoint the weights' file, and the settings they imply (follow_weights),
  except the "section.field" names in `keep`."""
  model = experiment.model
  path, info = resolve(weights, architecture=model.architecture, variant=model.variant,
                       vgg_batch_norm=model.vgg_batch_norm, num_classes=model.num_classes)
  experiment = dataclasses.replace(
      experiment, train=dataclasses.replace(experiment.train, init_checkpoint=path))
  return follow_weights(experiment, info, keep=keep)

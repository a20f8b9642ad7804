"""Named weight sets, where their files are, and what travels with a set of weights.

Names:
  imagenet                    keras.applications' file for the architecture (ResNet v1
                              50/101/152, VGG16/19): with top for a 1000-class model,
                              else the no-top file
  torchvision[:WEIGHTS]       torchvision's file, WEIGHTS as its enum names it
                              (IMAGENET1K_V1, IMAGENET1K_V2); alone: its DEFAULT
  hf://ORG/REPO               a timm repository of the Hugging Face hub (model.safetensors
                              and config.json), through the hub client and its cache

URLs and hashes are keras.applications' and torchvision's own (a test compares them
with theirs). A file is looked up first where those libraries keep it:
$KERAS_HOME/models (default ~/.keras/models) and $TORCH_HOME/hub/checkpoints (default
$XDG_CACHE_HOME/torch or ~/.cache/torch); else it is downloaded there with a progress bar.
Either way its hash is checked. Offline without the file, the error names the URL and
the path to put it at.
"""
import dataclasses
import hashlib
import json
import math
import os
import re

import keras
from absl import logging

from input_pipeline import constants

IMAGENET = "imagenet"
TORCHVISION = "torchvision"
HF_PREFIX = "hf://"
KERAS_APPLICATIONS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
TORCHVISION_URL = "https://download.pytorch.org/models/"
HF_FILES = ("config.json", "model.safetensors")
# torch.hub's rule: the hex digits after the last "-" of the file name start its sha256.
TORCH_HASH = re.compile(r"-([a-f0-9]+)\.")

# Architecture -> (file with top, its md5, no-top file, its md5), as keras.applications has them.
KERAS_APPLICATIONS = {
    "resnet50": ("resnet/resnet50_weights_tf_dim_ordering_tf_kernels.h5",
                 "2cb95161c43110f7111970584f804107",
                 "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 "4d473c1dd8becc155b73f8504c6f6626"),
    "resnet101": ("resnet/resnet101_weights_tf_dim_ordering_tf_kernels.h5",
                  "f1aeb4b969a6efcfb50fad2f0c20cfc5",
                  "resnet/resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
                  "88cf7a10940856eca736dc7b7e228a21"),
    "resnet152": ("resnet/resnet152_weights_tf_dim_ordering_tf_kernels.h5",
                  "100835be76be38e30d865e96f2aaae62",
                  "resnet/resnet152_weights_tf_dim_ordering_tf_kernels_notop.h5",
                  "ee4c566cf9a93f14d82f913c2dc6dd0c"),
    "vgg16": ("vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5",
              "64373286793e3c8b2b4e3219cbf3544b",
              "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
              "6d6bbae143d832006294945121d1f1fc"),
    "vgg19": ("vgg19/vgg19_weights_tf_dim_ordering_tf_kernels.h5",
              "cbe5617147190e668d6c5d5026f83318",
              "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
              "253f8cb515780f3b799900260a226db6"),
}
# Architecture (VGG with BatchNorm: "_bn") -> {torchvision weights name: (file, eval resize)};
# every one evaluates a 224 centre crop of a bilinear, antialiased resize.
TORCHVISION_WEIGHTS = {
    "resnet18": {"IMAGENET1K_V1": ("resnet18-f37072fd.pth", 256)},
    "resnet34": {"IMAGENET1K_V1": ("resnet34-b627a593.pth", 256)},
    "resnet50": {"IMAGENET1K_V1": ("resnet50-0676ba61.pth", 256),
                 "IMAGENET1K_V2": ("resnet50-11ad3fa6.pth", 232)},
    "resnet101": {"IMAGENET1K_V1": ("resnet101-63fe2227.pth", 256),
                  "IMAGENET1K_V2": ("resnet101-cd907fc2.pth", 232)},
    "resnet152": {"IMAGENET1K_V1": ("resnet152-394f9c45.pth", 256),
                  "IMAGENET1K_V2": ("resnet152-f82ba261.pth", 232)},
    "vgg16": {"IMAGENET1K_V1": ("vgg16-397923af.pth", 256)},
    "vgg16_bn": {"IMAGENET1K_V1": ("vgg16_bn-6c64b313.pth", 256)},
    "vgg19": {"IMAGENET1K_V1": ("vgg19-dcbb9e9d.pth", 256)},
    "vgg19_bn": {"IMAGENET1K_V1": ("vgg19_bn-c79401a0.pth", 256)},
}
TORCHVISION_PUBLISHED_CROP = 224
# timm's pretrained_cfg "interpolation" -> our eval resize method (timm resizes PIL images,
# which always antialias).
TIMM_INTERPOLATIONS = {"bilinear": "bilinear_antialias", "bicubic": "bicubic_antialias"}
# pretrained_cfg (mean, std) -> our normalization.
NORMALIZATIONS_BY_STATISTICS = {
    (constants.TORCH_MEANS, constants.TORCH_STDS): "torch",
    ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)): "unit",
}


@dataclasses.dataclass(frozen=True)
class WeightsInfo:
  """What a set of weights was trained and published with; None where it does not say."""
  # input_pipeline normalization mode.
  normalization: str | None = None
  # The ResNet variant the set is ("v1": keras.applications, "v1.5": torchvision and timm).
  variant: str | None = None
  # models.config.CONV_PADDINGS of ResNet's strided convolutions.
  conv_padding: str | None = None
  # models.config.POOL_PADDINGS of ResNet's stem max pool.
  pool_padding: str | None = None
  # Published evaluation: the shorter side resized to eval_resize with eval_resize_method
  # (input_pipeline EVAL_RESIZE_METHODS), then the centre eval_crop x eval_crop.
  eval_resize: int | None = None
  eval_crop: int | None = None
  eval_resize_method: str | None = None
  # Where the weights come from, for messages.
  source: str = ""

  def eval_resize_size(self, image_size):
    """The published resize scaled to `image_size`; None when unknown."""
    if self.eval_resize is None:
      return None
    return round(self.eval_resize * image_size / self.eval_crop)


KERAS_APPLICATIONS_INFO = WeightsInfo(normalization="caffe", variant="v1", conv_padding="same",
                                      pool_padding="symmetric",
                                      source="keras.applications")
# torchvision/timm weights without a published protocol at hand (a file given by path).
TORCH_INFO = WeightsInfo(normalization="torch", variant="v1.5", conv_padding="symmetric",
                         pool_padding="symmetric",
                         source="torchvision/timm")


def is_named(source) -> bool:
  source = os.fspath(source)
  return source in (IMAGENET, TORCHVISION) or source.startswith((f"{TORCHVISION}:", HF_PREFIX))


def keras_cache_dir():
  return os.path.join(os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras")),
                      "models")


def torch_cache_dir():
  """torch.hub's checkpoint folder, with its environment overrides."""
  default_home = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache")), "torch")
  return os.path.join(os.path.expanduser(os.environ.get("TORCH_HOME", default_home)), "hub",
                      "checkpoints")


def _digest(path, algorithm):
  digest = hashlib.new(algorithm)
  with open(path, "rb") as file:
    for chunk in iter(lambda: file.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def _check_hash(path, url, algorithm, expected):
  digest = _digest(path, algorithm)
  if not digest.startswith(expected):
    wanted = expected if len(expected) == len(digest) else f"one starting {expected}"
    raise ValueError(f"{path} is not the file {url} names: its {algorithm} is {digest}, "
                     f"expected {wanted}. Delete it to download it again, or put the right file "
                     f"there. Received: {path!r}")


def fetch(url, path, algorithm, expected_hash):
  """`path` when it is there, else `url` downloaded to it; its hash checked either way."""
  if os.path.isfile(path):
    _check_hash(path, url, algorithm, expected_hash)
    return path
  logging.info("Downloading %s to %s.", url, path)
  # get_file puts the file under /tmp when the folder it is given is not there yet.
  os.makedirs(os.path.dirname(path), exist_ok=True)
  try:
    downloaded = keras.utils.get_file(fname=os.path.basename(path), origin=url,
                                      cache_dir=os.path.dirname(os.path.dirname(path)),
                                      cache_subdir=os.path.basename(os.path.dirname(path)))
  except Exception as error:  # get_file raises a bare Exception for every failed fetch.
    reason = " ".join(str(error).split())
    raise ValueError(f"Cannot download {url} ({reason}). Without network, download it "
                     f"elsewhere and put it at {path}. Received: {url!r}") from error
  try:
    _check_hash(downloaded, url, algorithm, expected_hash)
  except ValueError:
    os.remove(downloaded)
    raise
  return downloaded


def _architecture_key(architecture, vgg_batch_norm):
  return f"{architecture}_bn" if vgg_batch_norm and architecture.startswith("vgg") else architecture


def _keras_applications(architecture, vgg_batch_norm, num_classes):
  key = _architecture_key(architecture, vgg_batch_norm)
  if key not in KERAS_APPLICATIONS:
    raise ValueError(f"`imagenet` weights (keras.applications) exist for {tuple(KERAS_APPLICATIONS)}; "
                     f"use `torchvision` for the others. Received: architecture={key!r}")
  top_file, top_md5, no_top_file, no_top_md5 = KERAS_APPLICATIONS[key]
  file, md5 = (top_file, top_md5) if num_classes == constants.IMAGENET_NUM_CLASSES else (
      no_top_file, no_top_md5)
  download = (KERAS_APPLICATIONS_URL + file,
              os.path.join(keras_cache_dir(), os.path.basename(file)), "md5", md5)
  return download, dataclasses.replace(KERAS_APPLICATIONS_INFO, source=f"keras.applications {key}")


def _torchvision(name, architecture, vgg_batch_norm):
  key = _architecture_key(architecture, vgg_batch_norm)
  sets = TORCHVISION_WEIGHTS.get(key)
  if sets is None:
    raise ValueError(f"torchvision weights exist for {tuple(TORCHVISION_WEIGHTS)}. "
                     f"Received: architecture={key!r}")
  # Alone, torchvision's DEFAULT: the last (best) set of the architecture.
  weights_name = name.partition(":")[2] or list(sets)[-1]
  if weights_name not in sets:
    raise ValueError(f"torchvision's {key} weights are {tuple(sets)}. "
                     f"Received: {TORCHVISION}:{weights_name}")
  file, resize = sets[weights_name]
  download = (TORCHVISION_URL + file, os.path.join(torch_cache_dir(), file), "sha256",
              TORCH_HASH.search(file).group(1))
  return download, _torchvision_info(key, weights_name, resize)


def _torchvision_info(key, weights_name, resize):
  return dataclasses.replace(
      TORCH_INFO, eval_resize=resize, eval_crop=TORCHVISION_PUBLISHED_CROP,
      eval_resize_method="bilinear_antialias", source=f"torchvision {key} {weights_name}")


def torchvision_file_info(path):
  """The WeightsInfo of the torchvision set whose file name `path` has (resnet50-11ad3fa6.pth:
  resnet50 IMAGENET1K_V2), the same as by name; None for another name."""
  file_name = os.path.basename(os.fspath(path))
  for key, sets in TORCHVISION_WEIGHTS.items():
    for weights_name, (file, resize) in sets.items():
      if file == file_name:
        return _torchvision_info(key, weights_name, resize)
  return None


def timm_info(config, source):
  """WeightsInfo from a timm config.json ({"architecture", "pretrained_cfg": {...}})."""
  pretrained = config.get("pretrained_cfg", {})
  statistics = (tuple(pretrained.get("mean", ())), tuple(pretrained.get("std", ())))
  crop = pretrained.get("input_size", (3, TORCHVISION_PUBLISHED_CROP, 0))[1]
  crop_pct = pretrained.get("crop_pct")
  return dataclasses.replace(
      TORCH_INFO, normalization=NORMALIZATIONS_BY_STATISTICS.get(statistics),
      # timm's eval transform: scale_size = floor(img_size / crop_pct).
      eval_resize=math.floor(crop / crop_pct) if crop_pct else None,
      eval_crop=crop if crop_pct else None,
      eval_resize_method=TIMM_INTERPOLATIONS.get(pretrained.get("interpolation")),
      source=f"timm {config.get('architecture')} ({source})")


def _hub_download(repo_id, filename):
  # Imported here: an extra (official_resnet[hub]) that only hf:// names need.
  try:
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError
  except ImportError as error:
    raise ValueError("hf:// weights need the huggingface_hub package: "
                     "pip install 'official_resnet[hub]'. Received: hf://" + repo_id) from error
  try:
    return huggingface_hub.hf_hub_download(repo_id, filename, local_files_only=True)
  except LocalEntryNotFoundError:
    pass
  url = f"https://huggingface.co/{repo_id}/resolve/main/{filename}"
  try:
    return huggingface_hub.hf_hub_download(repo_id, filename)
  except Exception as error:  # Network, authentication and missing-file errors alike.
    reason = " ".join(str(error).split())[:300]
    raise ValueError(
        f"Cannot download {url} ({reason}). Without network, download "
        f"{' and '.join(HF_FILES)} from https://huggingface.co/{repo_id} elsewhere into one "
        f"folder and give --pretrained=<folder>/model.safetensors. Received: hf://{repo_id}"
    ) from error


def _hub(name, architecture, vgg_batch_norm):
  repo_id = name[len(HF_PREFIX):]
  paths = {filename: _hub_download(repo_id, filename) for filename in HF_FILES}
  config, info = read_timm_config(paths["config.json"], name)
  _check_timm_architecture(config, architecture, vgg_batch_norm, name)
  return paths["model.safetensors"], info


def read_timm_config(path, source):
  with open(path, encoding="utf-8") as file:
    config = json.load(file)
  return config, timm_info(config, source)


def _check_timm_architecture(config, architecture, vgg_batch_norm, source):
  key = _architecture_key(architecture, vgg_batch_norm)
  if config.get("architecture") != key:
    raise ValueError(f"{source} holds a timm {config.get('architecture')!r}; the model is {key}. "
                     f"Received: --architecture={architecture}"
                     f"{' --vgg_batch_norm' if vgg_batch_norm else ''}")


def resolve(name, *, architecture, variant=None, vgg_batch_norm=False, num_classes=1000):
  """(local file, WeightsInfo) of a named set for the model (see the module docstring).

  With `variant`, a ResNet of another variant than the set's is refused before any download.
  """
  name = os.fspath(name)
  if name == IMAGENET:
    download, info = _keras_applications(architecture, vgg_batch_norm, num_classes)
  elif name == TORCHVISION or name.startswith(f"{TORCHVISION}:"):
    download, info = _torchvision(name, architecture, vgg_batch_norm)
  elif name.startswith(HF_PREFIX) and name.count("/") == 3:
    path, info = _hub(name, architecture, vgg_batch_norm)
    if variant:
      check_variant(info, architecture, variant)
    return path, info
  else:
    raise ValueError(f"Weights names are {IMAGENET!r}, {TORCHVISION!r}, "
                     f"'{TORCHVISION}:<WEIGHTS>' and '{HF_PREFIX}<org>/<repo>'. Received: {name!r}")
  if variant:
    check_variant(info, architecture, variant)
  return fetch(*download), info


def check_variant(info, architecture, variant):
  """ValueError when a ResNet's variant is not the one its weights were trained as."""
  if architecture.startswith("resnet") and info.variant and info.variant != variant:
    raise ValueError(f"{info.source} weights are ResNet {info.variant}: leave --variant out "
                     f"(it follows the weights) or give --variant={info.variant}. "
                     f"Received: --variant={variant}")

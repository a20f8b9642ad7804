"""torchvision and timm ResNet/VGG state_dicts: their names and layouts turned into our layers'.

keras-hub's timm converters (utils/timm/convert_resnet.py, convert_vgg.py) port the
same names layer by layer from the model's side. Here the mapping runs from the
file's side, so that a key the model has no layer for is named in the error
instead of being left behind unnoticed.

Names. torchvision and timm ResNets share them:
  conv1, bn1                      -> conv1_conv, conv1_bn
  layer{s}.{b}.conv{i}, .bn{i}    -> conv{s+1}_block{b+1}_{i}_conv, _{i}_bn
  layer{s}.{b}.downsample.0, .1   -> conv{s+1}_block{b+1}_0_conv, _0_bn
  fc                              -> predictions
VGG: `features.{n}` is the n-th module of torchvision's Sequential (per convolution:
conv, [BatchNorm,] ReLU; per block: a max pool) -> block{k}_conv{j}[_bn]; the head
is classifier.0, .3, .6 (torchvision) or pre_logits.fc1, .fc2, head.fc (timm) ->
fc1, fc2, predictions.

Layouts. Convolution kernels O,I,H,W -> H,W,I,O; dense O,I -> I,O; BatchNorm
weight, bias, running_mean, running_var -> gamma, beta, moving_mean,
moving_variance. torchvision's vgg*_bn keep a bias in each convolution, which the
BatchNorm after it makes redundant; ours have none, so the bias is folded into that
BatchNorm's moving mean (the same outputs in inference; in training BatchNorm
subtracts the batch mean, bias or not). The first dense layer after a flatten reads [C, H, W] in torch
and [H, W, C] here, so its rows are reordered; timm's fc1 is a convolution over
the whole 7x7 map, the same dense layer with its kernel in H,W,C order already.
"""
import collections
import dataclasses
import re

import keras
import numpy as np

from official_resnet.models import vgg

# Counters torch keeps beside the weights; they hold no weights.
BOOKKEEPING_PARAMETERS = ("num_batches_tracked",)
HEAD_NAMES = {
    "fc": "predictions",
    "classifier.0": "fc1", "classifier.3": "fc2", "classifier.6": "predictions",
    "pre_logits.fc1": "fc1", "pre_logits.fc2": "fc2", "head.fc": "predictions",
}
STEM_NAMES = {"conv1": "conv1_conv", "bn1": "conv1_bn"}
RESNET_BLOCK = re.compile(r"layer(\d+)\.(\d+)\.(conv|bn)(\d)")
RESNET_DOWNSAMPLE = re.compile(r"layer(\d+)\.(\d+)\.downsample\.([01])")
VGG_BATCH_NORM_KEY = re.compile(r"features\.\d+\.running_var")
# The hidden layers of VGG's classic head: torchvision's, timm's.
VGG_HIDDEN_LAYERS = (("classifier.0", "classifier.3"), ("pre_logits.fc1", "pre_logits.fc2"))
# torch parameter -> our variable, per kind of layer.
VARIABLE_NAMES = {
    "batch_norm": {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                   "running_var": "moving_variance"},
    "conv_or_dense": {"weight": "kernel", "bias": "bias"},
}


def vgg_feature_names(depth, batch_norm):
  """{"features.N": our layer name} for torchvision's VGG `features` Sequential."""
  names, index = {}, 0
  for stage, (_, convs) in zip(vgg.STAGES, vgg.BLOCKS[depth]):
    for conv in range(1, convs + 1):
      names[f"features.{index}"] = f"{stage}_conv{conv}"
      if batch_norm:
        names[f"features.{index + 1}"] = f"{stage}_conv{conv}_bn"
      index += 3 if batch_norm else 2  # The ReLU holds no weights.
    index += 1  # Max pool.
  return names


def _model_vgg_feature_names(layer_names):
  if "block1_conv1" not in layer_names:
    return {}
  depth = 19 if "block3_conv4" in layer_names else 16
  return vgg_feature_names(depth, "block1_conv1_bn" in layer_names)


@dataclasses.dataclass(frozen=True)
class VggLayout:
  """What a VGG state_dict holds, beyond the depth."""
  # BatchNorm after each convolution (torchvision's vgg*_bn, timm's vgg*_bn).
  batch_norm: bool
  # Widths of the classic head's hidden layers (4096, 4096); () when the file has none.
  hidden_units: tuple[int, ...]
  # The key that shows each, for messages.
  batch_norm_key: str | None
  hidden_keys: tuple[str, ...]


def vgg_layout(shapes):
  """The VggLayout of a state_dict's {name: shape}; None when it holds no VGG `features`."""
  if not any(name.startswith("features.") for name in shapes):
    return None
  batch_norm_key = next((name for name in shapes if VGG_BATCH_NORM_KEY.fullmatch(name)), None)
  for layers in VGG_HIDDEN_LAYERS:
    keys = tuple(f"{layer}.weight" for layer in layers)
    if all(key in shapes for key in keys):
      return VggLayout(batch_norm_key is not None, tuple(shapes[key][0] for key in keys),
                       batch_norm_key, keys)
  return VggLayout(batch_norm_key is not None, (), batch_norm_key, ())


def layer_name(module, vgg_features):
  """Our layer for a torch module name, or None when there is none."""
  if module in STEM_NAMES:
    return STEM_NAMES[module]
  if module in HEAD_NAMES:
    return HEAD_NAMES[module]
  match = RESNET_BLOCK.fullmatch(module)
  if match:
    stage, block, kind, index = match.groups()
    return f"conv{int(stage) + 1}_block{int(block) + 1}_{index}_{kind}"
  match = RESNET_DOWNSAMPLE.fullmatch(module)
  if match:
    stage, block, index = match.groups()
    return f"conv{int(stage) + 1}_block{int(block) + 1}_0_{'conv' if index == '0' else 'bn'}"
  return vgg_features.get(module)


def _flatten_input(model):
  """(name of the first Dense after a Flatten of a feature map, that map's H, W, C) or None."""
  for index, layer in enumerate(model.layers):
    if isinstance(layer, keras.layers.Flatten) and len(layer.input.shape) == 4:
      shape = tuple(layer.input.shape[1:])
      height_width_channels = shape if layer.data_format == "channels_last" else (
          shape[1], shape[2], shape[0])
      dense = [later for later in model.layers[index + 1:]
               if isinstance(later, keras.layers.Dense)]
      return (dense[0].name, height_width_channels) if dense else None
  return None


def _kernel(weight, target, flatten_shape):
  if weight.ndim == 4:
    kernel = weight.transpose(2, 3, 1, 0)
    # A convolution standing for a dense layer (timm's VGG head): rows in H, W, C order.
    return kernel.reshape(-1, kernel.shape[-1]) if isinstance(target, keras.layers.Dense) else kernel
  if weight.ndim == 2:
    if flatten_shape is not None and weight.shape[1] == np.prod(flatten_shape):
      height, width, channels = flatten_shape
      return (weight.reshape(-1, channels, height, width).transpose(2, 3, 1, 0)
              .reshape(height * width * channels, -1))
    return weight.T
  return weight


def _convert(parameters, target, flatten_shape):
  """[(our variable name, array)] for one torch module's {parameter: array}."""
  weight = parameters.get("weight")
  is_batch_norm = ("running_mean" in parameters or "running_var" in parameters
                   or (weight is not None and weight.ndim == 1))
  names = VARIABLE_NAMES["batch_norm" if is_batch_norm else "conv_or_dense"]
  converted = []
  # In our variables' order whatever the file's (safetensors sorts its keys).
  order = list(names)
  for parameter, array in sorted(parameters.items(), key=lambda item: (
      order.index(item[0]) if item[0] in order else len(order), item[0])):
    array = np.asarray(array, np.float32)
    if parameter == "weight" and not is_batch_norm:
      array = _kernel(array, target, flatten_shape)
    # A parameter of another name keeps it, so the error shows it.
    converted.append((names.get(parameter, parameter), array))
  return tuple(converted)


def layer_weights(state_dict, model):
  """{our layer name: (torch module name, ((variable name, array), ...))} for `state_dict`.

  A module without a layer of ours keeps its torch name as the layer name, which
  no layer has, so loading names it.
  """
  modules = collections.defaultdict(dict)
  for key, array in state_dict.items():
    module, _, parameter = key.rpartition(".")
    if parameter not in BOOKKEEPING_PARAMETERS:
      modules[module][parameter] = array
  layers = {layer.name: layer for layer in model.layers}
  vgg_features = _model_vgg_feature_names(layers)
  flatten_dense, flatten_shape = _flatten_input(model) or (None, None)
  converted = {}
  for module, parameters in modules.items():
    name = layer_name(module, vgg_features) or module
    if name in converted:
      raise ValueError(f"The file holds two modules for layer {name!r}: "
                       f"{converted[name][0]!r} and {module!r}. Received: both")
    converted[name] = (module, _convert(parameters, layers.get(name),
                                        flatten_shape if name == flatten_dense else None))
  for name, layer in layers.items():
    if isinstance(layer, keras.layers.Conv2D) and not layer.use_bias:
      _fold_bias(converted, name)
  return converted


def _fold_bias(converted, conv_name):
  """Moves a file's conv bias into the moving mean of the BatchNorm `{conv_name}_bn`."""
  conv, batch_norm = converted.get(conv_name), converted.get(f"{conv_name}_bn")
  if conv is None or batch_norm is None:
    return
  conv_weights, batch_norm_weights = dict(conv[1]), dict(batch_norm[1])
  if "bias" not in conv_weights or "moving_mean" not in batch_norm_weights:
    return
  bias = conv_weights.pop("bias")
  batch_norm_weights["moving_mean"] = batch_norm_weights["moving_mean"] - bias
  converted[conv_name] = (conv[0], tuple(conv_weights.items()))
  converted[f"{conv_name}_bn"] = (batch_norm[0], tuple(batch_norm_weights.items()))

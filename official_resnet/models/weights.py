"""load_pretrained: weights from keras.applications, torchvision and timm files and our checkpoints.

Four sources, one matching rule set:
- legacy `.h5` (what keras.applications distributes, with or without top) and
  our trainer's checkpoints (a `ckpt-N` prefix or a model_dir): matched by
  layer name;
- a torchvision or timm state_dict, `.pth`/`.pt`/`.bin` of torch.save or `.safetensors`:
  read without torch and without running pickled code (torch_files), its names
  and layouts turned into our layers' (torch_weights), then matched by layer name;
- Keras 3 `.weights.h5`: it stores no layer names (keys are per-class counters
  such as `conv2d_3` in `model.layers` order), so layers match by order among
  layers of the same kind (convolution, BatchNorm, dense).
Weightless layers (input normalization) may differ between file and model.
Dense (head) layers without a counterpart on either side are skipped, which is
how a no-top file fills a model with a new head; `load_head=False` skips the
model's head even where the file has one (fine-tuning to another class count).
Any other missing or extra layer, or any shape or weight-count difference, is an
error naming the first mismatching layer and both shapes. Nothing is assigned
unless the whole file fits.
"""
import collections
import dataclasses
import os

import h5py
import keras
import numpy as np
import tensorflow as tf
from absl import logging

from official_resnet import private_apis
from official_resnet.models import torch_files
from official_resnet.models import torch_weights

LAYER_KINDS = {keras.layers.Conv2D: "conv", keras.layers.BatchNormalization: "batch_norm",
               keras.layers.Dense: "dense"}
# Keras 3 .weights.h5 group names: snake-cased class name plus a counter.
WEIGHTS_H5_KINDS = {"conv2d": "conv", "batch_normalization": "batch_norm",
                    "fused_batch_normalization": "batch_norm", "dense": "dense"}


@dataclasses.dataclass(frozen=True)
class Entry:
  """One layer's weights in a file, in the layer's variable order."""
  key: str
  kind: str
  # (variable name or None where the format stores none, array-like)
  weights: tuple[tuple[str | None, object], ...]

  def shapes(self):
    return _shapes(self.weights)


def _shapes(weights):
  return [tuple(array.shape) for _, array in weights]


def _kind_of_layer(layer):
  for layer_class, kind in LAYER_KINDS.items():
    if isinstance(layer, layer_class):
      return kind
  return None


def _kind_of_weights(shapes):
  ranks = {len(shape) for shape in shapes}
  return "conv" if 4 in ranks else "dense" if 2 in ranks else "batch_norm"


def _decode(value):
  return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _legacy_h5_entries(h5_file):
  root = h5_file["model_weights"] if "model_weights" in h5_file else h5_file
  entries = {}
  for layer_name in map(_decode, root.attrs["layer_names"]):
    group = root[layer_name]
    # Matched by position within the layer, as Keras' own loader does: names vary by
    # Keras version ("conv1_conv/kernel:0", Keras 1's "block1_conv1_W_1:0").
    weights = tuple((None, group[_decode(name)]) for name in group.attrs["weight_names"])
    if weights:
      entries[layer_name] = Entry(layer_name, _kind_of_weights(_shapes(weights)), weights)
  return entries


def _counter(group_name):
  base, _, suffix = group_name.rpartition("_")
  return (base, int(suffix)) if suffix.isdigit() and base else (group_name, 0)


def _weights_h5_entries(h5_file):
  entries = []
  for group_name in sorted(h5_file["layers"], key=_counter):
    base, _ = _counter(group_name)
    variables = h5_file["layers"][group_name].get("vars")
    if base not in WEIGHTS_H5_KINDS or not variables:
      continue
    weights = tuple((None, variables[str(index)]) for index in range(len(variables)))
    entries.append(Entry(f"layers/{group_name}", WEIGHTS_H5_KINDS[base], weights))
  return entries


def _child(graph, node_id, name):
  for child in graph.nodes[node_id].children:
    if child.local_name == name:
      return child.node_id
  return None


def _checkpoint_entries(prefix):
  """Entries by layer name, read from the checkpoint's object graph.

  Variable keys alone do not do: a variable the optimizer also tracks may be
  stored under `optimizer/_trainable_variables/N`. The object graph lists each
  layer of `model/_operations` with its variables' full names (`conv1_conv/kernel`)
  and where their values are stored.
  """
  reader = tf.train.load_checkpoint(prefix)
  graph = private_apis.checkpoint_object_graph(reader)
  model_node = _child(graph, 0, "model")
  operations_node = None if model_node is None else _child(graph, model_node, "_operations")
  if operations_node is None:
    raise ValueError("`path` must be a checkpoint of tf.train.Checkpoint(model=...) as the trainer "
                     f"writes it. Received: path={prefix!r} without a `model`.")
  weights_by_layer = collections.defaultdict(list)
  for operation in graph.nodes[operations_node].children:
    for variable in graph.nodes[operation.node_id].children:
      for attribute in graph.nodes[variable.node_id].attributes:
        layer_name, _, variable_name = attribute.full_name.rpartition("/")
        weights_by_layer[layer_name].append(
            (variable_name, reader.get_tensor(attribute.checkpoint_key)))
  return {name: Entry(name, _kind_of_weights(_shapes(weights)), tuple(weights))
          for name, weights in weights_by_layer.items()}


def _torch_entries(model, path):
  """Entries by our layer name, keyed by the torch module they come from."""
  state_dict = torch_files.read_state_dict(path)
  return {name: Entry(module, _kind_of_weights(_shapes(weights)), weights)
          for name, (module, weights) in torch_weights.layer_weights(state_dict, model).items()}


def _check_fits(layer, entry, path):
  """[(variable, array)] for `layer` from `entry`, or ValueError naming both shapes."""
  # weights, not variables: Keras 3 keeps a Dropout's seed-generator state in its variables.
  variables = layer.weights
  model_names = [variable.name for variable in variables]
  model_shapes = [tuple(variable.shape) for variable in variables]
  file_names = [name for name, _ in entry.weights]
  if None in file_names:
    arrays = [array for _, array in entry.weights]
  elif sorted(file_names) == sorted(model_names):
    arrays = [dict(entry.weights)[name] for name in model_names]
  else:
    raise ValueError(
        f"Weights in {path} do not fit the model: layer {layer.name!r} has variables "
        f"{model_names} with shapes {model_shapes}. Received: {entry.key!r} with variables "
        f"{file_names} and shapes {entry.shapes()}.")
  file_shapes = [tuple(array.shape) for array in arrays]
  if model_shapes != file_shapes:
    raise ValueError(
        f"Weights in {path} do not fit the model: layer {layer.name!r} expects shapes "
        f"{model_shapes}. Received: {entry.key!r} with shapes {file_shapes}.")
  return list(zip(variables, arrays))


def _match_by_name(layers, entries):
  """({layer name: entry}, unused entries) for entries keyed by layer name."""
  names = {layer.name for layer in layers}
  matched = {layer.name: entries[layer.name] for layer in layers if layer.name in entries}
  return matched, [entry for name, entry in entries.items() if name not in names]


def _match_by_order(layers, entries):
  """({layer name: entry}, unused entries), pairing the n-th layer and entry of each kind."""
  matched, unused = {}, []
  for kind in ("conv", "batch_norm", "dense"):
    kind_layers = [layer for layer in layers if _kind_of_layer(layer) == kind]
    kind_entries = [entry for entry in entries if entry.kind == kind]
    matched.update((layer.name, entry) for layer, entry in zip(kind_layers, kind_entries))
    unused.extend(kind_entries[len(kind_layers):])
  return matched, unused


def _assign(model, entries, match, path, load_head):
  layers = [layer for layer in model.layers
            if layer.weights and (load_head or _kind_of_layer(layer) != "dense")]
  matched, unused = match(layers, entries)
  assignments = []
  # Model order, so the error names the first layer that does not fit.
  for layer in layers:
    if layer.name in matched:
      assignments.extend(_check_fits(layer, matched[layer.name], path))
    elif _kind_of_layer(layer) != "dense":
      raise ValueError(
          f"Weights in {path} do not fit the model: layer {layer.name!r} with shapes "
          f"{[tuple(variable.shape) for variable in layer.weights]} has no counterpart. "
          f"Received: a file without it (other architecture or depth?).")
  for entry in unused:
    if entry.kind != "dense":
      raise ValueError(
          f"Weights in {path} do not fit the model: the model has no layer for {entry.key!r}. "
          f"Received: {entry.key!r} with shapes {entry.shapes()} (other architecture or depth?).")
  for variable, array in assignments:
    variable.assign(np.asarray(array))
  head = [layer.name for layer in model.layers
          if layer.weights and _kind_of_layer(layer) == "dense" and layer.name not in matched]
  logging.info("Loaded %d variables into %s from %s; %s.", len(assignments), model.name, path,
               f"head layers {head} keep their fresh initialization" if head else
               "the head was loaded too")


def resolve_path(path):
  """A file path, or the checkpoint prefix for a prefix or a model_dir."""
  path = os.fspath(path)
  if os.path.isdir(path):
    prefix = tf.train.latest_checkpoint(path)
    if prefix is None:
      raise ValueError(f"`path` is a directory without a checkpoint. Received: path={path!r}")
    return prefix
  if (path.endswith(".h5") or torch_files.is_torch_file(path)) and os.path.isfile(path):
    return path
  if tf.io.gfile.exists(f"{path}.index"):
    return path
  raise ValueError("`path` must be a keras.applications .h5 or .weights.h5 file, a torchvision "
                   "or timm .pth, .pt, .bin or .safetensors file, a checkpoint prefix or a model_dir "
                   f"holding checkpoints. Received: path={path!r}")


def load_pretrained(model: keras.Model, path, *, load_head: bool = True) -> None:
  """Loads weights into `model` in place; see the module docstring for the matching rules."""
  path = resolve_path(path)
  if torch_files.is_torch_file(path):
    _assign(model, _torch_entries(model, path), _match_by_name, path, load_head)
    return
  if not path.endswith(".h5"):
    _assign(model, _checkpoint_entries(path), _match_by_name, path, load_head)
    return
  try:
    h5_file = h5py.File(path, "r")
  except OSError as error:
    raise ValueError(f"`path` must be a Keras .h5 or .weights.h5 weights file; h5py cannot read "
                     f"it ({error}). Received: path={path!r}") from error
  with h5_file:
    if path.endswith(".weights.h5"):
      _assign(model, _weights_h5_entries(h5_file), _match_by_order, path, load_head)
    else:
      _assign(model, _legacy_h5_entries(h5_file), _match_by_name, path, load_head)


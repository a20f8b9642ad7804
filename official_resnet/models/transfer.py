"""Freezing and feature extraction for transfer learning.

Layers are selected by graph structure, never by name substrings: the backbone
is every layer whose output is a feature map (rank 4), the head everything
after it; a stage's frozen predecessors are the ancestors of its input.
Keras 3 runs a BatchNormalization with trainable=False in inference mode, so
frozen BatchNorm layers neither use batch statistics nor update moving ones.
"""
import keras
from absl import logging

from official_resnet.models import resnet
from official_resnet.models import vgg

# Stage -> a layer of the stage's first block that reads the stage input.
STAGE_ENTRY_LAYERS = {
    "conv1": "conv1_pad",
    **{stage: f"{stage}_block1_1_conv" for stage in resnet.STAGES[1:]},
    **{stage: f"{stage}_conv1" for stage in vgg.STAGES},
}
LOGITS_LAYER = "predictions"


def is_backbone_layer(layer) -> bool:
  return len(layer.output.shape) == 4


def freeze_backbone(model: keras.Model) -> None:
  """Freezes every feature-map layer; the pooling and head stay trainable."""
  for layer in model.layers:
    if is_backbone_layer(layer):
      layer.trainable = False


def model_stages(model: keras.Model) -> tuple[str, ...]:
  layer_names = {layer.name for layer in model.layers}
  return tuple(stage for stage, entry in STAGE_ENTRY_LAYERS.items() if entry in layer_names)


def freeze_below(model: keras.Model, stage: str) -> None:
  """Freezes all stages before `stage` ("conv1".."conv5" or "block1".."block5")."""
  stages = model_stages(model)
  if stage not in stages:
    raise ValueError(
        f"`stage` must be one of this model's stages {stages}. Received: stage={stage!r}")
  stage_input = model.get_layer(STAGE_ENTRY_LAYERS[stage]).input
  earlier = keras.Model(model.input, stage_input).layers
  for layer in earlier:
    layer.trainable = False
  logging.info("Froze %d layers before stage %s of %s.", len(earlier), stage, model.name)


def unfreeze_all(model: keras.Model) -> None:
  model.trainable = True
  for layer in model.layers:
    layer.trainable = True


def feature_model(model: keras.Model) -> keras.Model:
  """The model up to its pre-logits features, sharing weights; a model without logits as is."""
  if LOGITS_LAYER not in {layer.name for layer in model.layers}:
    return model
  return keras.Model(model.input, model.get_layer(LOGITS_LAYER).input,
                     name=f"{model.name}_features")

"""Per-image augmentation of uint8 training images: RandAugment, AutoAugment, random erasing
and colour jitter, made of the ops in image_ops.py.

Every function takes a uint8 [H, W, 3] image and returns a uint8 image of the same
shape. The random ones also take `seed`, a stateless seed (int32 or int64 [2]): the
same seed gives the same image eagerly, in tf.function and in Dataset.map, whatever
the thread or the order, so a seeded run resumed mid-epoch sees the augmentation an
uninterrupted run saw (build_dataset derives one seed per element).

The image ops compute as PIL does (image_ops.py).
RandAugment and AutoAugment choose and scale the ops as their references do: variant
"timm" as timm's rand-...-inc1; variant "model_garden" and AutoAugment as the Model
Garden's official/vision/ops/augment.py (its ops, its no-op choice, its level-to-argument
functions and constants). Its ops themselves mostly are not PIL's: ours equal its
Brightness, Equalize, Invert, SolarizeAdd and Cutout, its Posterize from level 3 and its
Solarize below level 10, and follow PIL where it differs: its Contrast blends each
channel with that channel's mean, Color greys with tf.image's weights, Sharpness truncates
the smoothed image, AutoContrast computes in float32, Posterize keeps 1 bit at levels 0-2
and Solarize inverts every value at level 10 (uint8 wrap-around), and its geometric ops
reflect the image into the uncovered area (fill_mode='reflect'), round sample points as
TF does and shear without the half-pixel term (docs/training.md has the sizes).

Written here rather than taken from keras.layers.RandAugment, which draws its strength at
random instead of using one magnitude, has no Invert or Cutout, and computes all 11 of its
ops on every image to keep the chosen ones; Keras' layers also draw from a stateful seed
generator, which a parallel map cannot replay.
"""
import functools
import math

import numpy as np
import tensorflow as tf

from input_pipeline import checks
from input_pipeline import constants
from input_pipeline import image_ops

# Magnitudes run from 0 to MAX_LEVEL (the papers' scale): an op's strength is
# magnitude / MAX_LEVEL of its largest.
MAX_LEVEL = 10.0

RANDAUGMENT_VARIANTS = ("model_garden", "timm")
AUTOAUGMENT_POLICIES = ("v0",)
# timm's and the Model Garden's random erasing: one rectangle of 2%-33% of the image, of
# aspect ratio 0.3-3.3, drawn up to 10 times until it fits.
RANDOM_ERASING_AREA_RANGE = (0.02, 1 / 3)
RANDOM_ERASING_ASPECT_RANGE = (0.3, 1 / 0.3)
RANDOM_ERASING_ATTEMPTS = 10


def split_seed(seed: tf.Tensor, count: int) -> list[tf.Tensor]:
  """`count` independent stateless seeds from one."""
  return tf.unstack(tf.random.experimental.stateless_split(seed, count))


# ---------------------------------------------- RandAugment and AutoAugment

def _fraction(level) -> tf.Tensor:
  """level / MAX_LEVEL in float64: the references scale levels in Python floats, and
  float32 moves some arguments by an ulp (magnitude 9: a factor 1.7199999 for 1.72) and
  with them pixels across a rounding edge."""
  return image_ops.to_float64(level) / MAX_LEVEL


def _truncate(value) -> tf.Tensor:
  return tf.cast(value, tf.int32)


def _random_sign(value, randoms) -> tf.Tensor:
  return tf.where(randoms[0] < 0.5, -value, value)


# The tables' ops are fn(image, level, randoms): `randoms` holds OP_RANDOMS uniform draws
# in [0, 1) for the op's own choices (the sign of a rotation, where a cutout goes), drawn
# with everything else an image needs in one op. Each small TF op has a fixed cost, and
# seeds split and drawn from op by op added up to a good part of RandAugment's time.
OP_RANDOMS = 3


def _model_garden_ops(translate_pixels: float, cutout_half_size: float) -> dict:
  """name -> fn(image, level, randoms): the TPU/Model Garden ops and their scaling by level
  (its level_to_arg), the ops PIL's (module docstring).

  Posterize keeps level/10 * 4 bits (0 bits, a black image, at level 0) and Solarize
  inverts from level/10 * 256 (everything at 0): their strength falls as the level rises.
  Geometric ops use nearest-neighbour sampling.
  """
  def enhance(op):
    return lambda image, level, randoms: op(image, _fraction(level) * 1.8 + 0.1)

  def signed(op, largest):
    return lambda image, level, randoms: op(
        image, _random_sign(_fraction(level) * largest, randoms))

  return {
      "AutoContrast": lambda image, level, randoms: image_ops.auto_contrast(image),
      "Equalize": lambda image, level, randoms: image_ops.equalize(image),
      "Invert": lambda image, level, randoms: image_ops.invert(image),
      "Rotate": signed(image_ops.rotate, 30.0),
      "Posterize": lambda image, level, randoms: image_ops.posterize(
          image, _truncate(_fraction(level) * 4)),
      "Solarize": lambda image, level, randoms: image_ops.solarize(
          image, _truncate(_fraction(level) * 256)),
      "Color": enhance(image_ops.color),
      "Contrast": enhance(image_ops.contrast),
      "Brightness": enhance(image_ops.brightness),
      "Sharpness": enhance(image_ops.sharpness),
      "ShearX": signed(image_ops.shear_x, 0.3),
      "ShearY": signed(image_ops.shear_y, 0.3),
      "TranslateX": signed(image_ops.translate_x, translate_pixels),
      "TranslateY": signed(image_ops.translate_y, translate_pixels),
      "Cutout": lambda image, level, randoms: image_ops.cutout(
          image, randoms[1:3], _truncate(_fraction(level) * cutout_half_size)),
      "SolarizeAdd": lambda image, level, randoms: image_ops.solarize_add(
          image, _truncate(_fraction(level) * 110)),
  }


def _timm_increasing_ops() -> dict:
  """name -> fn(image, level, randoms): timm's `inc1` RandAugment ops, stronger as the level rises.

  At level 0 every op with a magnitude leaves the image as it is except
  PosterizeIncreasing (4 bits kept). Translations are relative (0.45 of the side at
  level 10); geometric ops sample bilinearly (timm picks bilinear or bicubic).
  """
  def enhance(op):
    return lambda image, level, randoms: op(
        image, tf.maximum(1.0 + _random_sign(_fraction(level) * 0.9, randoms), 0.1))

  def signed(op, largest):
    return lambda image, level, randoms: op(
        image, _random_sign(_fraction(level) * largest, randoms), "bilinear")

  def relative(op, axis):
    return lambda image, level, randoms: op(
        image, _random_sign(_fraction(level) * 0.45, randoms)
        * tf.cast(tf.shape(image)[axis], tf.float64), "bilinear")

  return {
      "AutoContrast": lambda image, level, randoms: image_ops.auto_contrast(image),
      "Equalize": lambda image, level, randoms: image_ops.equalize(image),
      "Invert": lambda image, level, randoms: image_ops.invert(image),
      "Rotate": signed(image_ops.rotate, 30.0),
      "PosterizeIncreasing": lambda image, level, randoms: image_ops.posterize(
          image, 4 - _truncate(_fraction(level) * 4)),
      "SolarizeIncreasing": lambda image, level, randoms: image_ops.solarize(
          image, 256 - _truncate(_fraction(level) * 256)),
      "SolarizeAdd": lambda image, level, randoms: image_ops.solarize_add(
          image, _truncate(_fraction(level) * 110)),
      "ColorIncreasing": enhance(image_ops.color),
      "ContrastIncreasing": enhance(image_ops.contrast),
      "BrightnessIncreasing": enhance(image_ops.brightness),
      "SharpnessIncreasing": enhance(image_ops.sharpness),
      "ShearX": signed(image_ops.shear_x, 0.3),
      "ShearY": signed(image_ops.shear_y, 0.3),
      "TranslateXRel": relative(image_ops.translate_x, 1),
      "TranslateYRel": relative(image_ops.translate_y, 0),
  }


# The Model Garden's RandAugment (translate_const 100, cutout_const 40) and timm's
# `rand-...-inc1` ops; AutoAugment takes the Model Garden's ops with its own constants.
RANDAUGMENT_OPS = {
    "model_garden": _model_garden_ops(translate_pixels=100.0, cutout_half_size=40.0),
    "timm": _timm_increasing_ops(),
}
AUTOAUGMENT_OPS = _model_garden_ops(translate_pixels=250.0, cutout_half_size=100.0)

# (op, probability, level) pairs, one picked per image. "v0" is the ImageNet policy of
# the TPU EfficientNet code that the Model Garden and timm ship as "v0" (timm's
# translates by 0.45 of the side where this one moves 250 pixels).
_AUTOAUGMENT_POLICIES = {
    "v0": (
        (("Equalize", 0.8, 1), ("ShearY", 0.8, 4)),
        (("Color", 0.4, 9), ("Equalize", 0.6, 3)),
        (("Color", 0.4, 1), ("Rotate", 0.6, 8)),
        (("Solarize", 0.8, 3), ("Equalize", 0.4, 7)),
        (("Solarize", 0.4, 2), ("Solarize", 0.6, 2)),
        (("Color", 0.2, 0), ("Equalize", 0.8, 8)),
        (("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)),
        (("ShearX", 0.2, 9), ("Rotate", 0.6, 8)),
        (("Color", 0.6, 1), ("Equalize", 1.0, 2)),
        (("Invert", 0.4, 9), ("Rotate", 0.6, 0)),
        (("Equalize", 1.0, 9), ("ShearY", 0.6, 3)),
        (("Color", 0.4, 7), ("Equalize", 0.6, 0)),
        (("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)),
        (("Solarize", 0.6, 8), ("Color", 0.6, 9)),
        (("Solarize", 0.2, 4), ("Rotate", 0.8, 9)),
        (("Rotate", 1.0, 7), ("TranslateY", 0.8, 9)),
        (("ShearX", 0.0, 0), ("Solarize", 0.8, 4)),
        (("ShearY", 0.8, 0), ("Color", 0.6, 4)),
        (("Color", 1.0, 0), ("Rotate", 0.6, 2)),
        (("Equalize", 0.8, 4), ("Equalize", 0.0, 8)),
        (("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)),
        (("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)),
        (("Posterize", 0.8, 2), ("Solarize", 0.6, 10)),
        (("Solarize", 0.6, 8), ("Equalize", 0.6, 1)),
        (("Color", 0.8, 6), ("Rotate", 0.4, 5)),
    ),
}


def _op_switch(ops, image: tf.Tensor):
  """fn(index, image, level, randoms): ops[index](image, level, randoms); index len(ops):
  the image as it is.

  One Case op over the ops, each traced once. tf.switch_case's Case op is lowered to
  Switch/Merge in graphs, which push a dead tensor through every op of every branch not
  taken; a Case op without the private _lower_using_switch_merge attribute, as
  tf.raw_ops.Case makes it, runs only the chosen op's function. With the choice forced
  to the identity, two layers cost 0.15 ms per image lowered in a tf.while_loop, 0.04
  this way (Dataset.map, one thread; benchmarks/README.md).
  """
  ops = list(ops) + [lambda image, level, randoms: image]
  if tf.executing_eagerly():
    return lambda index, image, level, randoms: ops[int(index)](image, level, randoms)
  signature = (tf.TensorSpec(image.shape, image.dtype), tf.TensorSpec([], tf.float64),
               tf.TensorSpec([OP_RANDOMS], tf.float32))
  branches = [tf.function(op, autograph=False).get_concrete_function(*signature)
              for op in ops]

  def apply(index, image, level, randoms):
    augmented, = tf.raw_ops.Case(branch_index=index, input=[image, level, randoms],
                                 Tout=[image.dtype], branches=branches,
                                 output_shapes=[image.shape])
    return augmented
  return apply


def _keep_shape(augmented, image) -> tf.Tensor:
  augmented = tf.convert_to_tensor(augmented)
  augmented.set_shape(image.shape)
  return augmented


def check_rand_augment(num_layers, magnitude, magnitude_std, variant) -> None:
  checks.check_int("num_layers", num_layers, 0)
  checks.check_positive("magnitude", magnitude, allow_zero=True)
  checks.check_positive("magnitude_std", magnitude_std, allow_zero=True)
  checks.check_choice("variant", variant, RANDAUGMENT_VARIANTS)


def rand_augment(image: tf.Tensor, seed: tf.Tensor, num_layers: int, magnitude: float,
                 magnitude_std: float = 0.0, variant: str = "model_garden") -> tf.Tensor:
  """RandAugment: `num_layers` ops, each drawn uniformly (with replacement), at `magnitude`.

  magnitude_std > 0 adds Gaussian noise of that deviation to the magnitude of each op
  (timm's `mstd`), clipped to [0, MAX_LEVEL]; the Model Garden's magnitude_std only
  switches on noise of deviation 1.
  variant "model_garden": its 16 ops plus one more choice that changes nothing, every
  drawn op applied; the magnitude is not clipped without noise (above 10 is stronger).
  variant "timm": timm's `rand-m<magnitude>-mstd<std>-inc1`, 15 ops, each drawn op
  applied with probability 0.5, the magnitude always clipped to [0, MAX_LEVEL].
  """
  check_rand_augment(num_layers, magnitude, magnitude_std, variant)
  image = tf.convert_to_tensor(image)
  if not num_layers:
    return _keep_shape(image, image)
  ops = list(RANDAUGMENT_OPS[variant].values())
  # Per layer: the op, whether it applies (timm), its magnitude noise, the op's own.
  draws = tf.random.stateless_uniform([num_layers, 3 + OP_RANDOMS], seed)
  levels = tf.fill([num_layers], tf.constant(magnitude, tf.float64))
  if magnitude_std > 0:
    levels += magnitude_std * tf.cast(tf.math.ndtri(draws[:, 2]), tf.float64)
  if magnitude_std > 0 or variant == "timm":
    levels = tf.clip_by_value(levels, 0.0, MAX_LEVEL)
  # Model Garden: one more choice that changes nothing.
  choices = len(ops) + (variant == "model_garden")
  op_indices = tf.cast(draws[:, 0] * choices, tf.int32)
  if variant == "timm":
    op_indices = tf.where(draws[:, 1] < 0.5, op_indices, len(ops))
  apply = _op_switch(ops, image)
  augmented = image
  for index in range(num_layers):
    augmented = apply(op_indices[index], augmented, levels[index], draws[index, 3:])
  return _keep_shape(augmented, image)


def auto_augment(image: tf.Tensor, seed: tf.Tensor, policy: str = "v0") -> tf.Tensor:
  """AutoAugment: one sub-policy of `policy` drawn uniformly, each op applied with its probability.

  Per step of the sub-policies, one switch over the policy's ops with the op,
  probability and level looked up by the drawn sub-policy: the graph holds each op
  once rather than once per sub-policy and step.
  """
  checks.check_choice("policy", policy, AUTOAUGMENT_POLICIES)
  image = tf.convert_to_tensor(image)
  sub_policies = _AUTOAUGMENT_POLICIES[policy]
  names = sorted({name for sub_policy in sub_policies for name, _, _ in sub_policy})
  steps = list(zip(*sub_policies))  # steps[k][i]: the k-th (op, probability, level) of sub-policy i
  op_indices = tf.constant([[names.index(name) for name, _, _ in step] for step in steps])
  probabilities = tf.constant([[probability for _, probability, _ in step] for step in steps],
                              tf.float32)
  levels = tf.constant([[float(level) for _, _, level in step] for step in steps], tf.float64)
  # The sub-policy, then per step: whether it applies, the op's own.
  draws = tf.random.stateless_uniform([1 + len(steps) * (1 + OP_RANDOMS)], seed)
  choice = tf.cast(draws[0] * len(sub_policies), tf.int32)
  step_draws = tf.reshape(draws[1:], [len(steps), 1 + OP_RANDOMS])

  applies = step_draws[:, 0] < probabilities[:, choice]
  apply = _op_switch([AUTOAUGMENT_OPS[name] for name in names], image)
  augmented = image
  for index in range(len(steps)):
    augmented = apply(tf.where(applies[index], op_indices[index, choice], len(names)),
                      augmented, levels[index, choice], step_draws[index, 1:])
  return _keep_shape(augmented, image)


def check_random_erasing(probability, area_range) -> None:
  checks.check(0 <= probability <= 1, "probability", "in [0, 1]", probability)
  checks.check(len(area_range) == 2 and 0 < area_range[0] <= area_range[1] <= 1, "area_range",
               "(low, high) with 0 < low <= high <= 1", area_range)


def random_erasing(image: tf.Tensor, seed: tf.Tensor, probability: float,
                   area_range=RANDOM_ERASING_AREA_RANGE) -> tf.Tensor:
  """timm's RandomErasing in "pixel" mode: with `probability`, a rectangle of noise.

  Rectangle: area a fraction of the image uniform in `area_range`, aspect ratio
  log-uniform in RANDOM_ERASING_ASPECT_RANGE, the first of RANDOM_ERASING_ATTEMPTS draws
  that fits, at a uniform position; none fitting leaves the image as it is. Its pixels
  are per-pixel normal noise that is N(0, 1) after the ImageNet mean/std normalization
  timm erases after, i.e. each channel's mean + std * N(0, 1) in [0, 255], clipped and rounded.
  """
  check_random_erasing(probability, area_range)
  uniform_seed, noise_seed = split_seed(seed, 2)
  # Whether to erase, where, and per attempt an area and an aspect ratio.
  draws = tf.random.stateless_uniform([3 + 2 * RANDOM_ERASING_ATTEMPTS], uniform_seed)
  shape = tf.shape(image)
  area = tf.cast(shape[0] * shape[1], tf.float32)
  target_areas = area * (area_range[0] + (area_range[1] - area_range[0])
                         * draws[3:3 + RANDOM_ERASING_ATTEMPTS])
  low, high = (math.log(ratio) for ratio in RANDOM_ERASING_ASPECT_RANGE)
  aspects = tf.exp(low + (high - low) * draws[3 + RANDOM_ERASING_ATTEMPTS:])
  heights = tf.cast(tf.round(tf.sqrt(target_areas * aspects)), tf.int32)
  widths = tf.cast(tf.round(tf.sqrt(target_areas / aspects)), tf.int32)
  fits = (heights < shape[0]) & (widths < shape[1])
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
  height, width = heights[first], widths[first]

  def erase():
    top = tf.cast(draws[1] * tf.cast(shape[0] - height + 1, tf.float32), tf.int32)
    left = tf.cast(draws[2] * tf.cast(shape[1] - width + 1, tf.float32), tf.int32)
    means = np.array(constants.TORCH_MEANS, np.float32) * 255.0
    stds = np.array(constants.TORCH_STDS, np.float32) * 255.0
    noise = means + stds * tf.random.stateless_normal([height, width, 3], noise_seed)
    noise = tf.cast(tf.clip_by_value(tf.floor(noise + 0.5), 0.0, 255.0), tf.uint8)
    placed = tf.pad(noise, [[top, shape[0] - top - height], [left, shape[1] - left - width],
                            [0, 0]])
    return image_ops.zero_rectangle(image, top, left, height, width) + placed

  chosen = (draws[0] < probability) & tf.reduce_any(fits)
  return _keep_shape(tf.cond(chosen, erase, functools.partial(tf.identity, image)), image)


def color_jitter(image: tf.Tensor, seed: tf.Tensor, strength: float) -> tf.Tensor:
  """Brightness, contrast, then saturation, each scaled by a factor uniform in
  [max(0, 1 - strength), 1 + strength]: the Model Garden's color_jitter, timm's --color-jitter.

  Not tf.image's random_brightness/contrast/saturation: brightness there adds instead
  of scaling, contrast works per channel and saturation in HSV, unlike torchvision's
  ColorJitter that timm and the Model Garden follow.
  """
  checks.check_positive("strength", strength, allow_zero=True)
  factors = tf.unstack(tf.random.stateless_uniform([3], seed, max(0.0, 1.0 - strength),
                                                   1.0 + strength))
  jittered = image_ops.brightness(image, factors[0])
  jittered = image_ops.contrast(jittered, factors[1])
  return _keep_shape(image_ops.color(jittered, factors[2]), image)

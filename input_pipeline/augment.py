"""Per-image augmentation of uint8 training images: RandAugment, AutoAugment, random erasing,
colour jitter, and the image ops they are made of.

Every function takes a uint8 [H, W, 3] image and returns a uint8 image of the same
shape. The random ones also take `seed`, a stateless seed (int32 or int64 [2]): the
same seed gives the same image eagerly, in tf.function and in Dataset.map, whatever
the thread or the order, so a seeded run resumed mid-epoch sees the augmentation an
uninterrupted run saw (build_dataset derives one seed per element).

The image ops compute as PIL does (ImageOps, ImageEnhance, Image.transform with its
nearest-neighbour and bilinear filters), which timm's auto_augment.py calls: equal to the
last bit at every level RandAugment and AutoAugment use (tests/test_augment_references.py
runs timm's own ops).
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

# Magnitudes run from 0 to MAX_LEVEL (the papers' scale): an op's strength is
# magnitude / MAX_LEVEL of its largest.
MAX_LEVEL = 10.0
# Grey for the pixels a rotation, shear, translation or cutout uncovers: timm's default fill
# (its training transforms pass the mean pixel, 124/116/104) and the Model Garden's replace
# value, which only its Cutout shows: its geometric ops reflect the image instead.
FILL_VALUE = 128

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


# ------------------------------------------------------------------ image ops
#
# Written around TF's fast kernels. One image at a time on one thread, as tf.data runs
# them, tf.where, tf.tile, a 3x3 depthwise convolution, ImageProjectiveTransformV3 and
# ops that broadcast a [3] vector along the channel axis each took several times as
# long as element-wise ops on same-shaped tensors (benchmarks/README.md). So masks here
# are arithmetic, the smoothing filter is sums of shifted slices, nearest-neighbour
# transforms are one gather and bilinear ones four, and per-channel values apply to the
# image seen as rows of W x 3 values, where a row vector broadcasts fast.


def _rows(image: tf.Tensor) -> tf.Tensor:
  """[H, W, 3] -> [H, W * 3], the same memory."""
  return tf.reshape(image, [tf.shape(image)[0], -1])


def _channel_row(values: tf.Tensor, image: tf.Tensor) -> tf.Tensor:
  """[3] per-channel values -> [1, W * 3], to combine with _rows(image)."""
  return tf.tile(values, [tf.shape(image)[1]])[tf.newaxis]


def _grayscale(image: tf.Tensor) -> tf.Tensor:
  """float32 [H, W]: PIL's convert("L"), ITU-R 601-2 luma in 16-bit fixed point, rounded.

  The weighted sums stay below 2**24, so float32 holds them exactly.
  """
  red, green, blue = tf.unstack(tf.cast(image, tf.float32), num=3, axis=-1)
  return tf.floor((red * 19595.0 + green * 38470.0 + blue * 7471.0 + 32768.0) / 65536.0)


def blend(degenerate, image: tf.Tensor, factor) -> tf.Tensor:
  """degenerate + factor * (image - degenerate), clipped and truncated to uint8: PIL's blend.

  factor 1 gives `image` unchanged, 0 gives `degenerate`, above 1 extrapolates.
  """
  degenerate = tf.cast(degenerate, tf.float32)
  mixed = degenerate + tf.cast(factor, tf.float32) * (tf.cast(image, tf.float32) - degenerate)
  return tf.cast(tf.clip_by_value(mixed, 0.0, 255.0), tf.uint8)


def brightness(image: tf.Tensor, factor) -> tf.Tensor:
  """PIL's ImageEnhance.Brightness: a blend with black."""
  return blend(0.0, image, factor)


def color(image: tf.Tensor, factor) -> tf.Tensor:
  """PIL's ImageEnhance.Color (saturation): a blend with the image's grey version."""
  # The grey level in all three channels at once: a matmul with the luma weights repeated.
  weights = tf.constant([[19595.0] * 3, [38470.0] * 3, [7471.0] * 3])
  luma = tf.matmul(tf.reshape(tf.cast(image, tf.float32), [-1, 3]), weights)
  grey = tf.reshape(tf.floor((luma + 32768.0) / 65536.0), tf.shape(image))
  return blend(grey, image, factor)


def contrast(image: tf.Tensor, factor) -> tf.Tensor:
  """PIL's ImageEnhance.Contrast: a blend with the image's mean grey level, rounded.

  The mean in float64, as PIL's ImageStat takes it: a float32 sum is inexact above 2**24
  (65,794 pixels of 255), and a float32 mean may round across the half.
  """
  mean = tf.reduce_mean(tf.cast(_grayscale(image), tf.float64))
  return blend(tf.floor(mean + 0.5), image, factor)


def sharpness(image: tf.Tensor, factor) -> tf.Tensor:
  """PIL's ImageEnhance.Sharpness: a blend with the SMOOTH-filtered image; the border stays."""
  pixels = tf.cast(image, tf.float32)
  # SMOOTH is [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13: a 3x3 box sum plus 4 x the centre.
  rows = pixels[:-2] + pixels[1:-1] + pixels[2:]
  box = rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]
  smooth = tf.clip_by_value(tf.floor((box + 4.0 * pixels[1:-1, 1:-1]) / 13.0 + 0.5), 0.0, 255.0)
  inner = blend(smooth, image[1:-1, 1:-1], factor)
  middle = tf.concat([image[1:-1, :1], inner, image[1:-1, -1:]], axis=1)
  return tf.concat([image[:1], middle, image[-1:]], axis=0)


def auto_contrast(image: tf.Tensor) -> tf.Tensor:
  """PIL's ImageOps.autocontrast: each channel stretched to [0, 255]; a flat channel is kept.

  PIL's lookup table to the last bit: int(v * scale + offset) in float64, with
  offset = -low * scale; float32, or (v - low) * scale, truncates some values one level
  lower or higher.
  """
  per_channel = tf.reshape(image, [-1, 3])
  low = tf.cast(tf.reduce_min(per_channel, axis=0), tf.float64)
  high = tf.cast(tf.reduce_max(per_channel, axis=0), tf.float64)
  stretches = high > low
  scale = tf.where(stretches, 255.0 / tf.maximum(high - low, 1.0), 1.0)
  offset = tf.where(stretches, -low * scale, 0.0)
  stretched = (tf.cast(_rows(image), tf.float64) * _channel_row(scale, image)
               + _channel_row(offset, image))
  return tf.reshape(tf.cast(tf.clip_by_value(stretched, 0.0, 255.0), tf.uint8), tf.shape(image))


def equalize(image: tf.Tensor) -> tf.Tensor:
  """PIL's ImageOps.equalize, per channel: a lookup table from the cumulative histogram.

  The three channels share one bincount and one gather (values offset by 256 per
  channel) instead of three passes.
  """
  indices = tf.cast(_rows(image), tf.int32) + _channel_row(tf.constant([0, 256, 512]), image)
  # DenseBincount itself: tf.math.bincount first takes the maximum of all the values.
  histograms = tf.reshape(tf.raw_ops.DenseBincount(
      input=tf.reshape(indices, [-1]), size=768, weights=tf.constant([], tf.int32)), [3, 256])
  # PIL leaves the highest level present out of the step.
  top_levels = tf.cast(tf.reduce_max(tf.reshape(image, [-1, 3]), axis=0), tf.int32)
  top_counts = tf.gather(histograms, top_levels, batch_dims=1)
  step = (tf.reduce_sum(histograms, axis=1) - top_counts) // 255
  tables = (tf.cumsum(histograms, axis=1) + step[:, tf.newaxis] // 2) // tf.maximum(
      step, 1)[:, tf.newaxis]
  tables = tf.clip_by_value(tf.pad(tables[:, :-1], [[0, 0], [1, 0]]), 0, 255)
  # A channel of one level (step 0) stays as it is.
  tables = tf.where(step[:, tf.newaxis] > 0, tables, tf.range(256)[tf.newaxis])
  # gather_nd: 0.7 ms for the 150,528 lookups, tf.gather 0.95 (one thread, 224 px).
  equalized = tf.gather_nd(tf.cast(tf.reshape(tables, [-1]), tf.uint8),
                           indices[..., tf.newaxis])
  return tf.reshape(equalized, tf.shape(image))


def invert(image: tf.Tensor) -> tf.Tensor:
  return 255 - image


def posterize(image: tf.Tensor, bits) -> tf.Tensor:
  """PIL's ImageOps.posterize: keep the `bits` (clipped to 0-8) highest bits of each value."""
  bits = tf.clip_by_value(tf.cast(bits, tf.int32), 0, 8)
  mask = tf.bitwise.bitwise_and(tf.bitwise.left_shift(255, 8 - bits), 255)
  return tf.bitwise.bitwise_and(image, tf.cast(mask, tf.uint8))


def solarize(image: tf.Tensor, threshold) -> tf.Tensor:
  """PIL's ImageOps.solarize: values at or above `threshold` inverted (256: none)."""
  above = tf.cast(image, tf.int32) >= tf.cast(threshold, tf.int32)
  # 255 - v is v with every bit flipped.
  return tf.bitwise.bitwise_xor(image, tf.cast(above, tf.uint8) * 255)


def solarize_add(image: tf.Tensor, addition, threshold: int = 128) -> tf.Tensor:
  """`addition` added to values below `threshold`, clipped (the TPU code's SolarizeAdd)."""
  pixels = tf.cast(image, tf.int32)
  below = tf.cast(pixels < threshold, tf.int32)
  return tf.cast(tf.clip_by_value(pixels + below * tf.cast(addition, tf.int32), 0, 255),
                 tf.uint8)


def _float64(value) -> tf.Tensor:
  """`value` as float64: Python floats directly (tf.cast would round them to float32 first)."""
  return tf.cast(tf.convert_to_tensor(value, dtype_hint=tf.float64), tf.float64)


def _bordered_pixels(image: tf.Tensor) -> tf.Tensor:
  """[(H + 2) * (W + 2), 3]: the image's pixels in a border of FILL_VALUE, row after row."""
  return tf.reshape(tf.pad(image, [[1, 1], [1, 1], [0, 0]], constant_values=FILL_VALUE), [-1, 3])


def _affine(image: tf.Tensor, matrix, interpolation: str) -> tf.Tensor:
  """PIL's Image.transform(AFFINE, matrix): output pixel (x, y) takes the input at
  (a x' + b y' + c, d x' + e y' + f), x' = x + 1/2, y' = y + 1/2 its centre, for
  matrix (a, b, c, d, e, f); FILL_VALUE outside. To the last bit for both filters.

  Nearest-neighbour, PIL's affine_fixed (which every image under 32768 px takes): the
  coefficients rounded to 16.16 fixed point, the input pixel the integer part of their
  fixed-point sum; one gather from the image in a border of FILL_VALUE, onto which sources
  outside are clamped. Sampling at the exact coordinates instead takes the neighbouring
  pixel wherever the fixed-point sum and the exact value fall on either side of a pixel
  edge.
  """
  a, b, c, d, e, f = (_float64(value) for value in matrix)
  if interpolation == "bilinear":
    return _bilinear_affine(image, a, b, c, d, e, f)
  height, width = tf.shape(image)[0], tf.shape(image)[1]

  def fixed(value):
    return tf.cast(tf.floor(value * 65536.0 + 0.5), tf.int32)

  xs = tf.range(width)[tf.newaxis, :]
  ys = tf.range(height)[:, tf.newaxis]
  # PIL's offsets, summed in its order in float64, then made fixed point.
  source_x = tf.bitwise.right_shift(fixed(c + a * 0.5 + b * 0.5) + ys * fixed(b) + xs * fixed(a),
                                    16)
  source_y = tf.bitwise.right_shift(fixed(f + d * 0.5 + e * 0.5) + ys * fixed(e) + xs * fixed(d),
                                    16)
  # Clamping onto the border takes fewer passes over the [H, W] indices than a mask.
  index = ((tf.clip_by_value(source_y, -1, height) + 1) * (width + 2)
           + tf.clip_by_value(source_x, -1, width) + 1)
  # gather_nd: each lookup costs about 3/4 of tf.gather's (equalize).
  return tf.gather_nd(_bordered_pixels(image), index[..., tf.newaxis])


def _bilinear_affine(image: tf.Tensor, a, b, c, d, e, f) -> tf.Tensor:
  """_affine with PIL's bilinear filter, its float64 arithmetic step for step.

  A point inside the image blends the four pixels around it (less half a pixel; indices
  clamped to the image) along x, then y, and truncates; a point outside is FILL_VALUE.
  TF's ImageProjectiveTransformV3 rounds instead and blends the fill into the pixels along
  the edge of the image, and it took longer than these four gathers.
  """
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  xs = tf.cast(tf.range(width), tf.float64)[tf.newaxis, :] + 0.5
  ys = tf.cast(tf.range(height), tf.float64)[:, tf.newaxis] + 0.5
  source_x = a * xs + b * ys + c
  source_y = d * xs + e * ys + f
  inside = tf.cast((source_x >= 0.0) & (source_x < tf.cast(width, tf.float64))
                   & (source_y >= 0.0) & (source_y < tf.cast(height, tf.float64)), tf.int32)
  source_x -= 0.5
  source_y -= 0.5
  left, top = tf.floor(source_x), tf.floor(source_y)
  x_weight = (source_x - left)[..., tf.newaxis]
  y_weight = (source_y - top)[..., tf.newaxis]
  left, top = tf.cast(left, tf.int32), tf.cast(top, tf.int32)
  # Indices into the bordered pixels; a point outside reads the border's corner four times.
  columns = [tf.clip_by_value(left + step, 0, width - 1) + 1 for step in (0, 1)]
  rows = [(tf.clip_by_value(top + step, 0, height - 1) + 1) * (width + 2) for step in (0, 1)]
  pixels = _bordered_pixels(image)

  def at(row, column):
    return tf.cast(tf.gather_nd(pixels, ((row + column) * inside)[..., tf.newaxis]), tf.float64)

  top_left, top_right, bottom_left, bottom_right = (at(row, column) for row in rows
                                                    for column in columns)
  upper = top_left + (top_right - top_left) * x_weight
  lower = bottom_left + (bottom_right - bottom_left) * x_weight
  return tf.cast(upper + (lower - upper) * y_weight, tf.uint8)


def rotate(image: tf.Tensor, degrees, interpolation: str = "nearest") -> tf.Tensor:
  """Rotated by `degrees` about the image centre (positive: counter-clockwise on screen):
  PIL's Image.rotate, its matrix in float64."""
  # PIL's steps: the angle modulo 360, math.radians, negated; the cosine and sine rounded
  # to 15 decimals (sin 30 degrees becomes 0.5).
  radians = -(tf.math.floormod(_float64(degrees), 360.0) * (math.pi / 180.0))
  height, width = (tf.cast(side, tf.float64) for side in tf.unstack(tf.shape(image)[:2]))
  cos, sin = (tf.round(value * 1e15) / 1e15 for value in (tf.cos(radians), tf.sin(radians)))
  centre_x, centre_y = width / 2.0, height / 2.0
  return _affine(image, [cos, sin, cos * -centre_x + sin * -centre_y + centre_x,
                         -sin, cos, -sin * -centre_x + cos * -centre_y + centre_y],
                 interpolation)


def shear_x(image: tf.Tensor, factor, interpolation: str = "nearest") -> tf.Tensor:
  """Row y shifted by factor * y: PIL's transform (1, factor, 0, 0, 1, 0)."""
  return _affine(image, [1.0, factor, 0.0, 0.0, 1.0, 0.0], interpolation)


def shear_y(image: tf.Tensor, factor, interpolation: str = "nearest") -> tf.Tensor:
  """Column x shifted by factor * x: PIL's transform (1, 0, 0, factor, 1, 0)."""
  return _affine(image, [1.0, 0.0, 0.0, factor, 1.0, 0.0], interpolation)


def _shift(image: tf.Tensor, pixels, axis: int) -> tf.Tensor:
  """Content moved `pixels` (rounded half up, in float64) towards index 0 along `axis`,
  FILL_VALUE behind: PIL's nearest-neighbour translation as a slice and a pad."""
  side = tf.shape(image)[axis]
  shift = tf.clip_by_value(tf.cast(tf.floor(_float64(pixels) + 0.5), tf.int32),
                           -side, side)
  begin = [0, 0, 0]
  size = [-1, -1, -1]
  begin[axis] = tf.maximum(shift, 0)
  size[axis] = side - tf.abs(shift)
  paddings = [[0, 0], [0, 0], [0, 0]]
  paddings[axis] = [tf.maximum(-shift, 0), tf.maximum(shift, 0)]
  return tf.pad(tf.slice(image, begin, size), paddings, constant_values=FILL_VALUE)


def translate_x(image: tf.Tensor, pixels, interpolation: str = "nearest") -> tf.Tensor:
  """Content moved `pixels` to the left (right when negative)."""
  if interpolation == "nearest":
    return _shift(image, pixels, axis=1)
  return _affine(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0], interpolation)


def translate_y(image: tf.Tensor, pixels, interpolation: str = "nearest") -> tf.Tensor:
  """Content moved `pixels` up (down when negative)."""
  if interpolation == "nearest":
    return _shift(image, pixels, axis=0)
  return _affine(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels], interpolation)


def _rectangle(image: tf.Tensor, top, left, height, width) -> tf.Tensor:
  """uint8 [H, W * 3] (as _rows(image)): 1 inside rows [top, top + height) and columns
  [left, left + width) of the image, 0 elsewhere."""
  rows = tf.range(tf.shape(image)[0])[:, tf.newaxis]
  columns = tf.range(tf.shape(image)[1] * 3)[tf.newaxis, :] // 3
  inside = ((rows >= top) & (rows < top + height)) & ((columns >= left)
                                                      & (columns < left + width))
  return tf.cast(inside, tf.uint8)


def cutout(image: tf.Tensor, centre, half_size) -> tf.Tensor:
  """A square of side 2 * half_size filled with FILL_VALUE, clipped at the border.

  `centre`: [2] in [0, 1), the square's centre as fractions of the height and width.
  """
  shape = tf.shape(image)
  centre = tf.cast(tf.cast(centre, tf.float32) * tf.cast(shape[:2], tf.float32), tf.int32)
  half_size = tf.cast(half_size, tf.int32)
  inside = _rectangle(image, centre[0] - half_size, centre[1] - half_size, 2 * half_size,
                      2 * half_size)
  return tf.reshape(_rows(image) * (1 - inside) + inside * FILL_VALUE, shape)


# ---------------------------------------------- RandAugment and AutoAugment

def _fraction(level) -> tf.Tensor:
  """level / MAX_LEVEL in float64: the references scale levels in Python floats, and
  float32 moves some arguments by an ulp (magnitude 9: a factor 1.7199999 for 1.72) and
  with them pixels across a rounding edge."""
  return _float64(level) / MAX_LEVEL


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
      "AutoContrast": lambda image, level, randoms: auto_contrast(image),
      "Equalize": lambda image, level, randoms: equalize(image),
      "Invert": lambda image, level, randoms: invert(image),
      "Rotate": signed(rotate, 30.0),
      "Posterize": lambda image, level, randoms: posterize(
          image, _truncate(_fraction(level) * 4)),
      "Solarize": lambda image, level, randoms: solarize(
          image, _truncate(_fraction(level) * 256)),
      "Color": enhance(color),
      "Contrast": enhance(contrast),
      "Brightness": enhance(brightness),
      "Sharpness": enhance(sharpness),
      "ShearX": signed(shear_x, 0.3),
      "ShearY": signed(shear_y, 0.3),
      "TranslateX": signed(translate_x, translate_pixels),
      "TranslateY": signed(translate_y, translate_pixels),
      "Cutout": lambda image, level, randoms: cutout(
          image, randoms[1:3], _truncate(_fraction(level) * cutout_half_size)),
      "SolarizeAdd": lambda image, level, randoms: solarize_add(
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
      "AutoContrast": lambda image, level, randoms: auto_contrast(image),
      "Equalize": lambda image, level, randoms: equalize(image),
      "Invert": lambda image, level, randoms: invert(image),
      "Rotate": signed(rotate, 30.0),
      "PosterizeIncreasing": lambda image, level, randoms: posterize(
          image, 4 - _truncate(_fraction(level) * 4)),
      "SolarizeIncreasing": lambda image, level, randoms: solarize(
          image, 256 - _truncate(_fraction(level) * 256)),
      "SolarizeAdd": lambda image, level, randoms: solarize_add(
          image, _truncate(_fraction(level) * 110)),
      "ColorIncreasing": enhance(color),
      "ContrastIncreasing": enhance(contrast),
      "BrightnessIncreasing": enhance(brightness),
      "SharpnessIncreasing": enhance(sharpness),
      "ShearX": signed(shear_x, 0.3),
      "ShearY": signed(shear_y, 0.3),
      "TranslateXRel": relative(translate_x, 1),
      "TranslateYRel": relative(translate_y, 0),
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
    kept = _rows(image) * (1 - _rectangle(image, top, left, height, width))
    return tf.reshape(kept, shape) + placed

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
  jittered = brightness(image, factors[0])
  jittered = contrast(jittered, factors[1])
  return _keep_shape(color(jittered, factors[2]), image)

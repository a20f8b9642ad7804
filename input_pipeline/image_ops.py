"""The image ops RandAugment, AutoAugment and colour jitter are made of (augment.py).

Every op takes a uint8 [H, W, 3] image and returns a uint8 image of the same shape. They
compute as PIL does (ImageOps, ImageEnhance, Image.transform with its nearest-neighbour and
bilinear filters), which timm's auto_augment.py calls: equal to the last bit at every level
RandAugment and AutoAugment use (tests/test_augment_references.py runs timm's own ops). The
Model Garden's own ops mostly are not PIL's; augment.py's docstring says where they differ.
"""
import math

import tensorflow as tf

# Grey for the pixels a rotation, shear, translation or cutout uncovers: timm's default fill
# (its training transforms pass the mean pixel, 124/116/104) and the Model Garden's replace
# value, which only its Cutout shows: its geometric ops reflect the image instead.
FILL_VALUE = 128

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


def to_float64(value) -> tf.Tensor:
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
  a, b, c, d, e, f = (to_float64(value) for value in matrix)
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
  radians = -(tf.math.floormod(to_float64(degrees), 360.0) * (math.pi / 180.0))
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
  shift = tf.clip_by_value(tf.cast(tf.floor(to_float64(pixels) + 0.5), tf.int32),
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


def zero_rectangle(image: tf.Tensor, top, left, height, width) -> tf.Tensor:
  """`image` with rows [top, top + height) and columns [left, left + width) set to 0."""
  return tf.reshape(_rows(image) * (1 - _rectangle(image, top, left, height, width)),
                    tf.shape(image))


"""Image preprocessing of the official ResNet recipe, as small pure functions.

Train: a random crop drawn with sample_distorted_bounding_box and decoded with
the fused decode_and_crop_jpeg, a random horizontal flip, a resize to S x S.
Eval: resize the shorter side to S / crop fraction (0.875 official), keep the centre S x S.
Both return float32 pixels in [0, 255]; `normalize` turns them into the
convention a set of weights expects.

The random ops are stateless, drawn from a `seed` (int32 or int64 [2]) that
build_dataset derives for each element: a stateful random op in a parallel map
draws in whatever order the threads run, so a seeded run could not repeat its crops.

Every function takes and returns tensors, works eagerly and inside
tf.data.Dataset.map, and decodes any JPEG, PNG, GIF, BMP or WebP (gray, CMYK,
palette or alpha) to 3-channel RGB.
"""
import math

import numpy as np
import tensorflow as tf

from input_pipeline import checks
from input_pipeline import constants

CHANNELS = 3


def eval_resize_size(image_size: int, crop_fraction: float = constants.EVAL_CROP_FRACTION) -> int:
  """Shorter side before the eval centre crop: 256 at 224 with the official crop fraction 0.875."""
  return int(math.floor(image_size / crop_fraction + 0.5))


def _bmp_header(image_bytes: tf.Tensor) -> tf.Tensor:
  """The first 54 bytes as uint8, zero-padded: safe to read from any input, however short."""
  padded = tf.strings.join([tf.strings.substr(image_bytes, 0, 54), b"\0" * 54])
  return tf.cast(tf.io.decode_raw(tf.strings.substr(padded, 0, 54), tf.uint8), tf.int32)


def _little_endian(header: tf.Tensor, offset: int, length: int) -> tf.Tensor:
  return tf.reduce_sum(header[offset:offset + length] * (256 ** tf.range(length)))


def _is_palette_bmp(header: tf.Tensor) -> tf.Tensor:
  is_bmp = tf.logical_and(tf.equal(header[0], ord("B")), tf.equal(header[1], ord("M")))
  return tf.logical_and(is_bmp, tf.equal(_little_endian(header, 28, 2), 8))


def _decode_palette_bmp(image_bytes: tf.Tensor, header: tf.Tensor) -> tf.Tensor:
  """TF's BMP decoder returns the palette indices of 8-bit BMPs as gray; look them up."""
  indices = tf.io.decode_bmp(image_bytes, channels=0)[..., 0]
  header_end = 14 + _little_endian(header, 14, 4)
  pixels_start = _little_endian(header, 10, 4)
  palette = tf.io.decode_raw(
      tf.strings.substr(image_bytes, header_end, pixels_start - header_end), tf.uint8)
  # Entries are 4 bytes, blue-green-red-unused.
  palette = tf.reverse(tf.reshape(palette, [-1, 4])[:, :3], axis=[1])
  return tf.gather(palette, tf.cast(indices, tf.int32))


def decode_image(image_bytes: tf.Tensor) -> tf.Tensor:
  """Encoded JPEG/PNG/GIF/BMP/WebP -> uint8 [H, W, 3] RGB; the first frame of a GIF."""
  header = _bmp_header(image_bytes)
  image = tf.cond(
      _is_palette_bmp(header),
      lambda: _decode_palette_bmp(image_bytes, header),
      lambda: tf.io.decode_image(image_bytes, channels=CHANNELS, expand_animations=False))
  image.set_shape([None, None, CHANNELS])
  return image


def sample_crop_window(image_shape: tf.Tensor, bbox: tf.Tensor, seed: tf.Tensor,
                       area_range=constants.CROP_AREA_RANGE,
                       aspect_ratio_range=constants.CROP_ASPECT_RATIO_RANGE) -> tf.Tensor:
  """A random crop window [offset_y, offset_x, height, width] (int32); official ranges by default.

  `bbox` is float32 [1, num_boxes, 4] of [ymin, xmin, ymax, xmax] in [0, 1];
  with no boxes the whole image stands for the object. `area_range` is the
  crop's fraction of the image, `aspect_ratio_range` its width / height.
  """
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      image_shape,
      bounding_boxes=bbox,
      seed=seed,
      min_object_covered=constants.CROP_MIN_OBJECT_COVERED,
      aspect_ratio_range=aspect_ratio_range,
      area_range=area_range,
      max_attempts=constants.CROP_MAX_ATTEMPTS,
      use_image_if_no_bounding_boxes=True)
  return tf.stack([begin[0], begin[1], size[0], size[1]])


def decode_and_random_crop(image_bytes: tf.Tensor, bbox: tf.Tensor, seed: tf.Tensor,
                           area_range=constants.CROP_AREA_RANGE,
                           aspect_ratio_range=constants.CROP_ASPECT_RATIO_RANGE) -> tf.Tensor:
  """Decode only a random crop of the image (sample_crop_window) -> uint8 [h, w, 3].

  JPEGs (nearly all of ImageNet) take the fused decode_and_crop_jpeg, which
  decodes only the crop's blocks; other formats have no fused op, so they are
  decoded whole and sliced.
  """
  def crop_jpeg():
    window = sample_crop_window(tf.image.extract_jpeg_shape(image_bytes), bbox, seed,
                                area_range, aspect_ratio_range)
    return tf.image.decode_and_crop_jpeg(image_bytes, window, channels=CHANNELS)

  def crop_other():
    image = decode_image(image_bytes)
    window = sample_crop_window(tf.shape(image), bbox, seed, area_range, aspect_ratio_range)
    return tf.slice(image, [window[0], window[1], 0], [window[2], window[3], CHANNELS])

  image = tf.cond(tf.io.is_jpeg(image_bytes), crop_jpeg, crop_other)
  image.set_shape([None, None, CHANNELS])
  return image


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  return tf.image.stateless_random_flip_left_right(image, seed)


def resize(image: tf.Tensor, height, width) -> tf.Tensor:
  """Bilinear resize of [H, W, C] -> float32 [height, width, C], the official kernel.

  The official recipe resizes with TF1's bilinear kernel (no half-pixel
  centres); tf.image.resize would shift every pixel by half a step, so the
  same kernel is called directly to stay bit for bit with it.
  """
  resized = tf.raw_ops.ResizeBilinear(
      images=image[tf.newaxis], size=tf.stack([height, width]),
      align_corners=False, half_pixel_centers=False)
  return resized[0]


def resize_shorter_side(image: tf.Tensor, shorter_side: int, method: str = "bilinear") -> tf.Tensor:
  """Aspect-preserving resize so min(H, W) == shorter_side -> float32.

  `method` is one of constants.EVAL_RESIZE_METHODS; the antialiased ones size the
  longer side as torchvision does, int(shorter_side * longer / shorter).
  """
  checks.check_choice("method", method, constants.EVAL_RESIZE_METHODS)
  if method != "bilinear":
    shape = tf.shape(image)[:2]
    new_size = shape * shorter_side // tf.reduce_min(shape)
    resized = tf.image.resize(image, new_size, method=method.removesuffix("_antialias"),
                              antialias=True)
    # Bicubic overshoots; PIL, which timm and torchvision resize with, clips to [0, 255].
    return tf.clip_by_value(tf.cast(resized, tf.float32), 0.0, 255.0)
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = shorter_side / tf.reduce_min(shape)
  # Truncation, not rounding, as the official recipe computes the new size.
  new_size = tf.cast(shape * scale, tf.int32)
  return resize(image, new_size[0], new_size[1])


def central_crop(image: tf.Tensor, size: int) -> tf.Tensor:
  """The centre [size, size] of an image at least that large on both sides."""
  shape = tf.shape(image)
  top = (shape[0] - size) // 2
  left = (shape[1] - size) // 2
  return tf.slice(image, [top, left, 0], [size, size, -1])


# A tf.function traces once per setting: each pipeline built (a train stream, an evaluation)
# would otherwise trace the decoders again (0.31 of a build's 0.50 CPU s). Their control flow
# is tf.cond: autograph would only convert their source again at each trace.
@tf.function(reduce_retracing=True, autograph=False)
def preprocess_for_train(image_bytes: tf.Tensor, bbox: tf.Tensor, image_size: int,
                         seed: tf.Tensor, area_range=constants.CROP_AREA_RANGE,
                         aspect_ratio_range=constants.CROP_ASPECT_RATIO_RANGE,
                         flip: bool = True) -> tf.Tensor:
  """Encoded image -> float32 [S, S, 3] in [0, 255]: random crop, flip (unless `flip` is
  False: digits, text), resize. The crop of a seed is the same either way."""
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  image = decode_and_random_crop(image_bytes, bbox, crop_seed, area_range, aspect_ratio_range)
  if flip:
    image = random_flip(image, flip_seed)
  image = resize(image, image_size, image_size)
  image.set_shape([image_size, image_size, CHANNELS])
  return image


@tf.function(reduce_retracing=True, autograph=False)  # as preprocess_for_train
def preprocess_for_eval(image_bytes: tf.Tensor, image_size: int, resize_size: int | None = None,
                        method: str = "bilinear") -> tf.Tensor:
  """Encoded image -> float32 [S, S, 3] in [0, 255]: resize shorter side, centre crop.

  The shorter side goes to `resize_size` (default eval_resize_size(S), the official
  crop fraction) with `method`.
  """
  image = decode_image(image_bytes)
  image = resize_shorter_side(image, resize_size or eval_resize_size(image_size), method)
  image = central_crop(image, image_size)
  image.set_shape([image_size, image_size, CHANNELS])
  return image


def whole_image_bbox() -> tf.Tensor:
  """No boxes: sample_crop_window then treats the whole image as the object."""
  return tf.zeros([1, 0, 4], tf.float32)


def check_normalization(mode: str) -> None:
  checks.check_choice("normalization", mode, constants.NORMALIZATION_MODES)


def _per_channel(images: tf.Tensor, values) -> tf.Tensor:
  """Per-channel values shaped to combine with `images` elementwise.

  Tiled to the image's static [H, W, 3] when known: TF's kernels broadcast
  along a last axis of 3 several times slower than they add same-shaped
  tensors, and normalization would otherwise cost a fifth of the decode.
  """
  values = np.asarray(values, np.float32)
  image_shape = images.shape[-3:]
  if images.shape.rank >= 3 and image_shape.is_fully_defined():
    return tf.constant(np.broadcast_to(values, image_shape.as_list()))
  return tf.constant(values)


def normalize(images: tf.Tensor, mode: str) -> tf.Tensor:
  """[..., 3] RGB pixels in [0, 255] (any dtype) -> float32 in the convention of `mode`.

  rgb_mean: subtract the official RGB means; caffe: RGB->BGR, subtract the BGR
  means (keras.applications ResNet/VGG weights); torch: x/255, then
  (x - mean) / std per channel; unit: x/127.5 - 1, i.e. [-1, 1].
  """
  check_normalization(mode)
  images = tf.cast(images, tf.float32)
  if mode == "rgb_mean":
    return images - _per_channel(images, constants.RGB_MEANS)
  if mode == "caffe":
    return images[..., ::-1] - _per_channel(images, constants.CAFFE_BGR_MEANS)
  if mode == "torch":
    means, stds = np.array(constants.TORCH_MEANS), np.array(constants.TORCH_STDS)
    # (x/255 - mean) / std as one multiply-add.
    return images * _per_channel(images, 1.0 / (255.0 * stds)) - _per_channel(images, means / stds)
  # A multiply, not a division: grappler turns x / c into x * (1 / c) in some graphs and
  # not in others, so the train step and the pipeline would differ in the last bit.
  return images * np.float32(1.0 / 127.5) - 1.0


def to_uint8(images: tf.Tensor) -> tf.Tensor:
  """Float pixels within [0, 255], as resize returns them, -> uint8 rounded half up.

  No clipping: bilinear interpolation never leaves its inputs' range, and
  each pass over a batch of pixels costs as much as the normalization it replaces.
  """
  return tf.cast(images + 0.5, tf.uint8)

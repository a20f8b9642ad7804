"""Preprocessing ops: exact shapes and dtypes eagerly and inside Dataset.map, parity with the
official steps, crop bounds, every image format, normalization values."""
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import image_fixtures
from input_pipeline import constants
from input_pipeline import preprocessing
from official_resnet.demo import photos

SIZE = 32
PIXELS = image_fixtures.image(seed=1)
JPEG = photos.encode(PIXELS)
NO_BOX = preprocessing.whole_image_bbox()
SEED = np.array([7, 11], np.int64)


def _unknown_shape(x):
  return tf.raw_ops.PlaceholderWithDefault(input=x, shape=[None] * x.shape.rank)


def _in_map(fn, *args):
  """fn inside Dataset.map on inputs of unknown size, as decoded images are: (value, spec)."""
  dataset = tf.data.Dataset.from_tensors(args).map(lambda *a: fn(*map(_unknown_shape, a)))
  return dataset.get_single_element(), dataset.element_spec


# (op, args, expected static shape inside map, expected dtype). The random ops take a
# stateless seed, so they too give the same result eagerly and in a map.
OPS = [
    ("decode_image", lambda b: preprocessing.decode_image(b), (JPEG,), [None, None, 3],
     tf.uint8),
    ("decode_and_random_crop", lambda b, s: preprocessing.decode_and_random_crop(b, NO_BOX, s),
     (JPEG, SEED), [None, None, 3], tf.uint8),
    ("random_flip", preprocessing.random_flip, (PIXELS, SEED), [None, None, None], tf.uint8),
    ("resize", lambda x: preprocessing.resize(x, 20, 24), (PIXELS,), [20, 24, None],
     tf.float32),
    ("resize_shorter_side", lambda x: preprocessing.resize_shorter_side(x, 36), (PIXELS,),
     [None, None, None], tf.float32),
    ("central_crop", lambda x: preprocessing.central_crop(x, SIZE), (PIXELS,),
     [SIZE, SIZE, None], tf.uint8),
    ("preprocess_for_train",
     lambda b, s: preprocessing.preprocess_for_train(b, NO_BOX, SIZE, s, (0.1, 0.9), (0.5, 2.0)),
     (JPEG, SEED), [SIZE, SIZE, 3], tf.float32),
    ("preprocess_for_eval", lambda b: preprocessing.preprocess_for_eval(b, SIZE, 53), (JPEG,),
     [SIZE, SIZE, 3], tf.float32),
    ("normalize", lambda x: preprocessing.normalize(x, "rgb_mean"), (PIXELS,),
     [None, None, 3], tf.float32),
    ("to_uint8", preprocessing.to_uint8, (PIXELS.astype(np.float32),), [None, None, None],
     tf.uint8),
]
# Concrete output shapes for the ops whose static shape is open.
CONCRETE = {"decode_image": (40, 56, 3), "random_flip": (40, 56, 3), "resize": (20, 24, 3),
            "resize_shorter_side": (36, 50, 3), "central_crop": (SIZE, SIZE, 3),
            "normalize": (40, 56, 3), "to_uint8": (40, 56, 3)}


@pytest.mark.parametrize("name,fn,args,static_shape,dtype", OPS, ids=[op[0] for op in OPS])
def test_op_eagerly_and_in_dataset_map(name, fn, args, static_shape, dtype):
  eager = fn(*[tf.constant(a) for a in args])
  mapped, spec = _in_map(fn, *args)
  assert spec.shape.as_list() == static_shape
  assert eager.dtype == mapped.dtype == spec.dtype == dtype
  if name in CONCRETE:
    assert eager.shape == CONCRETE[name]
  if None not in static_shape:
    assert eager.shape == tuple(static_shape)
  np.testing.assert_array_equal(eager.numpy(), mapped.numpy())


@pytest.mark.parametrize("height,width,image_size,crop_fraction", [
    (40, 56, 32, 0.875), (375, 500, 224, 0.875), (61, 45, 32, 0.875), (40, 56, 32, 1.0),
    (375, 500, 224, 0.95)])
def test_eval_equals_official_steps(height, width, image_size, crop_fraction):
  encoded = photos.encode(image_fixtures.image(seed=2, height=height, width=width))
  # The official recipe step by step: decode, shorter side to 256 at 224 (crop
  # fraction 0.875), the other side truncated, TF1 bilinear resize, centre crop.
  decoded = tf.image.decode_jpeg(encoded, channels=3)
  resize_min = int(image_size / crop_fraction + 0.5)
  scale = tf.cast(resize_min, tf.float32) / min(height, width)
  new_height = int(tf.cast(height * scale, tf.int32))
  new_width = int(tf.cast(width * scale, tf.int32))
  resized = tf.compat.v1.image.resize(decoded, [new_height, new_width],
                                      method=tf.image.ResizeMethod.BILINEAR, align_corners=False)
  top, left = (new_height - image_size) // 2, (new_width - image_size) // 2
  expected = resized[top:top + image_size, left:left + image_size]
  np.testing.assert_array_equal(
      preprocessing.preprocess_for_eval(
          encoded, image_size, preprocessing.eval_resize_size(image_size, crop_fraction)),
      expected)


def test_eval_resize_size_keeps_crop_fraction():
  assert preprocessing.eval_resize_size(224) == 256
  assert preprocessing.eval_resize_size(32) == 37
  assert preprocessing.eval_resize_size(299) == 342
  assert preprocessing.eval_resize_size(224, 0.95) == 236  # timm's crop_pct for RSB A3
  assert preprocessing.eval_resize_size(224, 1.0) == 224


def test_train_resize_equals_official_kernel():
  expected = tf.compat.v1.image.resize(PIXELS, [SIZE, SIZE], align_corners=False)
  np.testing.assert_array_equal(preprocessing.resize(PIXELS, SIZE, SIZE), expected)


def _windows(image_shape, bbox, draws, **ranges):
  """Crop windows for seeds [0, 0] .. [draws - 1, 0]."""
  sample = tf.function(
      lambda seed: preprocessing.sample_crop_window(image_shape, bbox, seed, **ranges))
  return np.array([sample(tf.constant([i, 0], tf.int64)).numpy() for i in range(draws)])


def test_crop_windows_inside_image_within_area_and_aspect_bounds():
  height, width = 360, 420
  windows = _windows([height, width, 3], NO_BOX, draws=300)
  top, left, crop_height, crop_width = windows.T
  assert (top >= 0).all() and (left >= 0).all()
  assert (top + crop_height <= height).all() and (left + crop_width <= width).all()
  area = crop_height * crop_width / (height * width)
  low_area, high_area = constants.CROP_AREA_RANGE
  assert (area >= low_area * 0.95).all() and (area <= high_area).all()
  aspect = crop_width / crop_height
  low_aspect, high_aspect = constants.CROP_ASPECT_RATIO_RANGE
  # Integer pixel sizes move the ratio by at most a pixel's worth.
  assert (aspect >= low_aspect * 0.97).all() and (aspect <= high_aspect * 1.03).all()
  # Draws really vary: many distinct windows, small and large.
  assert len({tuple(w) for w in windows}) > 200
  assert area.min() < 0.2 and area.max() > 0.8


def test_crop_windows_follow_the_area_and_aspect_options():
  height, width = 360, 420
  windows = _windows([height, width, 3], NO_BOX, draws=100, area_range=(0.5, 0.6),
                     aspect_ratio_range=(1.9, 2.1))
  _, _, crop_height, crop_width = windows.T
  area = crop_height * crop_width / (height * width)
  assert (area >= 0.5 * 0.98).all() and (area <= 0.6 * 1.02).all()
  aspect = crop_width / crop_height
  assert (aspect >= 1.9 * 0.98).all() and (aspect <= 2.1 * 1.02).all()
  # Not the official ranges' windows: those are rarely this wide.
  official = _windows([height, width, 3], NO_BOX, draws=100)
  assert (official[:, 3] / official[:, 2] < 1.4).all()


def test_seeded_crops_and_flips_repeat_for_a_seed_and_differ_across_seeds():
  encoded = photos.encode(image_fixtures.image(seed=5, height=64, width=80))
  train = tf.function(lambda seed: preprocessing.preprocess_for_train(encoded, NO_BOX, SIZE, seed))
  first = [train(tf.constant([i, 1], tf.int64)).numpy() for i in range(8)]
  again = [train(tf.constant([i, 1], tf.int64)).numpy() for i in range(8)]
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  assert len({image.tobytes() for image in first}) == 8


def test_random_flip_mirrors_some_crops_and_no_flip_none():
  """--norandom_flip (digits, text): each seed's crop as it is; with the flip, the same crop,
  mirrored for some seeds."""
  encoded = photos.encode(image_fixtures.image(seed=6, height=64, width=80))
  mirrored = []
  for index in range(8):
    seed = tf.constant([index, 2], tf.int64)
    crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))[0]
    window = preprocessing.decode_and_random_crop(encoded, NO_BOX, crop_seed,
                                                  constants.CROP_AREA_RANGE,
                                                  constants.CROP_ASPECT_RATIO_RANGE)
    crop, mirror = (preprocessing.resize(image, SIZE, SIZE).numpy()
                    for image in (window, window[:, ::-1]))
    unflipped = preprocessing.preprocess_for_train(encoded, NO_BOX, SIZE, seed, flip=False)
    np.testing.assert_array_equal(unflipped.numpy(), crop)
    flipped = preprocessing.preprocess_for_train(encoded, NO_BOX, SIZE, seed).numpy()
    assert np.array_equal(flipped, crop) != np.array_equal(flipped, mirror)
    mirrored.append(np.array_equal(flipped, mirror))
  assert 0 < sum(mirrored) < 8


def test_crop_windows_cover_the_record_bounding_box():
  height, width = 300, 400
  ymin, xmin, ymax, xmax = 0.5, 0.6, 0.9, 0.95
  bbox = tf.constant([[[ymin, xmin, ymax, xmax]]], tf.float32)
  windows = _windows([height, width, 3], bbox, draws=200)
  top, left, crop_height, crop_width = windows.T.astype(np.float64)
  def overlap(start, length, box_min, box_max, side):
    return np.clip(np.minimum(start + length, box_max * side) - np.maximum(start, box_min * side),
                   0, None)
  overlap_y = overlap(top, crop_height, ymin, ymax, height)
  overlap_x = overlap(left, crop_width, xmin, xmax, width)
  covered = overlap_y * overlap_x / ((ymax - ymin) * height * (xmax - xmin) * width)
  assert (covered >= constants.CROP_MIN_OBJECT_COVERED * 0.95).all()
  # Without the box, windows would often miss this corner region entirely.
  assert (top + crop_height > ymin * height).all() and (left + crop_width > xmin * width).all()


def _find_crop(full: np.ndarray, crop: np.ndarray, tolerance: float) -> bool:
  height, width = crop.shape[:2]
  for top in range(full.shape[0] - height + 1):
    for left in range(full.shape[1] - width + 1):
      window = full[top:top + height, left:left + width].astype(np.int32)
      if np.abs(window - crop).mean() <= tolerance:
        return True
  return False


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_random_crop_is_a_window_of_the_decoded_image(image_format):
  small = image_fixtures.image(seed=3, height=24, width=28)
  encoded = photos.encode(small, image_format)
  full = preprocessing.decode_image(encoded).numpy()
  for attempt in range(3):
    crop = preprocessing.decode_and_random_crop(encoded, NO_BOX, SEED + attempt)
    crop = crop.numpy().astype(np.int32)
    # PNG is sliced exactly; the fused JPEG decode differs a little at the crop edges
    # (upsampling), by up to ~2 levels on the smallest crops; a wrong window differs by tens.
    assert _find_crop(full, crop, tolerance=0.0 if image_format == "PNG" else 3.0)


def test_random_flip_gives_both_orientations_and_nothing_else():
  image = tf.constant(PIXELS)
  flipped = 0
  for i in range(40):
    out = preprocessing.random_flip(image, tf.constant([i, 3])).numpy()
    if np.array_equal(out, PIXELS[:, ::-1]):
      flipped += 1
    else:
      np.testing.assert_array_equal(out, PIXELS)
  assert 5 < flipped < 35


# (Pillow format, Pillow mode, largest mean abs difference from Pillow's own RGB decoding)
FORMATS = [
    ("JPEG", None, 1.5), ("JPEG", "L", 1.5), ("JPEG", "CMYK", 1.5),
    ("PNG", None, 0.0), ("PNG", "L", 0.0), ("PNG", "RGBA", 0.0), ("PNG", "P", 0.0),
    ("GIF", None, 0.0), ("BMP", None, 0.0), ("BMP", "L", 0.0), ("BMP", "P", 0.0),
    ("WEBP", None, 1.5),
]


@pytest.mark.parametrize("image_format,mode,max_error", FORMATS,
                         ids=[f"{f}-{m or 'RGB'}" for f, m, _ in FORMATS])
def test_every_format_decodes_to_rgb(image_format, mode, max_error):
  encoded = photos.encode(PIXELS, image_format, mode=mode)
  decoded = preprocessing.decode_image(encoded).numpy()
  assert decoded.shape == (40, 56, 3) and decoded.dtype == np.uint8
  with Image.open(io.BytesIO(encoded)) as reference:
    expected = np.asarray(reference.convert("RGB"), np.int32)
  assert np.abs(decoded - expected).mean() <= max_error
  # And the image is still the picture, not a gray or inverted rendering of it.
  source = PIXELS if mode not in ("L",) else np.repeat(expected[..., :1], 3, axis=-1)
  assert np.abs(decoded.astype(np.int32) - source).mean() < 16
  train = preprocessing.preprocess_for_train(encoded, NO_BOX, SIZE, SEED)
  assert train.shape == (SIZE, SIZE, 3) and train.dtype == tf.float32


def test_garbage_bytes_raise_op_error():
  with pytest.raises(tf.errors.InvalidArgumentError):
    preprocessing.decode_image(b"not an image at all")


def test_normalize_values_for_every_mode():
  pixel = np.array([255.0, 0.0, 128.0], np.float32)
  expected = {
      "rgb_mean": pixel - np.array(constants.RGB_MEANS),
      "caffe": pixel[::-1] - np.array(constants.CAFFE_BGR_MEANS),
      "torch": (pixel / 255.0 - np.array(constants.TORCH_MEANS)) / np.array(constants.TORCH_STDS),
      "unit": np.array([1.0, -1.0, 128 / 127.5 - 1.0]),
  }
  assert set(expected) == set(constants.NORMALIZATION_MODES)
  for mode, values in expected.items():
    batch = np.broadcast_to(pixel.astype(np.uint8), (2, 4, 5, 3))  # any leading shape, uint8 in
    out = preprocessing.normalize(batch, mode)
    assert out.dtype == tf.float32 and out.shape == (2, 4, 5, 3)
    np.testing.assert_allclose(out[1, 3, 4], values, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("mode", constants.NORMALIZATION_MODES)
def test_normalize_is_bit_identical_in_the_pipeline_and_in_a_compiled_step(mode):
  # The trainer normalizes uint8 training batches in its step (a graph grappler rewrites),
  # evaluation in the pipeline: the two must agree to the last bit, or runs drift apart.
  pixels = tf.constant(np.arange(256 * 3, dtype=np.int64).reshape(4, 8, 8, 3) % 256, tf.uint8)
  eager = preprocessing.normalize(pixels, mode).numpy()
  in_graph = tf.function(lambda images: preprocessing.normalize(images, mode))(pixels).numpy()
  in_pipeline = np.stack(list(tf.data.Dataset.from_tensor_slices(pixels).map(
      lambda image: preprocessing.normalize(image, mode)).as_numpy_iterator()))
  np.testing.assert_array_equal(in_graph, eager)
  np.testing.assert_array_equal(in_pipeline, eager)


def test_normalize_rejects_unknown_mode():
  with pytest.raises(ValueError, match=r"normalization must be one of .*Received: 'bgr'"):
    preprocessing.normalize(PIXELS, "bgr")


def test_to_uint8_rounds_half_up():
  out = preprocessing.to_uint8(tf.constant([0.0, 0.4, 0.5, 127.49, 254.5, 255.0]))
  assert out.dtype == tf.uint8
  np.testing.assert_array_equal(out, [0, 0, 1, 127, 255, 255])

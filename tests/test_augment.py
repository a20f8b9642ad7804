"""Augmentation: PIL parity of the ops, the published scaling, identity at magnitude 0 where
the definitions say so, uint8 in and out, shapes kept, one result per seed eagerly and in
Dataset.map, argument errors."""
import functools

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

import image_fixtures
from input_pipeline import augment
from input_pipeline import image_ops
from input_pipeline import constants

IMAGE = image_fixtures.image(seed=4, height=40, width=56)
# Photo-like but not spanning 0-255 in every channel, so AutoContrast and Equalize change it.
DULL = (IMAGE // 2 + 40).astype(np.uint8)
SEED = np.array([3, 5], np.int64)
FILL = (image_ops.FILL_VALUE,) * 3

# Every augmentation as the pipeline calls it: fn(image, seed).
AUGMENTATIONS = {
    "rand_augment_model_garden": lambda image, seed: augment.rand_augment(image, seed, 2, 9.0, 0.5),
    "rand_augment_timm": lambda image, seed: augment.rand_augment(
        image, seed, 2, 6.0, 0.5, "timm"),
    "auto_augment_v0": lambda image, seed: augment.auto_augment(image, seed, "v0"),
    "random_erasing": lambda image, seed: augment.random_erasing(image, seed, 1.0),
    "color_jitter": lambda image, seed: augment.color_jitter(image, seed, 0.4),
}
def _randoms(seed):
  """The uniform draws the table ops take, from a seed."""
  return tf.random.stateless_uniform([augment.OP_RANDOMS], seed)


# Every RandAugment and AutoAugment op at a middle magnitude: fn(image, seed).
TABLE_OPS = {
    f"{table}/{name}": (lambda op: lambda image, seed: op(image, 5.0, _randoms(seed)))(op)
    for table, ops in (*augment.RANDAUGMENT_OPS.items(), ("autoaugment", augment.AUTOAUGMENT_OPS))
    for name, op in ops.items()}


def _in_map(fn, image, seed):
  dataset = tf.data.Dataset.from_tensors((image, seed)).map(fn)
  return dataset.get_single_element(), dataset.element_spec


@pytest.mark.parametrize("name", [*AUGMENTATIONS, *TABLE_OPS])
def test_uint8_in_uint8_out_shape_kept_and_one_result_per_seed(name):
  fn = {**AUGMENTATIONS, **TABLE_OPS}[name]
  eager = fn(tf.constant(DULL), tf.constant(SEED))
  mapped, spec = _in_map(fn, DULL, SEED)
  assert eager.dtype == mapped.dtype == tf.uint8 and eager.shape == DULL.shape
  np.testing.assert_array_equal(eager, mapped)
  np.testing.assert_array_equal(eager, fn(tf.constant(DULL), tf.constant(SEED)))
  if name in AUGMENTATIONS:
    assert spec.shape.as_list() == list(DULL.shape)  # the static shape survives the map
    compiled = tf.function(fn)
    outputs = {compiled(DULL, tf.constant([i, 9], tf.int64)).numpy().tobytes() for i in range(6)}
    assert len(outputs) >= 3  # seeds matter


IDENTITY_AT_ZERO = {
    # The TPU/Model Garden scaling: Posterize keeps 0 bits and Solarize inverts everything at
    # level 0, the enhancements blend with factor 0.1.
    "model_garden": {"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout",
                     "SolarizeAdd"},
    # timm's increasing ops: all but the magnitude-free ones and PosterizeIncreasing (4 bits).
    "timm": {"Rotate", "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing",
             "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing", "ShearX",
             "ShearY", "TranslateXRel", "TranslateYRel"},
}


@pytest.mark.parametrize("variant", augment.RANDAUGMENT_VARIANTS)
def test_ops_are_identity_at_magnitude_zero_exactly_where_the_definition_says(variant):
  unchanged = {name for name, op in augment.RANDAUGMENT_OPS[variant].items()
               if np.array_equal(op(tf.constant(DULL), 0.0, _randoms(SEED)), DULL)}
  assert unchanged == IDENTITY_AT_ZERO[variant]


def test_rand_augment_without_layers_and_colour_jitter_without_strength_change_nothing():
  np.testing.assert_array_equal(augment.rand_augment(DULL, SEED, 0, 9.0), DULL)
  np.testing.assert_array_equal(augment.color_jitter(DULL, SEED, 0.0), DULL)
  np.testing.assert_array_equal(augment.random_erasing(DULL, SEED, 0.0), DULL)


def _pil(image, operation):
  return np.asarray(operation(Image.fromarray(image)))


def _affine(matrix, resample=Image.NEAREST):
  return lambda pil: pil.transform(pil.size, Image.AFFINE, matrix, resample=resample,
                                   fillcolor=FILL)


# (our op, PIL's) on the same image: equal to the last bit.
PIL_PARITY = {
    "auto_contrast": (image_ops.auto_contrast, ImageOps.autocontrast),
    "equalize": (image_ops.equalize, ImageOps.equalize),
    "invert": (image_ops.invert, ImageOps.invert),
    **{f"posterize_{bits}": (functools.partial(image_ops.posterize, bits=bits),
                             functools.partial(ImageOps.posterize, bits=bits))
       for bits in (1, 4, 7)},
    **{f"solarize_{threshold}": (functools.partial(image_ops.solarize, threshold=threshold),
                                 functools.partial(ImageOps.solarize, threshold=threshold))
       for threshold in (0, 100, 256)},
    **{f"{name}_{factor}": (functools.partial(op, factor=factor),
                            lambda pil, enhancer=enhancer, factor=factor:
                            enhancer(pil).enhance(factor))
       for name, op, enhancer in (("color", image_ops.color, ImageEnhance.Color),
                                  ("contrast", image_ops.contrast, ImageEnhance.Contrast),
                                  ("brightness", image_ops.brightness, ImageEnhance.Brightness),
                                  ("sharpness", image_ops.sharpness, ImageEnhance.Sharpness))
       for factor in (0.1, 0.5, 1.7)},
}


@pytest.mark.parametrize("name", PIL_PARITY)
def test_colour_ops_equal_pil(name):
  ours, theirs = PIL_PARITY[name]
  for image in (IMAGE, DULL):
    np.testing.assert_array_equal(ours(tf.constant(image)), _pil(image, theirs))


# Geometric ops against PIL with the grey fill: equal to the last bit (nearest-neighbour in
# PIL's 16.16 fixed point, bilinear in its float64 steps).
GEOMETRY = {
    "rotate_17": (lambda x: image_ops.rotate(x, 17.0), lambda pil: pil.rotate(17, fillcolor=FILL)),
    "rotate_-23": (lambda x: image_ops.rotate(x, -23.0),
                   lambda pil: pil.rotate(-23, fillcolor=FILL)),
    "shear_x": (lambda x: image_ops.shear_x(x, 0.23), _affine((1, 0.23, 0, 0, 1, 0))),
    "shear_y": (lambda x: image_ops.shear_y(x, -0.27), _affine((1, 0, 0, -0.27, 1, 0))),
    # AutoAugment v0's first sub-policy; a column half-way in exact arithmetic.
    "shear_y_0.12": (lambda x: image_ops.shear_y(x, 0.12), _affine((1, 0, 0, 0.12, 1, 0))),
    # sin(30 degrees) is 0.5 once PIL rounds it: many sample points half-way.
    "rotate_30": (lambda x: image_ops.rotate(x, 30.0), lambda pil: pil.rotate(30, fillcolor=FILL)),
    "translate_x": (lambda x: image_ops.translate_x(x, -7.0), _affine((1, 0, -7, 0, 1, 0))),
    "translate_y": (lambda x: image_ops.translate_y(x, 5.4), _affine((1, 0, 0, 0, 1, 5.4))),
    "rotate_17_bilinear": (lambda x: image_ops.rotate(x, 17.0, "bilinear"),
                           lambda pil: pil.rotate(17, Image.BILINEAR, fillcolor=FILL)),
    "shear_x_bilinear": (lambda x: image_ops.shear_x(x, 0.23, "bilinear"),
                         _affine((1, 0.23, 0, 0, 1, 0), Image.BILINEAR)),
    "translate_x_bilinear": (lambda x: image_ops.translate_x(x, -7.3, "bilinear"),
                             _affine((1, 0, -7.3, 0, 1, 0), Image.BILINEAR)),
}


@pytest.mark.parametrize("name", GEOMETRY)
def test_geometric_ops_equal_pil(name):
  ours, theirs = GEOMETRY[name]
  for image in (IMAGE, image_fixtures.image(seed=7, height=150, width=150)):
    np.testing.assert_array_equal(ours(tf.constant(image)), _pil(image, theirs))


def test_rotation_by_90_degrees_is_a_quarter_turn_counter_clockwise():
  square = image_fixtures.image(seed=6, height=36, width=36)
  np.testing.assert_array_equal(image_ops.rotate(square, 90.0), np.rot90(square))


def _either(*candidates):
  return [np.asarray(candidate) for candidate in candidates]


# Arguments as the references compute them, in Python floats, so a candidate is equal to
# the last bit.
MODEL_GARDEN_ENHANCE_10 = 1.0 * 1.8 + 0.1
TIMM_ENHANCE_10 = (max(0.1, 1.0 - 0.9), 1.0 + 0.9)
TIMM_TRANSLATE_10 = 0.45 * 56


# (variant table, op, level, what the published scaling makes of it: one of these images)
SCALING = [
    ("model_garden", "Rotate", 10.0, _either(image_ops.rotate(IMAGE, 30.0),
                                             image_ops.rotate(IMAGE, -30.0))),
    ("model_garden", "Posterize", 10.0, _either(image_ops.posterize(IMAGE, 4))),
    ("model_garden", "Solarize", 5.0, _either(image_ops.solarize(IMAGE, 128))),
    ("model_garden", "Contrast", 10.0, _either(image_ops.contrast(IMAGE, MODEL_GARDEN_ENHANCE_10))),
    ("model_garden", "ShearX", 10.0, _either(image_ops.shear_x(IMAGE, 0.3),
                                             image_ops.shear_x(IMAGE, -0.3))),
    ("model_garden", "TranslateY", 0.7, _either(image_ops.translate_y(IMAGE, 7.0),
                                                image_ops.translate_y(IMAGE, -7.0))),
    ("model_garden", "SolarizeAdd", 10.0, _either(image_ops.solarize_add(IMAGE, 110))),
    ("timm", "PosterizeIncreasing", 10.0, _either(image_ops.posterize(IMAGE, 0))),
    ("timm", "SolarizeIncreasing", 5.0, _either(image_ops.solarize(IMAGE, 128))),
    ("timm", "ColorIncreasing", 10.0, _either(*(image_ops.color(IMAGE, factor)
                                                for factor in TIMM_ENHANCE_10))),
    ("timm", "TranslateXRel", 10.0, _either(
        image_ops.translate_x(IMAGE, TIMM_TRANSLATE_10, "bilinear"),
        image_ops.translate_x(IMAGE, -TIMM_TRANSLATE_10, "bilinear"))),
]


@pytest.mark.parametrize("variant,name,level,candidates", SCALING,
                         ids=[f"{v}/{n}" for v, n, _, _ in SCALING])
def test_ops_follow_the_published_scaling(variant, name, level, candidates):
  op = augment.RANDAUGMENT_OPS[variant][name]
  seen = set()
  for sign_draw in (0.25, 0.75):
    out = op(tf.constant(IMAGE), level, tf.constant([sign_draw, 0.5, 0.5])).numpy()
    matches = [j for j, candidate in enumerate(candidates) if np.array_equal(out, candidate)]
    assert matches, f"{name} at level {level} is none of the expected images"
    seen.add(matches[0])
  assert len(seen) == len(candidates)  # each sign of the signed ops


@pytest.mark.parametrize("centre,rows,columns", [
    ((0.5, 0.5), (14, 26), (22, 34)),  # 40x56: centre pixel (20, 28), side 12
    ((0.0, 0.99), (0, 6), (49, 56)),  # clipped at the top right corner
])
def test_cutout_fills_a_clipped_square_of_grey_and_keeps_the_rest(centre, rows, columns):
  out = image_ops.cutout(tf.constant(IMAGE), tf.constant(centre), 6).numpy()
  expected = IMAGE.copy()
  expected[rows[0]:rows[1], columns[0]:columns[1]] = image_ops.FILL_VALUE
  np.testing.assert_array_equal(out, expected)


def _unchanged_fraction(variant, layers=1, magnitude=9.0, draws=48):
  compiled = tf.function(lambda seed: augment.rand_augment(DULL, seed, layers, magnitude,
                                                           variant=variant))
  outputs = [compiled(tf.constant([i, 7], tf.int64)).numpy() for i in range(draws)]
  return np.mean([np.array_equal(out, DULL) for out in outputs])


def test_timm_applies_each_drawn_op_with_probability_half_model_garden_always():
  # model_garden: only its no-op choice (1 in 17) leaves the image as it was; timm: the
  # coin (0.5). No op is the identity at magnitude 9 on this image.
  assert _unchanged_fraction("model_garden") < 0.2
  assert 0.3 < _unchanged_fraction("timm") < 0.7


def test_magnitude_noise_changes_the_strength_of_the_same_drawn_ops():
  fixed_fn = tf.function(lambda seed: augment.rand_augment(DULL, seed, 1, 5.0, 0.0))
  noisy_fn = tf.function(lambda seed: augment.rand_augment(DULL, seed, 1, 5.0, 2.0))
  differ = 0
  for i in range(16):
    seed = tf.constant([i, 4], tf.int64)
    fixed, noisy = fixed_fn(seed).numpy(), noisy_fn(seed).numpy()
    differ += not np.array_equal(fixed, noisy)
  # Same op drawn (the seed), another magnitude: differs unless the op ignores it.
  assert 4 <= differ < 16


def test_auto_augment_v0_draws_sub_policies_of_the_published_policy():
  compiled = tf.function(augment.auto_augment)
  outputs = [compiled(DULL, tf.constant([i, 1], tf.int64)).numpy() for i in range(40)]
  distinct = {out.tobytes() for out in outputs}
  assert len(distinct) > 10
  # Probabilities below 1 (and sub-policies like ShearX at 0 then Solarize) leave some as they were.
  assert any(np.array_equal(out, DULL) for out in outputs)


def test_random_erasing_fills_one_rectangle_with_imagenet_coloured_noise():
  image = np.full((200, 200, 3), 255, np.uint8)  # white: noise pixels always differ
  for i in range(6):
    out = augment.random_erasing(image, tf.constant([i, 0], tf.int64), 1.0).numpy()
    rows, columns = np.nonzero(np.any(out != image, axis=-1))
    height, width = rows.max() - rows.min() + 1, columns.max() - columns.min() + 1
    area = height * width / image[..., 0].size
    low, high = augment.RANDOM_ERASING_AREA_RANGE
    assert low * 0.95 <= area <= high * 1.05
    assert 0.3 * 0.95 <= height / width <= (1 / 0.3) * 1.05
    assert len(rows) > 0.9 * height * width  # a solid rectangle, not scattered pixels
  black = np.zeros_like(image)
  erased = augment.random_erasing(black, tf.constant(SEED), 1.0, area_range=(0.3, 0.3)).numpy()
  rows, columns = np.nonzero(np.any(erased != 0, axis=-1))
  noise = erased[rows.min():rows.max() + 1, columns.min():columns.max() + 1].reshape(-1, 3)
  # N(0, 1) after the torch normalization: mean + std * N(0, 1) in pixels, clipped, rounded.
  means, stds = np.array(constants.TORCH_MEANS) * 255, np.array(constants.TORCH_STDS) * 255
  reference = np.clip(np.floor(means + stds * np.random.default_rng(0).standard_normal(
      (200_000, 3)) + 0.5), 0, 255)
  np.testing.assert_allclose(noise.mean(axis=0), reference.mean(axis=0), atol=1.5)
  np.testing.assert_allclose(noise.std(axis=0), reference.std(axis=0), atol=1.5)


@pytest.mark.parametrize("call,message", [
    (lambda: augment.rand_augment(IMAGE, SEED, 2, 9.0, variant="torch"),
     r"^variant must be one of \('model_garden', 'timm'\)\. Received: 'torch'$"),
    (lambda: augment.rand_augment(IMAGE, SEED, 2, -1.0),
     r"^magnitude must be >= 0\. Received: -1\.0$"),
    (lambda: augment.rand_augment(IMAGE, SEED, -1, 9.0),
     r"^num_layers must be an integer >= 0\. Received: -1$"),
    (lambda: augment.auto_augment(IMAGE, SEED, "v1"),
     r"^policy must be one of \('v0',\)\. Received: 'v1'$"),
    (lambda: augment.random_erasing(IMAGE, SEED, 1.5),
     r"^probability must be in \[0, 1\]\. Received: 1\.5$"),
    (lambda: augment.random_erasing(IMAGE, SEED, 0.5, (0.5, 0.2)),
     r"^area_range must be \(low, high\) with 0 < low <= high <= 1\. Received: \(0\.5, 0\.2\)$"),
    (lambda: augment.color_jitter(IMAGE, SEED, -0.1), r"^strength must be >= 0\. Received: -0\.1$"),
])
def test_bad_arguments_are_clear_errors(call, message):
  with pytest.raises(ValueError, match=message):
    call()

"""RandAugment's and AutoAugment's ops against the code each follows, op by op at every
magnitude 0-10 the policies use, on photo-like images: timm's auto_augment.py (its own
level-to-argument functions and ops, i.e. PIL's ImageOps, ImageEnhance and
Image.transform) for the ops that follow PIL, and the Model Garden's own
official/vision/ops/augment.py for the ops that follow it."""
import os
import sys
import types
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import image_fixtures
import torch_fixtures  # noqa: F401  (torchvision fixed up before timm imports it)
from benchmarks import official
from input_pipeline import augment
from input_pipeline import image_ops
from timm.data import auto_augment as timm_augment  # noqa: E402

# Op by op at every level against two references: the whole suite's. The fast tier keeps
# test_augment.py's checks of the same ops (dtypes, shapes, seeds, published scaling).
pytestmark = pytest.mark.slow

LEVELS = range(11)
# Photos of several sizes, each also slightly hazy: no channel spans 0-255, so AutoContrast
# and Equalize have work to do.
_PHOTOS = [image_fixtures.image(seed, height, width)
           for seed, (height, width) in enumerate([(64, 96), (97, 75), (150, 150)])]
PHOTOS = _PHOTOS + [np.round(photo * 0.9 + 5).astype(np.uint8) for photo in _PHOTOS]
FILL = (image_ops.FILL_VALUE,) * 3
# Draws of the op's sign (below 0.5: negative) and, for Cutout, of its centre.
SIGN_DRAWS = (0.25, 0.75)

# Per table, how timm builds its ops to match ours: the Model Garden's constants and
# nearest-neighbour sampling, or timm's own `inc1` ops (bilinear; one of timm's two).
TIMM_HPARAMS = {
    "model_garden": dict(translate_const=100, img_mean=FILL, interpolation=Image.NEAREST),
    "autoaugment": dict(translate_const=250, img_mean=FILL, interpolation=Image.NEAREST),
    "timm": dict(translate_pct=0.45, img_mean=FILL, interpolation=Image.BILINEAR),
}
TABLES = {**augment.RANDAUGMENT_OPS, "autoaugment": augment.AUTOAUGMENT_OPS}
# timm has no Cutout: the Model Garden's is its reference (below).
PIL_OPS = [(table, name) for table, ops in TABLES.items() for name in ops if name != "Cutout"]


def _ours(table, name, image, level, sign_draw, centre=(0.5, 0.5)):
  randoms = tf.constant([sign_draw, *centre], tf.float32)
  return TABLES[table][name](tf.constant(image), float(level), randoms).numpy()


def _timm(table, name, image, level, sign_draw):
  """timm's op `name` at `level`, its random sign forced to ours."""
  op = timm_augment.AugmentOp(name, prob=1.0, magnitude=level, hparams=TIMM_HPARAMS[table])
  # timm negates when random.random() > 0.5, we when the draw is below 0.5.
  with mock.patch.object(timm_augment.random, "random", return_value=1.0 - sign_draw):
    args = op.level_fn(level, op.hparams) if op.level_fn else ()
  if name.startswith("Posterize") and args == (0,):
    # This Pillow refuses to keep 0 bits; the mask its posterize builds, ~(2**8 - 1) = 0,
    # makes the image black, as ours does.
    return np.zeros_like(image)
  return np.asarray(op.aug_fn(Image.fromarray(image), *args, **op.kwargs))


@pytest.mark.parametrize("table,name", PIL_OPS, ids=[f"{t}/{n}" for t, n in PIL_OPS])
def test_ops_equal_timms_pil_ops_at_every_level(table, name):
  for image in PHOTOS:
    for level in LEVELS:
      for sign_draw in SIGN_DRAWS:
        ours = _ours(table, name, image, level, sign_draw)
        theirs = _timm(table, name, image, level, sign_draw)
        np.testing.assert_array_equal(
            ours, theirs,
            err_msg=f"{table}/{name} at level {level}, sign draw {sign_draw}, {image.shape}")


# Beside the official install (benchmarks/official.py), the Model Garden's augment ops need
# gin (through official.core).
GIN_INSTALL = ".venv/bin/python -m pip install --no-deps --target .official gin-config==0.5.0"


@pytest.fixture(scope="module")
def model_garden():
  """The Model Garden's official/vision/ops/augment.py, from .official.

  official/vision/__init__.py imports the whole vision library (models, the NLP layers,
  scipy), which the install leaves out; augment.py needs TF, gin and box_ops. So
  official.vision is entered as a bare package for the import, its __init__ not run.
  """
  vision = types.ModuleType("official.vision")
  vision.__path__ = [os.path.join(official.DEFAULT_DIR, "official", "vision")]
  entered = sys.modules.setdefault("official.vision", vision) is vision
  try:
    module, reason = official.import_module("official.vision.ops.augment")
  finally:
    if entered:
      del sys.modules["official.vision"]
  if module is None:
    pytest.fail(f"{reason}; and {GIN_INSTALL}")
  return module


def _model_garden_op(model_garden, name, image, level, translate_const=100.0, cutout_const=40.0):
  args = model_garden.level_to_arg(cutout_const, translate_const)[name](float(level))
  if name in model_garden.REPLACE_FUNCS:
    args = (*args, [image_ops.FILL_VALUE] * 3)
  return model_garden.NAME_TO_FUNC[name](tf.constant(image), *args).numpy()


# The ops whose pixels follow the Model Garden's, and the levels at which they equal its:
# its Posterize keeps 1 bit at levels 0-2 (a shift by 8 of a uint8 shifts by 7) and its
# Solarize inverts every value at level 10 (threshold 256 wraps to 0); ours and PIL's keep
# 0 bits and invert none. The other ops follow PIL (test above; docs/training.md).
MODEL_GARDEN_EQUAL = {"Brightness": LEVELS, "Equalize": LEVELS, "Invert": LEVELS,
                      "SolarizeAdd": LEVELS, "Posterize": range(3, 11), "Solarize": range(10)}


@pytest.mark.parametrize("name", MODEL_GARDEN_EQUAL)
def test_ops_that_follow_the_model_garden_equal_its_own(model_garden, name):
  for image in PHOTOS:
    for level in MODEL_GARDEN_EQUAL[name]:
      np.testing.assert_array_equal(
          _ours("model_garden", name, image, level, 0.75),
          _model_garden_op(model_garden, name, image, level), err_msg=f"{name} at level {level}")


@pytest.mark.parametrize("table,translate_const,cutout_const",
                         [("model_garden", 100.0, 40.0), ("autoaugment", 250.0, 100.0)])
def test_cutout_equals_the_model_gardens_own(model_garden, table, translate_const, cutout_const):
  for seed, image in enumerate(PHOTOS):
    for level in LEVELS:
      # Its centre comes from TF's global generator: draw it again from the same seed.
      tf.random.set_seed(seed)
      theirs = _model_garden_op(model_garden, "Cutout", image, level, translate_const,
                                cutout_const)
      tf.random.set_seed(seed)
      centre = [(int(tf.random.uniform([], maxval=side, dtype=tf.int32)) + 0.5) / side
                for side in image.shape[:2]]
      np.testing.assert_array_equal(_ours(table, "Cutout", image, level, 0.75, centre), theirs,
                                    err_msg=f"Cutout at level {level}")


def test_model_garden_ops_we_do_not_follow_differ_as_the_docs_say(model_garden):
  image = PHOTOS[0]
  # Posterize at level 0: it keeps the top bit, we nothing.
  np.testing.assert_array_equal(_model_garden_op(model_garden, "Posterize", image, 0),
                                image & 0x80)
  # Solarize at level 10: it inverts everything, we nothing.
  np.testing.assert_array_equal(_model_garden_op(model_garden, "Solarize", image, 10),
                                255 - image)
  np.testing.assert_array_equal(_ours("model_garden", "Solarize", image, 10, 0.75), image)
  # TranslateX by 100 px of a 96 px image: it reflects the image into the uncovered part,
  # we fill it with grey.
  np.testing.assert_array_equal(_ours("model_garden", "TranslateX", image, 10, 0.75),
                                np.full_like(image, image_ops.FILL_VALUE))
  assert (_model_garden_op(model_garden, "TranslateX", image, 10) != image_ops.FILL_VALUE).mean() > 0.9
  # Contrast: it blends each channel with that channel's mean, PIL with the grey level's.
  assert not np.array_equal(_ours("model_garden", "Contrast", image, 2, 0.75),
                            _model_garden_op(model_garden, "Contrast", image, 2))

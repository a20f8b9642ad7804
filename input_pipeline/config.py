"""DataConfig: everything build_dataset needs, in one frozen dataclass."""
import dataclasses

from input_pipeline import augment
from input_pipeline import checks
from input_pipeline import constants
from input_pipeline import preprocessing

SOURCES = ("imagenet", "folder", "tfds", "synthetic")
OUTPUT_DTYPES = ("float32", "uint8")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """How to read and preprocess one data set.

  `batch_size` is the global batch; build_dataset divides it by the number of
  replicas in sync given by the InputContext.
  """
  source: str = "synthetic"
  # imagenet: directory of TFRecord shards; folder: image root; tfds: data_dir.
  data_dir: str | None = None
  # imagenet: override the shard patterns (glob, relative to data_dir or absolute).
  train_file_pattern: str = constants.IMAGENET_TRAIN_PATTERN
  eval_file_pattern: str = constants.IMAGENET_EVAL_PATTERN
  tfds_name: str | None = None
  train_split: str = "train"
  eval_split: str = "validation"
  image_size: int = constants.DEFAULT_IMAGE_SIZE
  num_classes: int = constants.IMAGENET_NUM_CLASSES
  label_offset: int = constants.IMAGENET_LABEL_OFFSET
  batch_size: int = 256
  normalization: str = constants.DEFAULT_NORMALIZATION
  # "uint8": the pipeline skips normalization and the model normalizes.
  output_dtype: str = "float32"
  # folder source without a validation subfolder: fraction held out by file-name hash.
  validation_fraction: float = 0.1
  shuffle_buffer_size: int = 10_000
  # Keep the encoded records in memory after the first pass: training / evaluation.
  cache: bool = False
  eval_cache: bool = False
  # Training: tf.data's experimental_slack (prefetch slack, the official
  # --tf_data_experimental_slack).
  experimental_slack: bool = False
  private_threads: int | None = None
  # synthetic source: examples per split.
  synthetic_num_examples: int = 1024
  seed: int | None = None
  # Eval: the shorter side before the centre crop (None: eval size / eval_crop_fraction),
  # and how it is resized (constants.EVAL_RESIZE_METHODS); pretrained weights set both
  # to the protocol their accuracy was published with.
  eval_resize_size: int | None = None
  eval_resize_method: str = "bilinear"
  # Train and test resolution (FixRes: train 160, test 224). None: image_size.
  eval_image_size: int | None = None
  # The train crop's fraction of the image and its width / height (sample_distorted_bounding_box).
  train_crop_area_range: tuple[float, float] = constants.CROP_AREA_RANGE
  train_crop_aspect_range: tuple[float, float] = constants.CROP_ASPECT_RATIO_RANGE
  # The official recipe's random horizontal flip of each training crop; off where a mirror
  # image is another class or no image at all (digits, text).
  random_flip: bool = True
  # Eval resizes the shorter side to eval size / this, then crops the centre; applies
  # when eval_resize_size, which sets that side itself, is None.
  eval_crop_fraction: float = constants.EVAL_CROP_FRACTION
  # Per-image training augmentation on the uint8 crop (input_pipeline.augment), in this
  # order: colour jitter, AutoAugment or RandAugment, random erasing. 0 / None: off.
  color_jitter: float = 0.0
  autoaugment: str | None = None
  randaugment_layers: int = 0
  randaugment_magnitude: float = 10.0
  randaugment_magnitude_std: float = 0.0
  randaugment_variant: str = "model_garden"
  random_erasing_probability: float = 0.0
  random_erasing_area_range: tuple[float, float] = augment.RANDOM_ERASING_AREA_RANGE

  @property
  def eval_size(self) -> int:
    """The evaluation (and export) image size: eval_image_size, or image_size when unset."""
    return self.eval_image_size or self.image_size

  @property
  def eval_shorter_side(self) -> int:
    """Eval: the shorter side before the centre crop, eval_resize_size or from the crop fraction."""
    return self.eval_resize_size or preprocessing.eval_resize_size(self.eval_size,
                                                                   self.eval_crop_fraction)

  @property
  def augments(self) -> bool:
    """Whether training images get any augmentation beyond the official crop and flip."""
    return bool(self.color_jitter or self.autoaugment or self.randaugment_layers
                or self.random_erasing_probability)

  def __post_init__(self):
    def check(ok, field, expected):
      checks.check(ok, field, expected, getattr(self, field))
    check(self.source in SOURCES, "source", f"one of {SOURCES}")
    check(self.normalization in constants.NORMALIZATION_MODES, "normalization",
          f"one of {constants.NORMALIZATION_MODES}")
    check(self.output_dtype in OUTPUT_DTYPES, "output_dtype", f"one of {OUTPUT_DTYPES}")
    check(self.image_size >= constants.MIN_IMAGE_SIZE, "image_size",
          f">= {constants.MIN_IMAGE_SIZE}")
    check(self.batch_size >= 1, "batch_size", ">= 1")
    check(self.num_classes >= 1, "num_classes", ">= 1")
    check(0.0 <= self.validation_fraction < 1.0, "validation_fraction", "in [0, 1)")
    check(self.shuffle_buffer_size >= 1, "shuffle_buffer_size", ">= 1")
    check(self.synthetic_num_examples >= 1, "synthetic_num_examples", ">= 1")
    check(isinstance(self.random_flip, bool), "random_flip", "True or False")
    check(self.private_threads is None or self.private_threads >= 1, "private_threads",
          "None or >= 1")
    check(self.eval_image_size is None or self.eval_image_size >= constants.MIN_IMAGE_SIZE,
          "eval_image_size", f"None or >= {constants.MIN_IMAGE_SIZE}")
    check(self.eval_resize_size is None or self.eval_resize_size >= self.eval_size,
          "eval_resize_size", f"None or >= the eval size ({self.eval_size})")
    check(self.eval_resize_method in constants.EVAL_RESIZE_METHODS, "eval_resize_method",
          f"one of {constants.EVAL_RESIZE_METHODS}")
    check(_is_range(self.train_crop_area_range) and 0 < self.train_crop_area_range[0]
          and self.train_crop_area_range[1] <= 1, "train_crop_area_range",
          "(low, high) with 0 < low <= high <= 1")
    check(_is_range(self.train_crop_aspect_range) and self.train_crop_aspect_range[0] > 0,
          "train_crop_aspect_range", "(low, high) with 0 < low <= high")
    check(0 < self.eval_crop_fraction <= 1, "eval_crop_fraction", "in (0, 1]")
    check(self.eval_resize_size is None or self.eval_crop_fraction == constants.EVAL_CROP_FRACTION,
          "eval_crop_fraction", f"{constants.EVAL_CROP_FRACTION} (the default) when "
          f"eval_resize_size ({self.eval_resize_size}) sets the shorter side itself")
    check(self.color_jitter >= 0, "color_jitter", ">= 0")
    check(self.autoaugment in (None, *augment.AUTOAUGMENT_POLICIES), "autoaugment",
          f"None or one of {augment.AUTOAUGMENT_POLICIES}")
    check(self.randaugment_layers >= 0, "randaugment_layers", ">= 0 (0: no RandAugment)")
    check(self.randaugment_magnitude >= 0, "randaugment_magnitude", ">= 0")
    check(self.randaugment_magnitude_std >= 0, "randaugment_magnitude_std", ">= 0")
    check(self.randaugment_variant in augment.RANDAUGMENT_VARIANTS, "randaugment_variant",
          f"one of {augment.RANDAUGMENT_VARIANTS}")
    check(not (self.autoaugment and self.randaugment_layers), "autoaugment",
          "None when randaugment_layers > 0 (one policy or the other)")
    check(0 <= self.random_erasing_probability <= 1, "random_erasing_probability", "in [0, 1]")
    check(_is_range(self.random_erasing_area_range) and 0 < self.random_erasing_area_range[0]
          and self.random_erasing_area_range[1] <= 1, "random_erasing_area_range",
          "(low, high) with 0 < low <= high <= 1")


def _is_range(values) -> bool:
  return len(values) == 2 and values[0] <= values[1]

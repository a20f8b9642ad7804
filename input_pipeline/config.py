"""DataConfig: everything build_dataset needs, in one frozen dataclass."""
import dataclasses

from input_pipeline import constants

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
  # Eval: the shorter side before the centre crop (None: image_size / EVAL_CROP_FRACTION),
  # and how it is resized (constants.EVAL_RESIZE_METHODS); pretrained weights set both
  # to the protocol their accuracy was published with.
  eval_resize_size: int | None = None
  eval_resize_method: str = "bilinear"

  def __post_init__(self):
    def check(ok, argument, expected):
      if not ok:
        raise ValueError(f"{argument} must be {expected}. Received: {getattr(self, argument)!r}")
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
    check(self.private_threads is None or self.private_threads >= 1, "private_threads",
          "None or >= 1")
    check(self.eval_resize_size is None or self.eval_resize_size >= self.image_size,
          "eval_resize_size", f"None or >= image_size ({self.image_size})")
    check(self.eval_resize_method in constants.EVAL_RESIZE_METHODS, "eval_resize_method",
          f"one of {constants.EVAL_RESIZE_METHODS}")

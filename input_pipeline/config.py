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
  cache: bool = False
  private_threads: int | None = None
  # synthetic source: examples per split.
  synthetic_num_examples: int = 1024
  seed: int | None = None

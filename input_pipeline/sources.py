"""Where examples come from: ImageNet TFRecords, an image folder, TFDS, or synthetic images.

Every source yields raw elements (records, paths, TFDS dicts, indices) already
sharded between input pipelines, and turns one element into the same example:
{"image": encoded image bytes, "label": int32, "bbox": float32 [1, N, 4]}.
Decoding and preprocessing are build_dataset's business, so every source gets
the same crop, flip, resize and bad-file handling.
"""
import dataclasses
import functools
import os
from typing import Callable

import tensorflow as tf
from absl import logging

from input_pipeline import constants
from input_pipeline import folder
from input_pipeline import preprocessing
from input_pipeline.config import DataConfig

# Files read at once by the parallel interleave; more buys nothing on local disks.
MAX_INTERLEAVE_CYCLE = 16


@dataclasses.dataclass(frozen=True)
class Shard:
  """This input pipeline's share of the data: every `count`-th part starting at `index`."""
  count: int = 1
  index: int = 0
  input_context: tf.distribute.InputContext | None = None

  @classmethod
  def from_context(cls, input_context):
    if input_context is None:
      return cls()
    return cls(input_context.num_input_pipelines, input_context.input_pipeline_id, input_context)


@dataclasses.dataclass(frozen=True)
class Source:
  # () -> examples in the split; a call, as counting TFRecords reads them all.
  count_examples: Callable[[], int]
  class_names: tuple[str, ...]
  # (shard, training, seed) -> dataset of raw elements, sharded, files shuffled and interleaved.
  read: Callable[[Shard, bool, int | None], tf.data.Dataset]
  # raw element -> example dict; fails on bad data (build_dataset skips those).
  to_example: Callable
  # raw element -> a string naming it in logs; never fails.
  name: Callable


def _example(image, label, bbox=None):
  return {
      "image": image,
      "label": tf.cast(label, tf.int32),
      "bbox": preprocessing.whole_image_bbox() if bbox is None else bbox,
  }


def _read_files(files: tuple, shard: Shard, training: bool, seed, open_file=None,
                read_file=None) -> tf.data.Dataset:
  """Files -> this shard's records.

  `files` is a tuple of equal-length lists (paths first). A file holds many
  records (`open_file` -> dataset) or is one record (`read_file` -> element).
  """
  num_files = len(files[0])
  dataset = tf.data.Dataset.from_tensor_slices(files)
  by_file = num_files >= shard.count
  # Shard by file when every pipeline gets at least one: each reads only its own files.
  if by_file:
    dataset = dataset.shard(shard.count, shard.index)
    # Shuffle the file order, anew each epoch, so record order varies between epochs.
    # (Only when sharding by file: by record, every pipeline needs the same order.)
    if training:
      dataset = dataset.shuffle(num_files, seed=seed, reshuffle_each_iteration=True)
  # Read several files at once: parallel reads hide storage latency, and
  # alternating between record files mixes classes stored together. Sharding
  # by record needs the same order in every pipeline; otherwise the options decide.
  deterministic = None if by_file else True
  if open_file:
    dataset = dataset.interleave(
        open_file, cycle_length=min(MAX_INTERLEAVE_CYCLE, num_files), block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
  else:
    dataset = dataset.map(read_file, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=deterministic)
  # Fewer files than pipelines: every pipeline reads all and keeps every count-th record.
  if not by_file:
    dataset = dataset.shard(shard.count, shard.index)
  return dataset


# ImageNet-format TFRecords.

def _glob(config: DataConfig, pattern: str, argument: str) -> list[str]:
  if not os.path.isabs(pattern) and "://" not in pattern:
    if not config.data_dir:
      raise ValueError(
          f"source='imagenet' needs data_dir (the folder of TFRecord shards) or an absolute "
          f"{argument}. Received: data_dir={config.data_dir!r}, {argument}={pattern!r}")
    pattern = os.path.join(config.data_dir, pattern)
  files = sorted(tf.io.gfile.glob(pattern))
  if not files:
    raise ValueError(f"{argument} matches no TFRecord files. Received: {pattern!r}")
  return files


def _count_records(files: list[str]) -> int:
  records = tf.data.TFRecordDataset(files, num_parallel_reads=min(len(files), 8))
  return int(records.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1))


def _imagenet_num_examples(files, pattern, training) -> int:
  official = ((constants.IMAGENET_TRAIN_PATTERN, constants.IMAGENET_NUM_TRAIN_SHARDS,
               constants.IMAGENET_NUM_TRAIN_IMAGES) if training else
              (constants.IMAGENET_EVAL_PATTERN, constants.IMAGENET_NUM_EVAL_SHARDS,
               constants.IMAGENET_NUM_EVAL_IMAGES))
  if os.path.basename(pattern) == official[0] and len(files) == official[1]:
    return official[2]
  logging.info("Counting the records of %d TFRecord file(s) matching %s", len(files), pattern)
  return _count_records(files)


def read_labels_file(directory: str) -> tuple[str, ...] | None:
  """Class names, one per line in label order, from labels.txt beside the shards."""
  path = os.path.join(directory, constants.LABELS_FILE)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return tuple(line.strip() for line in f if line.strip())


def parse_imagenet_record(record: tf.Tensor, label_offset: int) -> dict:
  """A serialized tf.train.Example in the official ImageNet format -> example dict."""
  box_keys = (constants.KEY_BBOX_YMIN, constants.KEY_BBOX_XMIN,
              constants.KEY_BBOX_YMAX, constants.KEY_BBOX_XMAX)
  features = {
      constants.KEY_ENCODED: tf.io.FixedLenFeature([], tf.string),
      constants.KEY_LABEL: tf.io.FixedLenFeature([], tf.int64),
      **{key: tf.io.VarLenFeature(tf.float32) for key in box_keys},
  }
  parsed = tf.io.parse_single_example(record, features)
  # [1, num_boxes, 4] of [ymin, xmin, ymax, xmax], the layout sample_distorted_bounding_box takes.
  bbox = tf.stack([parsed[key].values for key in box_keys], axis=-1)[tf.newaxis]
  return _example(parsed[constants.KEY_ENCODED], parsed[constants.KEY_LABEL] - label_offset, bbox)


def _imagenet_source(config: DataConfig, training: bool) -> Source:
  pattern, argument = ((config.train_file_pattern, "train_file_pattern") if training else
                       (config.eval_file_pattern, "eval_file_pattern"))
  files = _glob(config, pattern, argument)
  class_names = (read_labels_file(os.path.dirname(files[0])) or
                 tuple(str(i) for i in range(config.num_classes)))

  def open_file(filename):
    # Each record travels with its file name, so a bad one can be reported.
    return tf.data.TFRecordDataset(filename).map(lambda record: (record, filename))

  return Source(
      count_examples=lambda: _imagenet_num_examples(files, pattern, training),
      class_names=class_names,
      read=lambda shard, train, seed: _read_files(
          (files,), shard, train, seed, open_file=open_file),
      to_example=lambda record, _: parse_imagenet_record(record, config.label_offset),
      name=lambda _, filename: filename)


# A folder of images.

def _folder_source(config: DataConfig, training: bool) -> Source:
  listing = folder.list_image_folder(
      config.data_dir, training, config.validation_fraction,
      config.train_split, config.eval_split)
  files = (list(listing.paths), list(listing.labels))
  return Source(
      count_examples=lambda: len(listing.paths),
      class_names=listing.class_names,
      read=lambda shard, train, seed: _read_files(
          files, shard, train, seed,
          read_file=lambda path, label: (tf.io.read_file(path), label, path)),
      to_example=lambda image, label, _: _example(image, label),
      name=lambda image, label, path: path)


# TFDS by name.

def _tfds_builder(config: DataConfig):
  # Imported here: TFDS takes seconds to import and only this source needs it.
  import tensorflow_datasets as tfds
  if not config.tfds_name:
    raise ValueError(f"source='tfds' needs tfds_name (e.g. 'cats_vs_dogs'). "
                     f"Received: tfds_name={config.tfds_name!r}")
  try:
    builder = tfds.builder(config.tfds_name, data_dir=config.data_dir)
  except tfds.core.registered.DatasetNotFoundError as error:
    raise ValueError(f"tfds_name must name a TFDS data set (see tfds.list_builders()). "
                     f"Received: {config.tfds_name!r}") from error
  return builder


def _tfds_image_label_keys(builder) -> tuple[str, str]:
  """The (image, label) feature names: the supervised keys, else "image" and "label"."""
  keys = builder.info.supervised_keys
  if keys is None and {"image", "label"} <= set(builder.info.features.keys()):
    keys = ("image", "label")
  if keys is None or len(keys) != 2:
    raise ValueError(f"tfds_name must name a data set of (image, label) examples. "
                     f"Received: {builder.info.name!r} with features "
                     f"{sorted(builder.info.features.keys())}")
  return keys


def _tfds_split(builder, split: str, argument: str):
  """The SplitInfo of `split`, or None when the split list is unknown (not generated, or mocked)."""
  if not builder.info.splits:
    return None
  try:
    return builder.info.splits[split]
  except (KeyError, ValueError) as error:
    raise ValueError(
        f"{argument} must be a split of {builder.info.name}: {sorted(builder.info.splits)}. "
        f"Received: {split!r}") from error


def _tfds_source(config: DataConfig, training: bool) -> Source:
  import tensorflow_datasets as tfds
  builder = _tfds_builder(config)
  split, argument = ((config.train_split, "train_split") if training else
                     (config.eval_split, "eval_split"))
  split_info = _tfds_split(builder, split, argument)
  image_key, label_key = _tfds_image_label_keys(builder)
  label_feature = builder.info.features[label_key]
  class_names = tuple(getattr(label_feature, "names", None) or
                      (str(i) for i in range(label_feature.num_classes)))
  default_name = f"{config.tfds_name}/{split}"
  num_files = split_info.num_shards if split_info else 1

  def read(shard: Shard, train: bool, seed):
    by_file = num_files >= shard.count
    # TFDS shards, shuffles and interleaves its own files. With too few files,
    # each pipeline reads its own even slice of the examples instead.
    pipeline_split = split if by_file else tfds.even_splits(split, shard.count)[shard.index]
    read_config = tfds.ReadConfig(
        shuffle_seed=seed, add_tfds_id=True,
        input_context=shard.input_context if by_file else None)
    try:
      return builder.as_dataset(
          split=pipeline_split, shuffle_files=train, read_config=read_config,
          # Keep the encoded bytes so the fused crop-decode applies, as for TFRecords.
          decoders={image_key: tfds.decode.SkipDecoding()})
    except AssertionError as error:  # TFDS asserts that the data was generated.
      raise ValueError(
          f"TFDS data set {config.tfds_name!r} is not prepared in data_dir; run "
          f"`tfds build {config.tfds_name} --data_dir=DIR` where it can be downloaded. "
          f"Received: data_dir={config.data_dir!r}") from error

  def count_examples():
    if split_info:
      return split_info.num_examples
    return int(read(Shard(), False, None).cardinality())

  return Source(
      count_examples=count_examples,
      class_names=class_names,
      read=read,
      to_example=lambda element: _example(element[image_key], element[label_key]),
      name=lambda element: element.get("tfds_id", tf.constant(default_name)))


# Synthetic images.

def synthetic_image(label: tf.Tensor, height: int, width: int) -> tf.Tensor:
  """A uint8 [height, width, 3] image whose class shows in its colours and gradient direction."""
  label = tf.cast(label, tf.float32)
  # Golden-ratio steps spread class hues and angles evenly, however many classes.
  hue = tf.math.floormod(label * 0.618034, 1.0)
  angle = 2.0 * 3.14159265 * tf.math.floormod(label * 0.381966, 1.0)
  colour = 0.5 + 0.5 * tf.cos(2.0 * 3.14159265 * (hue + tf.constant([0.0, 1 / 3, 2 / 3])))
  y = tf.linspace(-1.0, 1.0, height)[:, tf.newaxis]
  x = tf.linspace(-1.0, 1.0, width)[tf.newaxis, :]
  ramp = 0.65 + 0.35 * (x * tf.cos(angle) + y * tf.sin(angle))
  seed = tf.stack([tf.cast(label, tf.int32), 0])
  noise = tf.random.stateless_normal([height, width, 3], seed=seed, stddev=10.0)
  image = 30.0 + 200.0 * ramp[..., tf.newaxis] * colour + noise
  return tf.cast(tf.clip_by_value(image, 0.0, 255.0), tf.uint8)


@functools.lru_cache(maxsize=4)
def synthetic_jpegs(num_classes: int, image_size: int) -> tf.Tensor:
  """One JPEG per class, a little larger than the crop and not square, so crops vary: a
  string tensor [num_classes], made eagerly.

  Made once per (num_classes, image_size) and kept: generating 1000 of them
  takes a second. init_scope makes them eagerly even when first asked for
  while a map function is being traced; the function then captures the eager tensor.
  A constant made inside it instead would be copied into the function and into each
  rewrite of the dataset's graph (benchmarks/README.md, "Short runs").
  """
  height, width = preprocessing.eval_resize_size(image_size), image_size * 4 // 3 + 1
  with tf.init_scope():
    images = tf.data.Dataset.range(num_classes).map(
        lambda label: tf.io.encode_jpeg(synthetic_image(label, height, width), quality=90),
        num_parallel_calls=tf.data.AUTOTUNE)
    return images.batch(num_classes).get_single_element()


def _synthetic_source(config: DataConfig, training: bool) -> Source:
  del training  # Both splits hold the same images.

  def read(shard: Shard, train: bool, seed):
    del train, seed  # Shuffling happens downstream; the indices need no file order.
    return tf.data.Dataset.range(config.synthetic_num_examples).shard(shard.count, shard.index)

  def to_example(index):
    label = index % config.num_classes
    jpegs = synthetic_jpegs(config.num_classes, config.image_size)
    return _example(tf.gather(jpegs, label), label)

  return Source(
      count_examples=lambda: config.synthetic_num_examples,
      class_names=tuple(str(i) for i in range(config.num_classes)),
      read=read,
      to_example=to_example,
      name=lambda index: tf.strings.format("synthetic/{}", index))


_SOURCES = {
    "imagenet": _imagenet_source,
    "folder": _folder_source,
    "tfds": _tfds_source,
    "synthetic": _synthetic_source,
}


def _holds_an_image(directory: str) -> bool:
  """Whether an image file lies anywhere below `directory`; stops at the first one."""
  for _, subdirs, files in tf.io.gfile.walk(directory):
    subdirs[:] = [d for d in subdirs if not d.startswith(".")]
    if any(folder.is_image(name) for name in files):
      return True
  return False


def _tfds_data_sets(data_dir: str) -> list[str]:
  """The TFDS data sets prepared in data_dir ("name" or "name/config"), by their dataset_info.json."""
  found = set()
  for depth in (2, 3):  # name/version/ or name/config/version/
    pattern = os.path.join(data_dir, *["*"] * depth, "dataset_info.json")
    for path in tf.io.gfile.glob(pattern):
      found.add("/".join(os.path.relpath(path, data_dir).split(os.sep)[:depth - 1]))
  return sorted(found)


def infer_source(data_dir: str, train_file_pattern: str = constants.IMAGENET_TRAIN_PATTERN):
  """(source, tfds_name) for what data_dir holds: TFRecord shards (train_file_pattern,
  train-*-of-* or *.tfrecord*) -> imagenet; one prepared TFDS data set -> tfds; images in
  class subfolders or with Kaggle names -> folder. ValueError when it holds none of these."""
  if not data_dir or not tf.io.gfile.isdir(data_dir):
    raise ValueError("data_dir must be an existing folder (of images, TFRecord shards or TFDS "
                     f"data sets). Received: {data_dir!r}")
  # Shards that the pattern misses still mean TFRecords: the imagenet source then names it.
  if any(tf.io.gfile.glob(os.path.join(data_dir, pattern))
         for pattern in (train_file_pattern, "train-*-of-*", "*.tfrecord*")):
    return "imagenet", None
  data_sets = _tfds_data_sets(data_dir)
  if len(data_sets) > 1:
    raise ValueError(f"data_dir holds several TFDS data sets {data_sets}: give --tfds_name. "
                     f"Received: data_dir={data_dir!r}")
  if data_sets:
    return "tfds", data_sets[0]
  if _holds_an_image(data_dir):
    return "folder", None
  raise ValueError(
      "data_dir must hold images (one subfolder per class, or <class>.<id>.jpg names), "
      f"TFRecord shards matching {train_file_pattern!r} or a prepared TFDS data set; or give "
      f"--source. Received: data_dir={data_dir!r}")


def make_source(config: DataConfig, training: bool) -> Source:
  return _SOURCES[config.source](config, training)

"""Turn a folder of images into TFRecord shards in the official ImageNet format.

    python -m input_pipeline.build_tfrecords --image_dir DIR --output_dir OUT --num_shards 16

DIR is an image folder in either layout that source="folder" reads (class
subfolders or flat <class>.<id>.<ext> names, optionally split into train/ and
validation/). Every image is decoded once: valid JPEGs are stored byte for
byte, anything else (PNG, GIF, BMP, JPEGs TensorFlow cannot read) is
re-encoded as JPEG, and files nothing can read are reported and left out.
Shards are named <split>-%05d-of-%05d with labels index + label_offset
(1..N, as the official records), and labels.txt lists the class names.
Read them back with DataConfig(source="imagenet", data_dir=OUT,
train_file_pattern="train-*-of-000NN", label_offset=1).
"""
import argparse
import dataclasses
import io
import multiprocessing
import os
import random
import sys
import time

import tensorflow as tf
from absl import logging

from input_pipeline import checks
from input_pipeline import constants
from input_pipeline import folder
from input_pipeline import preprocessing

DEFAULT_JPEG_QUALITY = 95
SPLITS = ("train", "validation")


class UnreadableImage(Exception):
  pass


@dataclasses.dataclass(frozen=True)
class ShardTask:
  output_path: str
  # (image path, label as stored, class name) per image.
  images: tuple[tuple[str, int, str], ...]
  jpeg_quality: int


@dataclasses.dataclass(frozen=True)
class ShardResult:
  output_path: str
  num_written: int
  # (image path, reason) per file left out.
  unreadable: tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True)
class Summary:
  shard_paths: tuple[str, ...]
  num_written: int
  unreadable: tuple[tuple[str, str], ...]
  labels_path: str


def image_example(encoded: bytes, label: int, class_name: str, height: int, width: int,
                  filename: str) -> tf.train.Example:
  """One record with the official feature keys (no bounding boxes: whole-image crops)."""
  def bytes_feature(value: bytes):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

  def int_feature(value: int):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

  return tf.train.Example(features=tf.train.Features(feature={
      constants.KEY_ENCODED: bytes_feature(encoded),
      constants.KEY_LABEL: int_feature(label),
      constants.KEY_LABEL_TEXT: bytes_feature(class_name.encode("utf-8")),
      constants.KEY_HEIGHT: int_feature(height),
      constants.KEY_WIDTH: int_feature(width),
      "image/filename": bytes_feature(filename.encode("utf-8")),
      "image/format": bytes_feature(b"JPEG"),
      "image/colorspace": bytes_feature(b"RGB"),
      "image/channels": int_feature(3),
  }))


def _decode_with_pillow(data: bytes):
  """Fallback for files TensorFlow's decoders refuse (e.g. 1-bit BMP) -> uint8 RGB tensor."""
  from PIL import Image  # Pillow is needed only for these rare files.
  try:
    with Image.open(io.BytesIO(data)) as image:
      return tf.constant(image.convert("RGB"))
  except Exception as error:  # Pillow raises many types for bad files; all mean unreadable.
    raise UnreadableImage(f"{type(error).__name__}: {error}") from error


def load_as_jpeg(path: str, jpeg_quality: int) -> tuple[bytes, int, int]:
  """(JPEG bytes, height, width) of an image file; raises UnreadableImage."""
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      data = f.read()
  except (OSError, tf.errors.OpError) as error:
    raise UnreadableImage(f"cannot read: {error}") from error
  is_jpeg = bool(tf.io.is_jpeg(data))
  try:
    # Decoding validates the file with the same decoder the pipeline uses.
    image = preprocessing.decode_image(data)
  except tf.errors.InvalidArgumentError as error:
    if is_jpeg:
      raise UnreadableImage(str(error).splitlines()[-1]) from error
    image = _decode_with_pillow(data)
    is_jpeg = False
  if not is_jpeg:
    # Full-resolution colour: re-encoding loses as little as it can.
    data = tf.io.encode_jpeg(image, quality=jpeg_quality, chroma_downsampling=False).numpy()
  return data, int(image.shape[0]), int(image.shape[1])


def write_shard(task: ShardTask) -> ShardResult:
  written, unreadable = 0, []
  with tf.io.TFRecordWriter(task.output_path) as writer:
    for path, label, class_name in task.images:
      try:
        encoded, height, width = load_as_jpeg(path, task.jpeg_quality)
      except UnreadableImage as error:
        unreadable.append((path, str(error)))
        continue
      example = image_example(encoded, label, class_name, height, width, os.path.basename(path))
      writer.write(example.SerializeToString())
      written += 1
  return ShardResult(task.output_path, written, tuple(unreadable))


def _init_worker():
  # Each process decodes one image at a time; more TF threads would only contend.
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)


def convert(image_dir: str, output_dir: str, num_shards: int, split: str = "train",
            num_processes: int = 2, validation_fraction: float = 0.0,
            label_offset: int = constants.IMAGENET_LABEL_OFFSET,
            jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> Summary:
  """Write `split` of image_dir as num_shards TFRecord files and labels.txt into output_dir."""
  checks.check_choice("split", split, SPLITS)
  if num_processes < 1:
    raise ValueError(f"num_processes must be >= 1. Received: {num_processes}")
  listing = folder.list_image_folder(image_dir, split == "train", validation_fraction)
  if not 1 <= num_shards <= len(listing.paths):
    raise ValueError(f"num_shards must be in [1, {len(listing.paths)}] (the number of images). "
                     f"Received: {num_shards}")
  images = [(path, label + label_offset, listing.class_names[label])
            for path, label in zip(listing.paths, listing.labels)]
  # A fixed shuffle spreads every class over every shard, the same on every run.
  random.Random(0).shuffle(images)
  tf.io.gfile.makedirs(output_dir)
  tasks = [ShardTask(os.path.join(output_dir, f"{split}-{i:05d}-of-{num_shards:05d}"),
                     tuple(images[i::num_shards]), jpeg_quality) for i in range(num_shards)]
  logging.info("Converting %d images of %d classes from %s into %d shards with %d process(es)",
               len(images), len(listing.class_names), image_dir, num_shards, num_processes)

  results, done, start = [], 0, time.monotonic()
  pool = (multiprocessing.get_context("spawn").Pool(num_processes, initializer=_init_worker)
          if num_processes > 1 else None)
  try:
    for result in (pool.imap_unordered(write_shard, tasks) if pool else map(write_shard, tasks)):
      results.append(result)
      done += result.num_written + len(result.unreadable)
      logging.info("[%d/%d shards] %s: %d images; %d/%d done, %.0f images/s",
                   len(results), num_shards, os.path.basename(result.output_path),
                   result.num_written, done, len(images), done / (time.monotonic() - start))
  finally:
    if pool:
      pool.close()
      pool.join()

  labels_path = os.path.join(output_dir, constants.LABELS_FILE)
  with tf.io.gfile.GFile(labels_path, "w") as f:
    f.write("".join(f"{name}\n" for name in listing.class_names))
  unreadable = tuple(sorted(u for r in results for u in r.unreadable))
  for path, reason in unreadable:
    logging.warning("Left out unreadable image %s: %s", path, reason)
  summary = Summary(tuple(sorted(r.output_path for r in results)),
                    sum(r.num_written for r in results), unreadable, labels_path)
  logging.info("Wrote %d images into %d shards in %s (%d unreadable left out); labels in %s",
               summary.num_written, num_shards, output_dir, len(unreadable), labels_path)
  return summary


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m input_pipeline.build_tfrecords",
      description="Folder of images -> TFRecord shards in the official ImageNet format.")
  parser.add_argument("--image_dir", required=True,
                      help="class subfolders or flat <class>.<id>.<ext> files")
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--num_shards", type=int, default=16)
  parser.add_argument("--split", choices=SPLITS, default="train",
                      help="shard name prefix; picks image_dir/<split>/ when image_dir has "
                           "train/ and validation/ folders")
  parser.add_argument("--validation_fraction", type=float, default=0.0,
                      help="without train/validation folders: share of files (by path hash) "
                           "that belongs to validation, as source='folder' splits them")
  parser.add_argument("--num_processes", type=int, default=max(2, os.cpu_count() or 1))
  parser.add_argument("--label_offset", type=int, default=constants.IMAGENET_LABEL_OFFSET,
                      help="stored label = class index + label_offset (official records: 1)")
  parser.add_argument("--jpeg_quality", type=int, default=DEFAULT_JPEG_QUALITY,
                      help="quality of re-encoded non-JPEG images")
  args = parser.parse_args(argv)
  logging.use_absl_handler()
  logging.set_verbosity(logging.INFO)
  summary = convert(args.image_dir, args.output_dir, args.num_shards, args.split,
                    args.num_processes, args.validation_fraction, args.label_offset,
                    args.jpeg_quality)
  print(f"{summary.num_written} images in {len(summary.shard_paths)} shards; "
        f"{len(summary.unreadable)} unreadable; labels: {summary.labels_path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Input pipeline throughput against its ceiling on the same files and threads.

    python -m benchmarks.pipeline --num_images 2048 --threads 2 --json out/input_benchmark.json

Generates (once, kept in --data_dir) an ImageNet-like TFRecord set of
photo-like JPEGs about 500x375 at quality 90, then measures in one run:
  train pipeline  build_dataset(training=True), per output dtype
  train augmented the uint8 train pipeline with each of --augmentations (RandAugment,
                  RandAugment + random erasing), also against the plain uint8 one
  train ceiling   the same files read with only parse + decode_and_crop_jpeg + resize
  eval pipeline   build_dataset(training=False), per output dtype
  eval ceiling    parse + decode + aspect-preserving resize + central crop
  train/eval official  the official legacy imagenet_preprocessing.input_fn on the same
                  files with the same private threads (float32 out), when the official
                  code is installed (benchmarks/official.py); our float32 and uint8
                  pipelines are divided by it ("/official")
Train passes time --train_batches batches; eval passes read every image once.
Each figure is the median of --passes passes (passes alternate between the
pipelines and ceilings so drift hits both alike), after --warmup_passes untimed
ones: in the process's first pass the ceiling, measured first, ran at half its
later speed and the others up to 26% slower. The first batch of a pass (thread
start-up, shuffle-buffer fill) is not timed. Besides images/s, the process CPU
time per image is reported: on a machine shared with other work it is the
steadier measure of overhead. Peak RSS is sampled during each
measurement. Prints a table and writes JSON.
"""
import argparse
import dataclasses
import datetime
import itertools
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time

import numpy as np
import tensorflow as tf
from absl import logging

from input_pipeline import DataConfig
from input_pipeline import build_dataset
from input_pipeline import build_tfrecords
from input_pipeline import constants
from input_pipeline import preprocessing
from benchmarks import official
from official_resnet.demo import photos

# ImageNet's typical shapes (height, width): landscape 4:3 and 3:2, and portrait.
IMAGE_SHAPES = ((375, 500), (333, 500), (500, 375))
JPEG_QUALITY = 90
FILE_PREFIX = "train"
# A spawned worker imports this module, and so TensorFlow: seconds before its first image,
# against 50 ms an image. Fewer images than this are generated in the calling process.
MIN_IMAGES_FOR_WORKERS = 256
# Augmented train pipelines: DataConfig fields on top of the plain uint8 one. RandAugment
# as timm's ImageNet recipes use it (2 ops, magnitude 9, noise 0.5); erasing as timm's 0.25.
AUGMENTATIONS = {
    "randaugment": dict(randaugment_layers=2, randaugment_magnitude=9.0,
                        randaugment_magnitude_std=0.5),
    "randaugment+erasing": dict(randaugment_layers=2, randaugment_magnitude=9.0,
                                randaugment_magnitude_std=0.5, random_erasing_probability=0.25),
}
PLAIN_FOR_AUGMENTED = "train uint8"
# imagenet_preprocessing.DEFAULT_IMAGE_SIZE: the official input_fn's only output size.
OFFICIAL_IMAGE_SIZE = 224


def _photo_jpeg(index: int) -> bytes:
  rng = np.random.default_rng(index)
  height, width = IMAGE_SHAPES[index % len(IMAGE_SHAPES)]
  return photos.encode(photos.photo_like_image(rng, height, width), quality=JPEG_QUALITY)


def ensure_data(data_dir: str, num_images: int, num_shards: int, processes: int) -> list[str]:
  """The TFRecord shards in data_dir, generated first (by `processes` workers) if missing."""
  pattern = os.path.join(data_dir, f"{FILE_PREFIX}-*-of-{num_shards:05d}")
  files = sorted(tf.io.gfile.glob(pattern))
  if len(files) == num_shards:
    return files
  logging.info("Generating %d photo-like JPEGs in %d shards in %s",
               num_images, num_shards, data_dir)
  tf.io.gfile.makedirs(data_dir)
  writers = [
      tf.io.TFRecordWriter(os.path.join(data_dir, f"{FILE_PREFIX}-{s:05d}-of-{num_shards:05d}"))
      for s in range(num_shards)]

  def write(encoded_images):
    for index, encoded in enumerate(encoded_images):
      height, width = IMAGE_SHAPES[index % len(IMAGE_SHAPES)]
      label = index % constants.IMAGENET_NUM_CLASSES + constants.IMAGENET_LABEL_OFFSET
      example = build_tfrecords.image_example(encoded, label, str(label), height, width,
                                              f"photo_{index:06d}.jpg")
      writers[index % num_shards].write(example.SerializeToString())

  if processes > 1 and num_images >= MIN_IMAGES_FOR_WORKERS:
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
      write(pool.imap(_photo_jpeg, range(num_images), chunksize=16))
  else:
    write(map(_photo_jpeg, range(num_images)))
  for writer in writers:
    writer.close()
  return sorted(tf.io.gfile.glob(pattern))


class PeakRss:
  """Samples this process's resident memory in the background; `peak_mb` after the block."""

  def __enter__(self):
    self.peak_mb, self._stop = _rss_mb(), threading.Event()
    self._thread = threading.Thread(target=self._sample, daemon=True)
    self._thread.start()
    return self

  def _sample(self):
    while not self._stop.wait(0.02):
      self.peak_mb = max(self.peak_mb, _rss_mb())

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak_mb = max(self.peak_mb, _rss_mb())


def _rss_mb() -> float:
  try:
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
  except OSError:  # not Linux: the process-lifetime peak is the best available
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def _ceiling(files, training: bool, image_size: int, batch_size: int, threads: int):
  """The least work that yields the same images: read, parse the bytes, decode, crop, resize."""
  def load(index, record):
    features = {constants.KEY_ENCODED: tf.io.FixedLenFeature([], tf.string)}
    encoded = tf.io.parse_single_example(record, features)[constants.KEY_ENCODED]
    if training:
      # A seed per image, as the pipeline draws its crops.
      window = preprocessing.sample_crop_window(tf.image.extract_jpeg_shape(encoded),
                                                preprocessing.whole_image_bbox(),
                                                tf.stack([index, 0]))
      image = tf.image.decode_and_crop_jpeg(encoded, window, channels=3)
      return preprocessing.resize(image, image_size, image_size)
    image = tf.io.decode_jpeg(encoded, channels=3)
    image = preprocessing.resize_shorter_side(image, preprocessing.eval_resize_size(image_size))
    return preprocessing.central_crop(image, image_size)

  dataset = tf.data.TFRecordDataset(files, num_parallel_reads=threads)
  if training:
    dataset = dataset.repeat()  # as the train pipeline does
  dataset = dataset.enumerate().map(load, num_parallel_calls=threads, deterministic=False)
  dataset = dataset.batch(batch_size).prefetch(1)
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  options.threading.max_intra_op_parallelism = 1
  return dataset.with_options(options)


def _official_dataset(input_fn, files, training: bool, batch_size: int, threads: int):
  """The official input_fn as its trainer calls it, on our files (it would glob ImageNet's names)."""
  return input_fn(is_training=training, data_dir=None, batch_size=batch_size,
                  datasets_num_private_threads=threads, filenames=files,
                  drop_remainder=training)


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def _measure(dataset, num_batches: int | None) -> dict:
  """images/s and CPU ms per image over num_batches (None: all) after the first, and peak RSS."""
  with PeakRss() as rss:
    iterator = iter(dataset)
    next(iterator)
    count, start, cpu_start = 0, time.perf_counter(), _cpu_seconds()
    for batch in itertools.islice(iterator, num_batches):
      count += len(batch[0] if isinstance(batch, tuple) else batch)
    elapsed, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
  return {"images_per_second": count / elapsed, "cpu_ms_per_image": 1e3 * cpu / count,
          "peak_rss_mb": rss.peak_mb}


def run(data_dir: str, num_images: int, num_shards: int, image_size: int, batch_size: int,
        threads: int, passes: int, output_dtypes: tuple[str, ...], shuffle_buffer_size: int,
        train_batches: int, warmup_passes: int = 1,
        augmentations: tuple[str, ...] = tuple(AUGMENTATIONS),
        official_dir: str | None = official.DEFAULT_DIR) -> dict:
  files = ensure_data(data_dir, num_images, num_shards, max(2, threads))
  official_status, input_fn = {"status": "skipped", "reason": "no --official_dir"}, None
  if image_size != OFFICIAL_IMAGE_SIZE:
    official_status["reason"] = (f"the official input_fn outputs {OFFICIAL_IMAGE_SIZE} px. "
                                 f"Received: image_size={image_size}")
  elif official_dir:
    preprocessing_module, reason = official.import_module(
        f"{official.RESNET}.imagenet_preprocessing", official_dir)
    if preprocessing_module is None:
      official_status = {"status": "unavailable", "reason": reason}
    else:
      official_status, input_fn = {"status": "ok"}, preprocessing_module.input_fn
  official_measurements = {} if input_fn is None else {
      f"{split} official": (lambda training=split == "train": _official_dataset(
          input_fn, files, training, batch_size, threads))
      for split in ("train", "eval")}
  base = DataConfig(source="imagenet", data_dir=data_dir,
                    train_file_pattern=f"{FILE_PREFIX}-*-of-{num_shards:05d}",
                    eval_file_pattern=f"{FILE_PREFIX}-*-of-{num_shards:05d}",
                    image_size=image_size, batch_size=batch_size, private_threads=threads,
                    shuffle_buffer_size=shuffle_buffer_size)
  measurements = {
      "train ceiling": lambda: _ceiling(files, True, image_size, batch_size, threads),
      **{f"train {dtype}": (lambda dtype=dtype: build_dataset(
          dataclasses.replace(base, output_dtype=dtype), training=True))
         for dtype in output_dtypes},
      **{f"{PLAIN_FOR_AUGMENTED} {name}": (lambda name=name: build_dataset(
          dataclasses.replace(base, output_dtype="uint8", **AUGMENTATIONS[name]), training=True))
         for name in augmentations},
      **{name: make for name, make in official_measurements.items() if name.startswith("train")},
      "eval ceiling": lambda: _ceiling(files, False, image_size, batch_size, threads),
      **{f"eval {dtype}": (lambda dtype=dtype: build_dataset(
          dataclasses.replace(base, output_dtype=dtype), training=False))
         for dtype in output_dtypes},
      **{name: make for name, make in official_measurements.items() if name.startswith("eval")},
  }
  runs = {name: [] for name in measurements}
  for p in range(-warmup_passes, passes):
    for name, make in measurements.items():
      # Train runs endlessly: a fixed number of batches. Eval: one whole pass.
      measured = _measure(make(), train_batches if name.startswith("train") else None)
      logging.info("%s %-30s %7.1f images/s, %.2f CPU ms/image",
                   "warm-up" if p < 0 else f"pass {p + 1}/{passes}", name,
                   measured["images_per_second"], measured["cpu_ms_per_image"])
      if p >= 0:
        runs[name].append(measured)

  def summary(name):
    rates = [r["images_per_second"] for r in runs[name]]
    return {"pipeline": name, "images_per_second": statistics.median(rates), "passes": rates,
            "cpu_ms_per_image": statistics.median(r["cpu_ms_per_image"] for r in runs[name]),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs[name])}

  results = []
  for name in measurements:
    row = summary(name)
    if "ceiling" not in name:
      ceiling = summary(f"{name.split()[0]} ceiling")
      row["ceiling_images_per_second"] = ceiling["images_per_second"]
      row["ratio"] = row["images_per_second"] / ceiling["images_per_second"]
      # CPU per image is steadier than wall time on a shared machine.
      row["cpu_ratio"] = ceiling["cpu_ms_per_image"] / row["cpu_ms_per_image"]
    split, _, what = name.partition(" ")
    if what in output_dtypes and f"{split} official" in runs:
      theirs = summary(f"{split} official")
      row["over_official"] = row["images_per_second"] / theirs["images_per_second"]
      row["cpu_over_official"] = theirs["cpu_ms_per_image"] / row["cpu_ms_per_image"]
    if name.startswith(f"{PLAIN_FOR_AUGMENTED} "):
      plain = summary(PLAIN_FOR_AUGMENTED)
      row["of_plain"] = row["images_per_second"] / plain["images_per_second"]
      row["cpu_of_plain"] = plain["cpu_ms_per_image"] / row["cpu_ms_per_image"]
    results.append(row)
  return {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "machine": {"platform": platform.platform(), "processor": _cpu_model(),
                  "cpu_count": os.cpu_count(), "tensorflow": tf.__version__,
                  # Other work on the machine lowers images/s; CPU ms per image less so.
                  "load_average_1m": round(os.getloadavg()[0], 2)},
      "settings": {"num_images": num_images, "num_shards": num_shards, "image_size": image_size,
                   "batch_size": batch_size, "threads": threads, "passes": passes,
                   "warmup_passes": warmup_passes,
                   "train_batches": train_batches,
                   "shuffle_buffer_size": shuffle_buffer_size,
                   "augmentations": {name: AUGMENTATIONS[name] for name in augmentations},
                   "data_bytes": sum(tf.io.gfile.stat(f).length for f in files)},
      "official": official_status,
      "results": results,
  }


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    return platform.processor()


def format_table(report: dict) -> str:
  header = (f"{'pipeline':<32}{'images/s':>10}{'ceiling':>10}{'ratio':>8}{'CPU ms/img':>12}"
            f"{'CPU ratio':>11}{'/official':>11}{'CPU /off.':>11}{'of plain':>10}"
            f"{'peak RSS MB':>13}")
  lines = [header]
  for row in report["results"]:
    def column(key, width, digits):
      return f"{row[key]:{width}.{digits}f}" if key in row else " " * width
    lines.append(f"{row['pipeline']:<32}{column('images_per_second', 10, 1)}"
                 f"{column('ceiling_images_per_second', 10, 1)}{column('ratio', 8, 3)}"
                 f"{column('cpu_ms_per_image', 12, 2)}{column('cpu_ratio', 11, 3)}"
                 f"{column('over_official', 11, 3)}{column('cpu_over_official', 11, 3)}"
                 f"{column('of_plain', 10, 3)}{column('peak_rss_mb', 13, 0)}")
  if report["official"]["status"] != "ok":
    lines.append(f"official input_fn {report['official']['status']}: "
                 f"{report['official']['reason']}")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--data_dir", default=None,
                      help="TFRecords to use or generate (default: a folder in the temp dir)")
  parser.add_argument("--num_images", type=int, default=2048)
  parser.add_argument("--num_shards", type=int, default=8)
  parser.add_argument("--image_size", type=int, default=constants.DEFAULT_IMAGE_SIZE)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
  parser.add_argument("--passes", type=int, default=3)
  parser.add_argument("--warmup_passes", type=int, default=1,
                      help="untimed passes over every measurement first")
  parser.add_argument("--train_batches", type=int, default=48,
                      help="batches timed per train pass (eval passes read every image once)")
  parser.add_argument("--output_dtypes", default="float32,uint8")
  parser.add_argument("--augmentations", default=",".join(AUGMENTATIONS),
                      help=f"augmented uint8 train pipelines to time, from {list(AUGMENTATIONS)} "
                           "('' for none)")
  parser.add_argument("--shuffle_buffer_size", type=int, default=DataConfig.shuffle_buffer_size)
  parser.add_argument("--json", default=None, help="where to write the JSON report")
  parser.add_argument("--official_dir", default=official.DEFAULT_DIR,
                      help="the official code's install folder (benchmarks/official.py); "
                           "'' to leave the official input_fn out")
  args = parser.parse_args(argv)
  augmentations = tuple(name for name in args.augmentations.split(",") if name)
  unknown = [name for name in augmentations if name not in AUGMENTATIONS]
  if unknown:
    parser.error(f"--augmentations must name items of {list(AUGMENTATIONS)}. Received: {unknown}")
  if augmentations and "uint8" not in args.output_dtypes.split(","):
    parser.error("--augmentations are timed against the plain uint8 train pipeline: "
                 f"--output_dtypes must include uint8. Received: {args.output_dtypes}")
  if args.num_images < 2 * args.batch_size:
    parser.error(f"--num_images must be at least 2 * --batch_size. Received: {args.num_images}")
  logging.use_absl_handler()
  logging.set_verbosity(logging.INFO)
  data_dir = args.data_dir or os.path.join(
      tempfile.gettempdir(), f"input_pipeline_benchmark_{args.num_images}_{args.num_shards}")
  report = run(data_dir, args.num_images, args.num_shards, args.image_size, args.batch_size,
               args.threads, args.passes, tuple(args.output_dtypes.split(",")),
               args.shuffle_buffer_size, args.train_batches, args.warmup_passes, augmentations,
               args.official_dir)
  print(format_table(report))
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
      json.dump(report, f, indent=2)
    print(f"wrote {args.json}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

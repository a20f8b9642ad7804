"""Small generated images, image folders and TFRecords for tests (any test may import these)."""
import os

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from input_pipeline import build_tfrecords
from official_resnet.demo import photos

SMALL_HEIGHT, SMALL_WIDTH = 40, 56


def image(seed: int, height: int = SMALL_HEIGHT, width: int = SMALL_WIDTH) -> np.ndarray:
  """A photo-like uint8 [height, width, 3] image, the same for the same seed."""
  return photos.photo_like_image(np.random.default_rng(seed), height, width)


def write_image(path: str, pixels: np.ndarray, image_format: str = "JPEG",
                mode: str | None = None) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(photos.encode(pixels, image_format, mode=mode))
  return path


def make_image_folder(root: str, classes=("cat", "dog"), per_class: int = 3,
                      layout: str = "subfolders", seed: int = 0) -> list[str]:
  """JPEGs in class subfolders (root/cat/cat_0.jpg) or flat Kaggle names (root/cat.0.jpg)."""
  paths = []
  for c, name in enumerate(classes):
    for i in range(per_class):
      relative = f"{name}.{i}.jpg" if layout == "flat" else os.path.join(name, f"{name}_{i}.jpg")
      paths.append(write_image(os.path.join(root, relative), image(seed + 100 * c + i)))
  return paths


def write_records(path: str, encoded_images, labels, bboxes=None) -> str:
  """A TFRecord file of official-format examples.

  bboxes: per image, a list of (ymin, xmin, ymax, xmax) boxes.
  """
  with tf.io.TFRecordWriter(path) as writer:
    for i, (encoded, label) in enumerate(zip(encoded_images, labels)):
      example = build_tfrecords.image_example(
          encoded, int(label), f"class_{label}", SMALL_HEIGHT, SMALL_WIDTH, f"image_{i}.jpg")
      for key, column in zip(("ymin", "xmin", "ymax", "xmax"), range(4)):
        values = [box[column] for box in (bboxes[i] if bboxes else [])]
        example.features.feature[f"image/object/bbox/{key}"].float_list.value.extend(values)
      writer.write(example.SerializeToString())
  return path


def make_record_shards(directory: str, num_images: int, num_shards: int, label_offset: int = 1,
                       prefix: str = "train") -> list[str]:
  """num_images JPEG records, round-robin over shards; stored label = image index + label_offset."""
  os.makedirs(directory, exist_ok=True)
  encoded = [photos.encode(image(i)) for i in range(num_images)]
  return [write_records(
      os.path.join(directory, f"{prefix}-{s:05d}-of-{num_shards:05d}"),
      encoded[s::num_shards], [i + label_offset for i in range(s, num_images, num_shards)])
      for s in range(num_shards)]


def scanned_digit(digit: int, rng: np.random.Generator, size: int = 40) -> np.ndarray:
  """uint8 [size, size, 3]: a dark handwritten-looking digit on scanned paper.

  Size, position, slant, ink, paper tint and noise vary per image; only the digit
  tells the class, as in a folder of scanned digits.
  """
  paper = rng.uniform(170, 245) + rng.uniform(-15, 15, size=3)
  canvas = Image.new("RGB", (size * 2, size * 2), tuple(int(c) for c in paper))
  font = ImageFont.load_default(size=int(rng.uniform(0.9, 1.3) * size))
  ink = tuple(int(c) for c in rng.uniform(0, 90, size=3))
  ImageDraw.Draw(canvas).text((size, size), str(digit), fill=ink, font=font, anchor="mm")
  canvas = canvas.rotate(rng.uniform(-15, 15), resample=Image.BILINEAR,
                         fillcolor=tuple(int(c) for c in paper))
  half, jitter = size // 2, rng.integers(-size // 8, size // 8 + 1, size=2)
  left, top = size - half + jitter[0], size - half + jitter[1]
  canvas = canvas.crop((left, top, left + size, top + size)).filter(
      ImageFilter.GaussianBlur(radius=rng.uniform(0.3, 1.0)))
  pixels = np.asarray(canvas, np.float32) + rng.normal(0, 8, (size, size, 3))
  return np.clip(pixels, 0, 255).astype(np.uint8)


def write_digit_folder(root: str, per_class: int, size: int = 40, seed: int = 0) -> str:
  """root/<digit>/<n>.jpg for the digits 0..9: a small folder of scanned-looking digits."""
  for digit in range(10):
    for n in range(per_class):
      rng = np.random.default_rng([seed, digit, n])
      write_image(os.path.join(root, str(digit), f"{n}.jpg"), scanned_digit(digit, rng, size))
  return root

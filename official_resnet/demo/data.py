"""Generated image data sets whose class is visible: the demo's bundled data.

Nothing can be downloaded on a fresh machine, so the demo draws its own
photos: shapes and textures in random colours, positions and sizes on a noisy
background. The class is what is drawn, never a colour or a position, so a
model has to learn shape features, and those features transfer.
"""
import dataclasses
import io
import os

import numpy as np
from PIL import Image, ImageDraw

from official_resnet import atomic_write

# Pre-training classes: shapes and textures.
PRETRAIN_CLASSES = ("circle", "square", "triangle", "hstripes", "vstripes", "checker")
# The transfer set borrows the Kaggle cats-vs-dogs file naming: "cat" images
# are ellipses, "dog" images rectangles, both new to the pre-trained model.
TRANSFER_CLASSES = ("cat", "dog")


def _random_colour(rng):
  return tuple(int(c) for c in rng.integers(40, 256, size=3))


def _background(rng, size):
  base = rng.integers(0, 120, size=3)
  noise = rng.normal(0, 18, size=(size, size, 3))
  return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def _box(rng, size, min_frac=0.35, max_frac=0.8, aspect=1.0):
  """A random box of side ~[min_frac, max_frac] * size fully inside the image."""
  side = rng.uniform(min_frac, max_frac) * size
  width, height = side * np.sqrt(aspect), side / np.sqrt(aspect)
  width, height = min(width, size - 2), min(height, size - 2)
  x0 = rng.uniform(1, size - width - 1)
  y0 = rng.uniform(1, size - height - 1)
  return x0, y0, x0 + width, y0 + height


def _stripes(draw, rng, size, horizontal):
  period = int(rng.integers(max(4, size // 12), max(6, size // 5)))
  colour = _random_colour(rng)
  offset = int(rng.integers(0, period))
  for start in range(offset - period, size, period):
    end = start + period // 2
    rect = (0, start, size, end) if horizontal else (start, 0, end, size)
    draw.rectangle(rect, fill=colour)


def _checker(draw, rng, size):
  cell = int(rng.integers(max(4, size // 10), max(6, size // 4)))
  colour = _random_colour(rng)
  for y in range(0, size, cell):
    for x in range(0, size, cell):
      if (x // cell + y // cell) % 2 == 0:
        draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=colour)


def _triangle(draw, rng, size):
  x0, y0, x1, y1 = _box(rng, size)
  draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=_random_colour(rng))


def draw_image(class_name, rng, size):
  """One RGB PIL image of `class_name`."""
  image = _background(rng, size)
  draw = ImageDraw.Draw(image)
  if class_name == "circle":
    draw.ellipse(_box(rng, size), fill=_random_colour(rng))
  elif class_name == "square":
    draw.rectangle(_box(rng, size), fill=_random_colour(rng))
  elif class_name == "triangle":
    _triangle(draw, rng, size)
  elif class_name in ("hstripes", "vstripes"):
    _stripes(draw, rng, size, horizontal=class_name == "hstripes")
  elif class_name == "checker":
    _checker(draw, rng, size)
  elif class_name == "cat":
    aspect = rng.uniform(0.5, 2.0)
    draw.ellipse(_box(rng, size, aspect=aspect), fill=_random_colour(rng))
  elif class_name == "dog":
    aspect = rng.uniform(0.5, 2.0)
    draw.rectangle(_box(rng, size, aspect=aspect), fill=_random_colour(rng))
  else:
    raise ValueError(
        f"Unknown class_name; expected one of {PRETRAIN_CLASSES + TRANSFER_CLASSES}. "
        f"Received: {class_name!r}")
  return image


@dataclasses.dataclass(frozen=True)
class WrittenDataset:
  root: str
  class_names: tuple[str, ...]
  num_images: int


def write_dataset(root, class_names, images_per_class, image_size=64, layout="subfolders",
                  seed=0, start_index=0):
  """Writes JPEGs under `root` and returns what it wrote.

  layout "subfolders": root/<class>/<class>.<n>.jpg; layout "kaggle": one flat
  folder root/<class>.<n>.jpg, as the Kaggle cats-vs-dogs download is.
  Existing files are kept: the same arguments write the same files, so a
  rerun only fills in what is missing.
  """
  if layout not in ("subfolders", "kaggle"):
    raise ValueError(f"layout must be 'subfolders' or 'kaggle'. Received: {layout!r}")
  if images_per_class < 1:
    raise ValueError(f"images_per_class must be >= 1. Received: {images_per_class}")
  unknown = [name for name in class_names if name not in PRETRAIN_CLASSES + TRANSFER_CLASSES]
  if unknown:
    raise ValueError(
        f"Unknown class_names; expected names from {PRETRAIN_CLASSES + TRANSFER_CLASSES}. "
        f"Received: {unknown[0]!r}")
  for class_index, class_name in enumerate(class_names):
    folder = os.path.join(root, class_name) if layout == "subfolders" else root
    os.makedirs(folder, exist_ok=True)
    for n in range(start_index, start_index + images_per_class):
      path = os.path.join(folder, f"{class_name}.{n}.jpg")
      if os.path.exists(path):
        continue
      # One generator per file: the image depends only on (seed, class, n).
      rng = np.random.default_rng([seed, class_index, n])
      encoded = io.BytesIO()
      draw_image(class_name, rng, image_size).save(encoded, format="JPEG", quality=90)
      atomic_write.write_atomically(path, encoded.getvalue())
  return WrittenDataset(root, tuple(class_names), images_per_class * len(class_names))

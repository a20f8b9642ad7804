"""Photo-like test images: a lit background, occluding objects at many scales, textured surfaces.

Flat noise compresses and decodes unlike photographs. Objects of every size
overlapping one another ("dead leaves", a classic model of natural-image
statistics) on smooth lighting, with surface texture, give JPEGs with the
edges, file size (~70 KB at 500x375, quality 90) and decode cost of real
ones, so the benchmark's figures and the tests' crops mean something.
"""
import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def _smooth_noise(rng, height, width, grid, strength) -> np.ndarray:
  """[height, width, 3] float32: a random grid upsampled bicubically."""
  coarse = rng.standard_normal((*grid, 3), dtype=np.float32) * strength
  return np.stack([np.asarray(Image.fromarray(coarse[..., c], mode="F").resize(
      (width, height), Image.BICUBIC)) for c in range(3)], axis=-1)


def photo_like_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """uint8 [height, width, 3]."""
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  angle = rng.uniform(0, 2 * np.pi)
  ramp = (x * np.cos(angle) + y * np.sin(angle)) / max(height, width)
  start, end = rng.uniform(20, 235, size=(2, 3))
  image = start + (end - start) * ((ramp - ramp.min()) / max(np.ptp(ramp), 1e-6))[..., None]
  image += _smooth_noise(rng, height, width, (4, 5), 25.0)
  canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
  draw = ImageDraw.Draw(canvas)
  # Largest objects first, so smaller ones occlude them.
  for scale in np.geomspace(1.0, 0.05, num=rng.integers(30, 60)):
    cx, cy = rng.uniform(0, 1, size=2)
    half_w, half_h = rng.uniform(0.3, 1.0, size=2) * scale / 2
    x0, x1 = (cx - half_w) * width, (cx + half_w) * width
    y0, y1 = (cy - half_h) * height, (cy + half_h) * height
    colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
    (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
  canvas = canvas.filter(ImageFilter.GaussianBlur(radius=max(0.6, min(height, width) / 500)))
  # Surfaces: mid-scale texture (foliage, fabric) and fine grain over everything.
  texture = _smooth_noise(rng, height, width, (max(2, height // 4), max(2, width // 4)), 12.0)
  texture += rng.standard_normal((height, width, 3), dtype=np.float32) * 8.0
  return np.clip(np.asarray(canvas, np.float32) + texture, 0, 255).astype(np.uint8)


def encode(image: np.ndarray, image_format: str = "JPEG", quality: int = 90,
           mode: str | None = None) -> bytes:
  """Encode with Pillow, optionally converted to a Pillow mode first (e.g. "L", "CMYK", "P")."""
  pil = Image.fromarray(image)
  if mode:
    pil = pil.convert(mode)
  buffer = io.BytesIO()
  pil.save(buffer, image_format, **({"quality": quality} if image_format == "JPEG" else {}))
  return buffer.getvalue()

"""MixUp and CutMix on a batch inside the train step, as timm's `Mixup` draws and applies them.

Each example is mixed with its mirror in the batch (example i with example B-1-i). A
mixing weight lam ~ Beta(alpha, alpha) is drawn per batch (mode "batch") or per example
("elem"); with probability 1 - prob nothing is mixed (lam = 1); with both alphas set,
CutMix is chosen with probability switch_prob, else MixUp.

- MixUp: image = lam * image + (1 - lam) * partner.
- CutMix: a box of about (1 - lam) of the area, centred at a uniform pixel and clipped
  to the image, is pasted from the partner, and lam becomes 1 - (box area) / (image
  area), the share of the image left the example's own.
- Targets: lam * y + (1 - lam) * y_partner, y the one-hot label smoothed as timm
  smooths it (1 - s + s/C on the label, s/C elsewhere), so every row sums to 1.

Everything here is a function of tensors and a stateless seed, so a seeded run draws the
same mixings when it resumes. `sample` runs outside XLA (TF's gamma sampler has no XLA
kernel); `mix_images` and `mix_targets` run anywhere.
"""
import dataclasses

import tensorflow as tf

from input_pipeline import checks
from official_resnet import losses

MODES = ("batch", "elem")


@dataclasses.dataclass(frozen=True)
class MixSettings:
  """The TrainConfig fields of the mixing: alphas, probabilities, mode."""
  mixup_alpha: float = 0.0
  cutmix_alpha: float = 0.0
  prob: float = 1.0
  switch_prob: float = 0.5
  mode: str = "batch"

  def __post_init__(self):
    if self.mixup_alpha < 0 or self.cutmix_alpha < 0 or not (self.mixup_alpha or self.cutmix_alpha):
      raise ValueError("mixup_alpha and cutmix_alpha must be >= 0, one of them > 0. Received: "
                       f"mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}")
    checks.check_choice("mode", self.mode, MODES)


def _beta(seed, shape, alpha):
  """Beta(alpha, alpha) samples, float64: a ratio of two gammas (TF has no stateless beta)."""
  seeds = tf.random.experimental.stateless_split(seed, 2)
  first = tf.random.stateless_gamma(shape, seeds[0], alpha=alpha, dtype=tf.float64)
  second = tf.random.stateless_gamma(shape, seeds[1], alpha=alpha, dtype=tf.float64)
  # Both gammas underflowing to 0 (alpha << 1) gives lam = 0, a valid draw, not NaN.
  return tf.math.divide_no_nan(first, first + second)


def sample(seed, batch_size, height, width, settings):
  """One step's mixing: (lam float32 [B], use_cutmix bool [B], box int32 [B, 4]).

  box rows are (y_low, y_high, x_low, x_high), the pasted region [y_low, y_high) x
  [x_low, x_high); lam is already the area-corrected weight for CutMix examples.
  `seed`: a stateless seed, shape [2].
  """
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 5)
  draws = batch_size if settings.mode == "elem" else 1
  apply = tf.random.stateless_uniform([draws], seeds[0]) < settings.prob
  if settings.mixup_alpha and settings.cutmix_alpha:
    use_cutmix = tf.random.stateless_uniform([draws], seeds[1]) < settings.switch_prob
  else:
    use_cutmix = tf.fill([draws], bool(settings.cutmix_alpha))
  use_cutmix &= apply
  alpha = tf.where(use_cutmix, tf.constant(settings.cutmix_alpha, tf.float64),
                   tf.constant(settings.mixup_alpha or settings.cutmix_alpha, tf.float64))
  lam = tf.where(apply, _beta(seeds[2], [draws], alpha), tf.ones([draws], tf.float64))
  lam, use_cutmix = (tf.broadcast_to(value, [batch_size]) for value in (lam, use_cutmix))
  # timm's rand_bbox: sides int(side * sqrt(1 - lam)), centre uniform, halves cut // 2.
  ratio = tf.sqrt(1.0 - lam)
  cut_h = tf.cast(tf.floor(height * ratio), tf.int32)
  cut_w = tf.cast(tf.floor(width * ratio), tf.int32)
  centre_y = tf.random.stateless_uniform([draws], seeds[3], 0, height, dtype=tf.int32)
  centre_x = tf.random.stateless_uniform([draws], seeds[4], 0, width, dtype=tf.int32)
  centre_y, centre_x = (tf.broadcast_to(value, [batch_size]) for value in (centre_y, centre_x))
  box = tf.stack([tf.clip_by_value(centre_y - cut_h // 2, 0, height),
                  tf.clip_by_value(centre_y + cut_h // 2, 0, height),
                  tf.clip_by_value(centre_x - cut_w // 2, 0, width),
                  tf.clip_by_value(centre_x + cut_w // 2, 0, width)], axis=1)
  box = tf.where(use_cutmix[:, None], box, tf.zeros_like(box))
  area = tf.cast((box[:, 1] - box[:, 0]) * (box[:, 3] - box[:, 2]), tf.float64)
  lam = tf.where(use_cutmix, 1.0 - area / (height * width), lam)
  return tf.cast(lam, tf.float32), use_cutmix, box


def mix_images(images, lam, use_cutmix, box):
  """[B, H, W, C] images mixed with their mirrors in the batch (see `sample`)."""
  partners = tf.reverse(images, axis=[0])
  height, width = tf.shape(images)[1], tf.shape(images)[2]
  rows = tf.range(height)[None, :, None, None]
  columns = tf.range(width)[None, None, :, None]
  y_low, y_high, x_low, x_high = (box[:, i, None, None, None] for i in range(4))
  pasted = ((rows >= y_low) & (rows < y_high) & (columns >= x_low) & (columns < x_high)
            & use_cutmix[:, None, None, None])
  lam = tf.cast(tf.reshape(lam, [-1, 1, 1, 1]), images.dtype)
  blended = tf.where(use_cutmix[:, None, None, None], images, images * lam + partners * (1 - lam))
  return tf.where(pasted, partners, blended)


def mix_targets(labels, num_classes, lam, label_smoothing=0.0):
  """float32 [B, C]: lam * y + (1 - lam) * y_mirror, y the smoothed one-hot labels."""
  targets = losses.smoothed_one_hot(labels, num_classes, label_smoothing)
  lam = tf.reshape(lam, [-1, 1])
  return lam * targets + (1.0 - lam) * tf.reverse(targets, axis=[0])

"""MixUp and CutMix as timm draws them: targets, pasted areas, modes, seeds."""
import numpy as np
import pytest
import tensorflow as tf

from official_resnet import mixing

BATCH, HEIGHT, WIDTH, CLASSES = 8, 20, 24, 10
BOTH = mixing.MixSettings(mixup_alpha=0.2, cutmix_alpha=1.0)


def own_pixel_images():
  """Image i holds the value i + 1 everywhere: a mixed pixel says where it came from."""
  return tf.constant(np.arange(1, BATCH + 1, dtype=np.float32)[:, None, None, None]
                     * np.ones((BATCH, HEIGHT, WIDTH, 3), np.float32))


@pytest.mark.parametrize("mode", mixing.MODES)
def test_targets_sum_to_one_and_cutmix_weights_are_the_pasted_area(mode):
  settings = mixing.MixSettings(mixup_alpha=0.4, cutmix_alpha=1.0, mode=mode)
  images = own_pixel_images()
  labels = tf.range(BATCH)
  partners = np.arange(BATCH)[::-1]
  seen_cutmix = seen_mixup = 0
  for step in range(12):
    lam, use_cutmix, box = mixing.sample(tf.constant([7, step]), BATCH, HEIGHT, WIDTH, settings)
    mixed = mixing.mix_images(images, lam, use_cutmix, box).numpy()
    targets = mixing.mix_targets(labels, CLASSES, lam).numpy()
    lam, use_cutmix = lam.numpy(), use_cutmix.numpy()
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    for i in range(BATCH):
      own, partner = i + 1, partners[i] + 1
      np.testing.assert_allclose(targets[i, i], lam[i], rtol=1e-6)
      np.testing.assert_allclose(targets[i, partners[i]], 1 - lam[i], rtol=1e-6)
      if use_cutmix[i]:
        seen_cutmix += 1
        # Every pixel is the example's own or its partner's, and the partner's share is 1 - lam.
        assert set(np.unique(mixed[i])) <= {own, partner}
        np.testing.assert_allclose((mixed[i] == partner).mean(), 1 - lam[i], atol=1e-6)
        y_low, y_high, x_low, x_high = box[i].numpy()
        assert (mixed[i, y_low:y_high, x_low:x_high] == partner).all()
      else:
        seen_mixup += lam[i] < 1
        np.testing.assert_allclose(mixed[i], lam[i] * own + (1 - lam[i]) * partner, rtol=1e-5)
    if mode == "batch":
      assert len(set(lam.tolist())) == 1 or use_cutmix.all()
      assert len(set(use_cutmix.tolist())) == 1
  assert seen_cutmix and seen_mixup


def test_a_batch_of_one_class_stays_that_class():
  labels = tf.fill([BATCH], 3)
  for mode in mixing.MODES:
    settings = mixing.MixSettings(mixup_alpha=1.0, cutmix_alpha=1.0, mode=mode)
    lam, _, _ = mixing.sample(tf.constant([1, 2]), BATCH, HEIGHT, WIDTH, settings)
    assert (lam.numpy() < 1).any()
    targets = mixing.mix_targets(labels, CLASSES, lam, label_smoothing=0.1).numpy()
    expected = np.full(CLASSES, 0.1 / CLASSES)
    expected[3] += 0.9
    np.testing.assert_allclose(targets, np.tile(expected, (BATCH, 1)), rtol=1e-6)


def test_draws_follow_the_seed_and_the_settings():
  def draw(seed, settings=BOTH, batch=BATCH):
    return [t.numpy() for t in mixing.sample(tf.constant(seed), batch, HEIGHT, WIDTH, settings)]

  first, again, other = draw([1, 5]), draw([1, 5]), draw([1, 6])
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(first, other))
  compiled = tf.function(lambda seed: mixing.sample(seed, BATCH, HEIGHT, WIDTH, BOTH))
  for a, b in zip(first, compiled(tf.constant([1, 5]))):
    np.testing.assert_array_equal(a, b.numpy())
  # prob 0: nothing mixes.
  never = mixing.MixSettings(mixup_alpha=1.0, cutmix_alpha=1.0, prob=0.0, mode="elem")
  lam, use_cutmix, _ = draw([2, 2], never)
  assert (lam == 1).all() and not use_cutmix.any()
  images = own_pixel_images()
  np.testing.assert_array_equal(
      mixing.mix_images(images, *mixing.sample(tf.constant([2, 2]), BATCH, HEIGHT, WIDTH, never)),
      images)
  # Per example over many draws: CutMix about switch_prob of the time; MixUp's Beta(1, 1)
  # is uniform, mean 1/2; CutMix's lam is an area share in [0, 1].
  many = 4000
  settings = mixing.MixSettings(mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.3, mode="elem")
  lam, use_cutmix, box = draw([3, 3], settings, many)
  assert use_cutmix.mean() == pytest.approx(0.3, abs=0.03)
  assert lam[~use_cutmix].mean() == pytest.approx(0.5, abs=0.03)
  assert ((0 <= lam) & (lam <= 1)).all()
  assert (box[:, [1, 3]] <= [HEIGHT, WIDTH]).all() and (box[:, [0, 2]] >= 0).all()


def test_settings_are_checked():
  with pytest.raises(ValueError, match=r"one of them > 0. Received: mixup_alpha=0.0, cutmix_alpha=0.0"):
    mixing.MixSettings()
  with pytest.raises(ValueError, match=r"mode must be one of \('batch', 'elem'\). Received: 'pair'"):
    mixing.MixSettings(mixup_alpha=0.2, mode="pair")

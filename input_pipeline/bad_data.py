"""Skipping images that cannot be read, counting them, and saying which.

tf.data has no in-graph try/except: an op error ends the iterator, and
`ignore_errors` drops the element silently. `attempt` wraps one element's
work in a one-element dataset with `ignore_errors`, followed by a fallback,
so the map always yields a value plus a success flag; `keep_and_count` then
filters the failures and logs each power-of-two count with the file name.
"""
import threading

import tensorflow as tf
from absl import logging


class SkippedImages:
  """Thread-safe count of unreadable images, shared by every pipeline in the process."""

  def __init__(self):
    self._lock = threading.Lock()
    self.count = 0
    self.last_name = ""

  def record(self, name: str) -> None:
    with self._lock:
      self.count += 1
      self.last_name = name
      count = self.count
    # Powers of two keep the log short however many files are bad.
    if count & (count - 1) == 0:
      logging.warning("Skipped %d unreadable image(s) so far, e.g. %s", count, name)

  def reset(self) -> None:
    with self._lock:
      self.count = 0
      self.last_name = ""


SKIPPED_IMAGES = SkippedImages()


def attempt(fn, element: tuple, fallback):
  """(fn(*element), True), or (fallback, False) when fn raises an op error."""
  tried = tf.data.Dataset.from_tensors(element).map(lambda *e: (fn(*e), True)).ignore_errors()
  failed = tf.data.Dataset.from_tensors((fallback, False))
  return tried.concatenate(failed).take(1).get_single_element()


def _record(name) -> bool:
  SKIPPED_IMAGES.record(name.numpy().decode("utf-8", "replace"))
  return False


def keep_and_count(succeeded: tf.Tensor, name: tf.Tensor) -> tf.Tensor:
  """Filter predicate: True for good elements; counts and logs the bad ones."""
  return tf.cond(
      succeeded, lambda: tf.constant(True),
      lambda: tf.py_function(_record, [name], Tout=tf.bool))

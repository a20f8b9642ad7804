"""The training objective, shared by the custom loop and compile()/fit: sparse cross-entropy
from float32 logits with optional label smoothing, plus top-1/top-5 metrics."""
import keras
import tensorflow as tf

TOP_K = 5


def per_example_crossentropy(labels, logits, label_smoothing=0.0):
  """Cross-entropy per example [batch] from integer labels and logits, computed in float32."""
  logits = tf.cast(logits, tf.float32)
  if not label_smoothing:
    return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
  # Keras' sparse loss has no smoothing; the categorical one does.
  one_hot = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), tf.shape(logits)[-1])
  return keras.losses.categorical_crossentropy(
      one_hot, logits, from_logits=True, label_smoothing=label_smoothing)


@keras.saving.register_keras_serializable(package="official_resnet")
class SparseCrossentropy(keras.losses.Loss):
  """per_example_crossentropy as a Keras loss, for compile()."""

  def __init__(self, label_smoothing=0.0, name="sparse_crossentropy", **kwargs):
    super().__init__(name=name, **kwargs)
    self.label_smoothing = label_smoothing

  def call(self, y_true, y_pred):
    return per_example_crossentropy(y_true, y_pred, self.label_smoothing)

  def get_config(self):
    return {**super().get_config(), "label_smoothing": self.label_smoothing}


def top_k(num_classes):
  """k of the top-k metric: 5, or fewer when there are fewer classes."""
  return min(TOP_K, num_classes)


def compile_metrics(num_classes):
  return [keras.metrics.SparseCategoricalAccuracy(name="top_1_accuracy"),
          keras.metrics.SparseTopKCategoricalAccuracy(k=top_k(num_classes), name="top_5_accuracy")]


def correct_counts(labels, logits, k):
  """Numbers of examples whose label is the top-1 and among the top-k logits (float32)."""
  labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
  logits = tf.cast(logits, tf.float32)
  top1 = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels),
                               tf.float32))
  topk = tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, k), tf.float32))
  return top1, topk

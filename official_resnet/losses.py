"""The training objective, shared by the custom loop and compile()/fit: softmax
cross-entropy or per-class binary cross-entropy from float32 logits, on integer labels
(optionally smoothed) or on soft targets (mixed by MixUp/CutMix), plus top-1/top-5 metrics."""
import keras
import tensorflow as tf

# k of the top-5 accuracy metric (stats' top_5_accuracy), fixed by the metric's name; how
# many classes export and predict report is ExportConfig.top_k (config.DEFAULT_TOP_K).
TOP_K = 5


def smoothed_one_hot(labels, num_classes, label_smoothing=0.0):
  """float32 [batch, num_classes]: 1 - s + s/C at the label, s/C elsewhere (Keras' and timm's smoothing)."""
  one_hot = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), num_classes)
  return one_hot * (1.0 - label_smoothing) + label_smoothing / tf.cast(num_classes, tf.float32)


def per_example_binary_crossentropy(targets, logits, target_threshold=None):
  """Sigmoid cross-entropy of every logit against its target, averaged over the classes [batch].

  The mean over classes is timm's BinaryCrossEntropy; with `target_threshold`, targets
  above it count as 1 and the rest as 0, as there.
  """
  logits = tf.cast(logits, tf.float32)
  targets = tf.cast(targets, tf.float32)
  if target_threshold is not None:
    targets = tf.cast(targets > target_threshold, tf.float32)
  return keras.losses.binary_crossentropy(targets, logits, from_logits=True)


def per_example_loss(labels, logits, *, loss="softmax", label_smoothing=0.0, targets=None,
                     bce_target_threshold=None):
  """The training loss per example [batch], float32.

  `targets` [batch, C] (soft: mixed and smoothed already) replace `labels` when given;
  `loss` is "softmax" (cross-entropy) or "bce" (per_example_binary_crossentropy).
  """
  if loss == "softmax":
    if targets is None:
      return per_example_crossentropy(labels, logits, label_smoothing)
    return keras.losses.categorical_crossentropy(targets, tf.cast(logits, tf.float32),
                                                 from_logits=True)
  if loss != "bce":
    raise ValueError(f"loss must be 'softmax' or 'bce'. Received: {loss!r}")
  if targets is None:
    targets = smoothed_one_hot(labels, tf.shape(logits)[-1], label_smoothing)
  return per_example_binary_crossentropy(targets, logits, bce_target_threshold)


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


@keras.saving.register_keras_serializable(package="official_resnet")
class SparseBinaryCrossentropy(keras.losses.Loss):
  """per_example_loss(loss="bce") from integer labels as a Keras loss, for compile()."""

  def __init__(self, label_smoothing=0.0, target_threshold=None,
               name="sparse_binary_crossentropy", **kwargs):
    super().__init__(name=name, **kwargs)
    self.label_smoothing = label_smoothing
    self.target_threshold = target_threshold

  def call(self, y_true, y_pred):
    return per_example_loss(y_true, y_pred, loss="bce", label_smoothing=self.label_smoothing,
                            bce_target_threshold=self.target_threshold)

  def get_config(self):
    return {**super().get_config(), "label_smoothing": self.label_smoothing,
            "target_threshold": self.target_threshold}


def compile_loss(loss="softmax", label_smoothing=0.0, bce_target_threshold=None):
  """The Keras loss compile() gets for the training loss `loss`."""
  if loss == "bce":
    return SparseBinaryCrossentropy(label_smoothing, bce_target_threshold)
  return SparseCrossentropy(label_smoothing)


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

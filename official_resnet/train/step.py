"""The train step: forward and backward on each replica, then one update of the weights.

make_train_function compiles up to steps_per_loop steps into one tf.function call. A step
can mix its batch (MixUp/CutMix, mixing.py), normalizes uint8 pixels on the device when
the pipeline leaves them raw, clips the replicas' summed gradient, and updates the average
of the weights (ema.py). A non-finite loss or gradient on any replica is seen by all of
them: under nan_policy='skip' every replica skips the step together (weights, optimizer
slots, BatchNorm statistics and the average stay as they were).
"""
import keras
import numpy as np
import tensorflow as tf

from input_pipeline import preprocessing
from official_resnet import distribute
from official_resnet import losses
from official_resnet import mixing
from official_resnet import private_apis
from official_resnet import progress


def mix_settings(train_config):
  """The MixSettings of `train_config`; None when it mixes nothing."""
  if not train_config.mixes:
    return None
  return mixing.MixSettings(mixup_alpha=train_config.mixup_alpha,
                            cutmix_alpha=train_config.cutmix_alpha, prob=train_config.mix_prob,
                            switch_prob=train_config.mix_switch_prob, mode=train_config.mix_mode)


def moving_statistics(model):
  """The state a training step updates outside the optimizer: non-trainable weights
  (BatchNorm's moving mean and variance) of the layers that are not frozen."""
  return [weight.value for layer in model.layers if layer.trainable
          for weight in layer.non_trainable_weights]


def make_sync_moving_statistics(strategy, model, ema=None):
  """tf.function() averaging the replicas' copies of the model's moving statistics (and of
  their averages, with an `ema`); None if there is one replica or nothing to average.

  Keras 3 BatchNorm updates its moving statistics on each replica's own copy, so the
  copies drift apart (training itself uses batch statistics). Averaging them gives what
  a per-step mean across replicas would (the update is linear), as tf.keras 2's MEAN
  aggregation did; the averages follow each replica's own statistics alike. Build it again
  after freezing or unfreezing layers.
  """
  averages = ema.statistics if ema is not None else []
  return distribute.make_replica_mean(strategy, moving_statistics(model) + averages)


def _assign_all(variables, values):
  for variable, value in zip(variables, values):
    variable.assign(value)


def _agree_on_finite(optimizer, gradients):
  """Makes every replica's gradients non-finite when any replica's are.

  The loss-scale optimizer decides per replica whether to skip a step; a
  replica skipping alone would leave the others waiting in the all-reduce.
  """
  finite = tf.cast(optimizer.check_finite(gradients), tf.float32)
  bad_replicas = tf.distribute.get_replica_context().all_reduce(
      tf.distribute.ReduceOp.SUM, 1.0 - finite)
  poison = tf.where(bad_replicas > 0, np.nan, 0.0)
  return [gradient + tf.cast(poison, gradient.dtype) for gradient in gradients]


def _clip_by_global_norm(gradients, clip_norm, optimizer, num_replicas):
  """This replica's share of the replicas' summed gradients clipped to global norm clip_norm.

  Keras' global_clipnorm clips each replica's share before its all-reduce, which is not
  the norm of the update; here the shares are summed first (one more all-reduce when
  there are several replicas), clipped, and handed back as equal shares.
  """
  if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
    # Still loss-scaled: the same clipping at the scaled norm.
    clip_norm = clip_norm * tf.cast(optimizer.dynamic_scale, tf.float32)
  if num_replicas > 1:
    gradients = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, gradients)
  gradients, _ = tf.clip_by_global_norm(gradients, clip_norm)
  if num_replicas > 1:
    gradients = [gradient / num_replicas for gradient in gradients]
  return gradients


def weight_penalties(model, variables):
  """[(index in `variables`, its regularizer)]: the model's weight penalties (--weight_decay's
  L2 on kernels). ValueError when the model has losses of another kind, which the train step
  would leave out."""
  penalties = [(index, variable.regularizer) for index, variable in enumerate(variables)
               if variable.regularizer is not None]
  if len(model.losses) != len(penalties):
    raise ValueError(
        "The train step adds the model's weight penalties (its trainable variables' "
        f"regularizers) and no other loss; model {model.name!r} has {len(model.losses)} losses "
        f"for {len(penalties)} penalized variables. Received: model.losses={model.losses}")
  return penalties


def _add_penalties(gradients, variables, penalties, optimizer, num_replicas):
  """(gradients with each penalty's gradient added, the penalties' sum / num_replicas).

  The same sums a tape over loss + penalties takes, made after the tape: each penalty reads
  its variable once the variable's gradient exists, so the penalty's gradient (a weight-sized
  product of that read) cannot be made earlier. The tape's would be made at the start of the
  backward pass and held through its peak (about 40 MiB for ResNet-50: benchmarks/README.md,
  "Short runs").
  """
  if not penalties:
    return gradients, tf.constant(0.0)
  penalized = [variables[index] for index, _ in penalties]
  with tf.GradientTape() as tape:
    terms = []
    for (index, regularizer), variable in zip(penalties, penalized):
      # A variable the loss does not reach has no gradient to wait for.
      waits_for = [gradients[index]] if gradients[index] is not None else []
      with tf.control_dependencies(waits_for):
        terms.append(tf.cast(regularizer(variable), tf.float32))
    l2 = tf.add_n(terms) / num_replicas
    scaled = optimizer.scale_loss(l2)
  gradients = list(gradients)
  for (index, _), gradient in zip(penalties, tape.gradient(scaled, penalized)):
    gradients[index] = gradient if gradients[index] is None else gradients[index] + gradient
  return gradients, l2


def _mix_seed_of_step(run_seed, step):
  """In replica context: the stateless seed of this step's mixing on this replica.

  A function of the run's seed, the global step and the replica alone, so a resumed run
  mixes its batches as an uninterrupted one would.
  """
  replica = tf.distribute.get_replica_context().replica_id_in_sync_group
  seed = tf.stack([tf.constant(run_seed, tf.int64), tf.cast(step, tf.int64)])
  return tf.random.experimental.stateless_fold_in(seed, tf.cast(replica, tf.int64))


def make_train_function(experiment, strategy, model, optimizer, step, *, ema=None,
                        normalization=None, mixing_settings=None, mix_seed=0):
  """tf.function(iterator, num_steps) running num_steps train steps of `model`; returns a dict:

  loss_sum: each step's mean loss over the global batch, summed over the steps;
  l2_sum: the L2 term's part of loss_sum (the cross entropy's is the rest);
  top_1_correct, top_k_correct: examples whose label is the top-1, among the top-k logits
    (k = losses.top_k(num_classes));
  examples: examples trained on (these five leave out steps skipped by nan_policy='skip');
  nonfinite_steps: steps whose loss or gradients were NaN or Inf (int64);
  first_nonfinite_step: the global step of the first of them, 0 when none (int64);
  first_nonfinite_learning_rate: its learning rate, 0 when none (float64).

  Each call advances `step` (the global step variable) by num_steps and updates `ema` (a
  WeightAverage) after each step. `normalization` names what the step applies to uint8
  batches (None: the batches come normalized); `mixing_settings` (mix_settings()) mixes
  batches with seeds derived from `mix_seed`. The tf.function traces for the trainable
  variables of now: build it again after freezing or unfreezing layers.
  """
  variables = model.trainable_variables
  global_batch = experiment.data.batch_size
  num_replicas = strategy.num_replicas_in_sync
  train = experiment.train
  label_smoothing = train.label_smoothing
  num_classes = experiment.model.num_classes
  k = losses.top_k(num_classes)
  loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
  skip = train.nan_policy == "skip"
  image_size = experiment.data.image_size
  penalties = weight_penalties(model, variables)

  def forward_backward(images, labels, mix):
    if normalization:
      # The pipeline's own function, so on-device and in-pipeline normalization cannot drift.
      images = preprocessing.normalize(images, normalization)
    targets = None
    if mix is not None:
      # Mixing commutes with the per-channel affine normalization, so pixels a model
      # normalizes itself mix as well, as floats.
      images = mixing.mix_images(tf.cast(images, tf.float32), *mix)
      targets = mixing.mix_targets(labels, num_classes, mix[0], label_smoothing)
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      per_example = losses.per_example_loss(
          labels, logits, loss=train.loss, label_smoothing=label_smoothing, targets=targets,
          bce_target_threshold=train.bce_target_threshold)
      # Summed and divided by the global batch: the replicas' gradients then sum to the mean's.
      cross_entropy = tf.reduce_sum(per_example) / global_batch
      # The dynamic scale, a fixed loss_scale_factor, or the loss as it is.
      scaled_loss = optimizer.scale_loss(cross_entropy)
    gradients = tape.gradient(scaled_loss, variables)
    gradients, l2 = _add_penalties(gradients, variables, penalties, optimizer, num_replicas)
    top_1, top_k = losses.correct_counts(labels, logits, k)
    return gradients, progress.pack_sums({
        "loss_sum": cross_entropy + l2, "top_1_correct": top_1, "top_k_correct": top_k,
        "examples": tf.shape(labels)[0], "l2_sum": l2}, progress.TRAIN_SUM_NAMES)

  if experiment.runtime.enable_xla:
    # The model's math only: the optimizer's cross-replica update cannot run inside XLA.
    forward_backward = tf.function(forward_backward, jit_compile=True, autograph=False)

  def clipped(gradients):
    if train.gradient_clip_norm is None:
      return gradients
    return _clip_by_global_norm(gradients, train.gradient_clip_norm, optimizer, num_replicas)

  # Read before each forward pass updates them, to be put back when the step is skipped.
  statistics = moving_statistics(model) if skip else []

  def replica_step(inputs):
    images, labels = inputs
    statistics_before = [tf.identity(variable) for variable in statistics]
    mix = None
    if mixing_settings is not None:
      mix = mixing.sample(_mix_seed_of_step(mix_seed, step), tf.shape(labels)[0], image_size,
                          image_size, mixing_settings)
    gradients, sums = forward_backward(images, labels, mix)
    finite = tf.math.is_finite(sums[0])
    if not loss_scaling:
      finite &= tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in gradients])
    if skip:
      all_finite = tf.distribute.get_replica_context().all_reduce(
          tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32)) == 0
      # A skipped step leaves BatchNorm's moving statistics as they were, not NaN.
      tf.cond(all_finite, lambda: None, lambda: _assign_all(statistics, statistics_before))
    if loss_scaling:
      # The loss-scale optimizer skips overflowing gradients itself: only the loss counts.
      gradients = _agree_on_finite(optimizer, gradients)
      optimizer.apply(clipped(gradients), variables)
    elif skip:
      private_apis.apply_if(optimizer, all_finite, clipped(gradients), variables)
    else:
      optimizer.apply(clipped(gradients), variables)
    # The bad-replica count rides after the sums in their all-reduce: no extra collective
    # per step.
    return tf.concat([sums, [1.0 - tf.cast(finite, tf.float32)]], axis=0)

  num_sums = len(progress.TRAIN_SUM_NAMES)

  # Traced as written, its loop a tf.while_loop and its branches tf.cond: autograph would
  # convert the source of every function the step calls, about a second of CPU a trace.
  @tf.function(autograph=False)
  def train_steps(iterator, num_steps):

    def one_step(done, totals, nonfinite):
      learning_rate = tf.cast(optimizer.learning_rate, tf.float64)
      per_replica = strategy.run(replica_step, args=(next(iterator),))
      reduced = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
      step.assign_add(1)
      bad = reduced[num_sums] > 0
      keep = tf.logical_not(bad & skip)
      totals += tf.where(keep, reduced[:num_sums], 0.0)
      if ema is not None and skip:
        # A skipped step leaves the average as it leaves the weights.
        tf.cond(keep, ema.update, lambda: None)
      elif ema is not None:
        ema.update()
      first = nonfinite[0] == 0
      nonfinite += tf.where(
          bad, tf.stack([tf.constant(1.0, tf.float64),
                         tf.where(first, tf.cast(step, tf.float64), 0.0),
                         tf.where(first, learning_rate, 0.0)]), tf.constant(0.0, tf.float64))
      return done + 1, totals, nonfinite

    steps = tf.cast(num_steps, tf.int64)
    # [steps, first step, its learning rate]; float64 keeps steps and rates exact.
    _, totals, nonfinite = tf.while_loop(
        lambda done, *_: done < steps, one_step,
        (tf.constant(0, tf.int64), tf.zeros([num_sums]), tf.zeros([3], tf.float64)))
    return {**progress.unpack_sums(totals, progress.TRAIN_SUM_NAMES),
            "nonfinite_steps": tf.cast(nonfinite[0], tf.int64),
            "first_nonfinite_step": tf.cast(nonfinite[1], tf.int64),
            "first_nonfinite_learning_rate": nonfinite[2]}

  return train_steps

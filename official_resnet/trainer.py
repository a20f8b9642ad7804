"""The training loop, one for every tf.distribute strategy.

Training runs in phases (each with its own length, learning rate schedule and
trainable part), each phase in pieces that end at epoch ends and evaluation
points. A piece runs either the custom loop (a tf.function running up to
steps_per_loop steps per call over a distributed iterator) or Keras' own fit
on one host. Between calls the loop logs, checkpoints and evaluates.

The global step, optimizer slots and the schedule's position come back from
the checkpoint. With a data seed, epoch e reads the training set shuffled with
a seed derived from (seed, e), and a run resumed mid-epoch skips the batches it
already trained on, so it sees what an uninterrupted run would, as far as the
input pipeline is deterministic given its seed.

The train step can mix its batches (MixUp/CutMix, mixing.py), clip the replicas' summed
gradient, and keep an average of the weights (ema.py) that evaluation swaps in; the
checkpoint of the best evaluation so far can be kept apart (best_checkpoint.py).

Faults: SIGTERM or SIGINT stops the run after the current call of the train
function with a checkpoint, raising Preempted (the command exits with
EXIT_PREEMPTED); a non-finite loss raises DivergenceError before anything is
saved after it, or skips the step under nan_policy='skip'.

What surrounds a Trainer in a run (model_dir's lock, the export after training) is
run.py's.
"""
import contextlib
import dataclasses
import os
import signal
import threading
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf

import input_pipeline
from input_pipeline import bad_data
from input_pipeline import preprocessing
from official_resnet import best_checkpoint
from official_resnet import config as config_lib
from official_resnet import distribute
from official_resnet import ema as ema_lib
from official_resnet import initial_weights
from official_resnet import losses
from official_resnet import mixing
from official_resnet import models
from official_resnet import optimizers
from official_resnet import private_apis
from official_resnet import profiling
from official_resnet import progress
from official_resnet import run_state
from official_resnet import schedules

CHECKPOINT_NAME = "ckpt"
# Exit status of a run stopped by a signal once its checkpoint is saved: EX_TEMPFAIL,
# "temporary failure, run me again"; the same command resumes.
EXIT_PREEMPTED = 75


class Preempted(Exception):
  """Training stopped on SIGTERM/SIGINT after saving a checkpoint at `step`."""

  def __init__(self, signal_name, step, total_steps):
    super().__init__(
        f"Stopped by {signal_name} at step {step} of {total_steps} with a checkpoint of that step. "
        f"Run the same command again to resume (exit status {EXIT_PREEMPTED}: preempted).")
    self.step = step


class DivergenceError(ValueError):
  """A step's loss (or its gradients) was NaN or Inf under nan_policy='stop'."""


class _StopOnSignal:
  """Turns SIGTERM and SIGINT into a flag the loop reads between calls of the train function.

  Our own handler: tf.distribute's PreemptionCheckpointHandler supports only the
  multi-worker and TPU strategies, and counts its own run calls into the checkpoint.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received = None
    self._previous = {}

  def _handle(self, signum, frame):
    if self.received is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # A second Ctrl-C does not wait for the checkpoint.
    self.received = signal.Signals(signum).name
    logging.warning("Received %s: stopping after the current steps, with a checkpoint.",
                    self.received)

  def __enter__(self):
    # Python runs signal handlers in the main thread only; elsewhere signals keep their effect.
    if threading.current_thread() is threading.main_thread():
      self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
    return self

  def __exit__(self, *exc_info):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}


@dataclasses.dataclass(frozen=True)
class Phase:
  """A PhaseConfig placed on the global step axis: it runs steps [start_step, end_step)."""
  name: str
  start_step: int
  end_step: int
  trainable: str
  schedule: keras.optimizers.schedules.LearningRateSchedule


def resolve_phases(train_config, batch_size, steps_per_epoch):
  """The Phases of `train_config`, one after the other from step 0."""
  phases, start = [], 0
  for phase in train_config.resolved_phases():
    steps = phase.steps if phase.steps is not None else max(1, round(phase.epochs * steps_per_epoch))
    schedule = schedules.build_schedule(phase.schedule, batch_size, steps_per_epoch, steps)
    phases.append(Phase(phase.name, start, start + steps, phase.trainable, schedule))
    start += steps
  return tuple(phases)


def epoch_seed(seed, epoch):
  """The data seed of one epoch; None (unseeded) stays None."""
  if seed is None:
    return None
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def normalizes_on_device(experiment):
  """Whether the train step normalizes uint8 training batches on its device (TrainConfig).

  Only where the pipeline would otherwise normalize (float32 output; a model that
  normalizes its own input gets uint8 anyway) and in the custom loop (fit feeds
  the model as it is).
  """
  return (experiment.train.normalize_on_device and experiment.train.training_loop == "custom"
          and experiment.data.output_dtype == "float32")


def _assign_all(variables, values):
  for variable, value in zip(variables, values):
    variable.assign(value)


def _next_multiple(step, every):
  return (step // every + 1) * every


class Trainer:
  """Builds the model, optimizer and checkpoint under a strategy, then trains and evaluates.

  Typical use: `trainer = Trainer(experiment); trainer.restore_or_initialize(); trainer.train()`.
  """

  def __init__(self, experiment, strategy=None):
    self.config = experiment
    self.strategy = strategy or distribute.build_strategy(experiment.runtime)
    data = experiment.data
    # Checked here, before the model is built, as well as by each input pipeline.
    input_pipeline.per_replica_batch_size(data.batch_size, self.strategy.num_replicas_in_sync)
    self.is_chief = distribute.is_chief(self.strategy)
    train_info = input_pipeline.dataset_info(data, training=True)
    self.class_names = tuple(train_info.class_names)
    if len(self.class_names) != experiment.model.num_classes:
      raise ValueError(
          f"num_classes must equal the {len(self.class_names)} classes of the training data. "
          f"Received: {experiment.model.num_classes}")
    self.steps_per_epoch = train_info.num_examples // data.batch_size
    if not self.steps_per_epoch:
      raise ValueError(
          f"batch_size must be at most the {train_info.num_examples} training examples. "
          f"Received: {data.batch_size}")
    self.normalizes_on_device = normalizes_on_device(experiment)
    self.phases = resolve_phases(experiment.train, data.batch_size, self.steps_per_epoch)
    self.total_steps = self.phases[-1].end_step
    if experiment.runtime.seed is not None:
      keras.utils.set_random_seed(experiment.runtime.seed)
    self.learning_rate_schedule = self._learning_rate_schedule()
    with self.strategy.scope():
      self.model = models.build_model(experiment.model)
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step",
                              aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
      self.optimizer = optimizers.build_optimizer(
          experiment.train.optimizer, self.learning_rate_schedule, model=self.model,
          dtype_policy=experiment.model.dtype_policy, loss_scale=experiment.runtime.loss_scale)
      # Slots for every variable now, before a phase freezes some, so that every
      # checkpoint holds the same variables whichever phase wrote it.
      self.optimizer.build(self.model.trainable_variables)
      self._compile()
      self.ema = self._weight_average()
    self.mix_settings = self._mix_settings()
    seed = experiment.runtime.seed
    self._mix_seed = seed if seed is not None else int(np.random.default_rng().integers(2**62))
    self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, step=self.step,
                                          **self._checkpointed_average())
    self._iterator_state = None
    # input_pipeline_id -> its training records, cached in memory, read once for every epoch.
    self._cached_train_records = {}
    self._evaluate_all = None
    # Rebuilt for each phase's trainable layers by _enter_phase.
    self._sync_moving_statistics = self._make_sync_moving_statistics()
    self._last_saved_step = None
    self._agree_to_stop = self._make_agree_to_stop()

  @property
  def model_dir(self):
    return self.config.train.model_dir

  def _learning_rate_schedule(self):
    if len(self.phases) == 1:
      return self.phases[0].schedule
    return schedules.PhasedSchedule([phase.start_step for phase in self.phases],
                                    [phase.schedule for phase in self.phases])

  def _weight_average(self):
    train = self.config.train
    if train.ema_decay is None:
      return None
    return ema_lib.WeightAverage(self.model, train.ema_decay, train.ema_warmup, self.strategy)

  def _checkpointed_average(self):
    return {ema_lib.CHECKPOINT_KEY: self.ema.state} if self.ema is not None else {}

  def _mix_settings(self):
    train = self.config.train
    if not train.mixes:
      return None
    return mixing.MixSettings(mixup_alpha=train.mixup_alpha, cutmix_alpha=train.cutmix_alpha,
                              prob=train.mix_prob, switch_prob=train.mix_switch_prob,
                              mode=train.mix_mode)

  def _compile(self):
    """compile() with the loop's optimizer, loss and metrics: fit/evaluate see the same objective."""
    train = self.config.train
    with self.strategy.scope():
      self.model.compile(
          optimizer=self.optimizer,
          loss=losses.compile_loss(train.loss, train.label_smoothing, train.bce_target_threshold),
          metrics=losses.compile_metrics(self.config.model.num_classes),
          jit_compile=self.config.runtime.enable_xla)

  def current_step(self):
    return int(self.step.numpy())

  def last_learning_rate(self):
    """The rate the last applied update used; optimizer.learning_rate is already the next one's.

    At a phase's end the next would be the next phase's rate.
    """
    return float(self.learning_rate_schedule(max(int(self.optimizer.iterations.numpy()) - 1, 0)))

  # ----------------------------------------------------------------- state

  def restore_or_initialize(self, write_config=True, init_scope=None):
    """Resumes from model_dir's latest checkpoint, else loads init_checkpoint, if any.

    `init_scope` overrides init_checkpoint_scope ("backbone" or "all"). A config.json of
    another model or other classes raises before anything is written. Returns the step
    training continues from.
    """
    config_path = run_state.config_path(self.model_dir)
    if tf.io.gfile.exists(config_path):
      run_state.check_resume_compatible(
          run_state.read_run_config(self.model_dir), self.config.model, self.class_names)
    latest = tf.train.latest_checkpoint(self.model_dir)
    train = self.config.train
    if latest:
      self._restore(latest)
      logging.info("Resumed from %s at step %d.", latest, self.current_step())
    elif train.init_checkpoint:
      scope = init_scope or train.init_checkpoint_scope
      models.load_pretrained(self.model, train.init_checkpoint, load_head=scope == "all")
      logging.info("Initialized %s from %s.", scope, train.init_checkpoint)
      self._warn_unlike_the_weights()
    if self.ema is not None and not latest:
      # The average starts at the weights training starts from, loaded ones included.
      self.ema.reset()
    if write_config and self.is_chief:
      run_state.write_run_config(self.model_dir, self.config.model, self.config.data,
                                 self.class_names, self.config.train, self.config.runtime)
    return self.current_step()

  def _warn_unlike_the_weights(self):
    """One warning naming the settings init_checkpoint implies that this run does not use:
    chosen so by its caller, or an experiment not made with initial_weights.start_from."""
    path = self.config.train.init_checkpoint
    implied = initial_weights.implied_settings(initial_weights.weights_info(path),
                                               self.config.data)
    sections = {"data": self.config.data, "model": self.config.model}
    unlike = []
    for field, value in implied.items():
      section, name = field.split(".")
      if getattr(sections[section], name) != value:
        unlike.append(f"{field}={getattr(sections[section], name)!r} (the weights' {value!r})")
    if unlike:
      logging.warning("This run differs from what %s implies: %s. initial_weights.start_from "
                      "sets what weights imply.", path, "; ".join(unlike))

  def _restore(self, path):
    """Restores a checkpoint of this trainer; one without a weight average starts the average
    at its weights (a run resumed with averaging newly switched on)."""
    if self.ema is None or ema_lib.checkpoint_has_average(path):
      self.checkpoint.restore(path).assert_existing_objects_matched()
      return
    tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, step=self.step).restore(
        path).assert_existing_objects_matched()
    self.ema.reset()
    logging.warning("%s holds no average of the weights: the average starts at its weights.", path)

  def _checkpoint_manager(self):
    # Every worker must save (variables are read collectively); only the chief keeps its files.
    directory = self.model_dir
    if not self.is_chief:
      directory = os.path.join(self.model_dir, "worker_tmp", distribute.task_name(self.strategy))
    return tf.train.CheckpointManager(
        self.checkpoint, directory, max_to_keep=self.config.train.keep_checkpoints if self.is_chief else 1,
        checkpoint_name=CHECKPOINT_NAME)

  def _save(self, manager):
    step = self.current_step()
    if step == self._last_saved_step:
      return
    self.sync_replicas()
    path = manager.save(checkpoint_number=step)
    self._last_saved_step = step
    if self.is_chief:
      logging.info("Saved %s.", path)
    else:
      tf.io.gfile.rmtree(manager.directory)

  # ------------------------------------------------------------------ data

  def train_data_config(self):
    """The training input's DataConfig: uint8 pixels where the train step normalizes them."""
    if self.normalizes_on_device:
      return dataclasses.replace(self.config.data, output_dtype="uint8")
    return self.config.data

  def _train_records(self, data, input_context):
    """The records every epoch's pipeline reads when they are cached (data.cache), else None.

    tf.data keeps the cache with the records' dataset object, so epochs share one. Its file
    order is the run's (data.seed), not an epoch's: a resumed run caches what an
    uninterrupted one cached.
    """
    if not data.cache:
      return None
    pipeline_id = input_context.input_pipeline_id if input_context is not None else 0
    if pipeline_id not in self._cached_train_records:
      self._cached_train_records[pipeline_id] = input_pipeline.read_records(
          data, training=True, input_context=input_context)
    return self._cached_train_records[pipeline_id]

  def train_dataset(self, epoch, offset=0, input_context=None):
    """Epoch `epoch`'s training batches from step `offset` of the epoch on: the same batches
    in every run with a data seed (each epoch its own order)."""
    data = self.train_data_config()
    records = self._train_records(data, input_context)
    data = dataclasses.replace(data, seed=epoch_seed(data.seed, epoch))
    dataset = input_pipeline.build_dataset(data, training=True, input_context=input_context,
                                           records=records)
    if offset and data.seed is not None:
      batches_per_step = 1
      if input_context is not None:
        batches_per_step = input_context.num_replicas_in_sync // input_context.num_input_pipelines
      dataset = dataset.skip(offset * batches_per_step)
    return dataset

  def _train_iterator(self, step):
    """A distributed iterator over the epoch of global step `step`, positioned at it.

    An iterator ends its use at its epoch's end: each epoch reads its own seeded order
    (train_dataset), so a run resumed at an epoch boundary reads what an uninterrupted
    one reads.
    """
    epoch, offset = divmod(step, self.steps_per_epoch)
    if self._iterator_state is not None and self._iterator_state[:2] == (epoch, step):
      return self._iterator_state[2]
    if offset:
      if self.config.data.seed is None:
        logging.info("No data seed: epoch %d restarts its data in a new order.", epoch)
      else:
        logging.info("Skipping %d batches to resume epoch %d where it stopped.", offset, epoch)
    dataset = self.strategy.distribute_datasets_from_function(
        lambda context: self.train_dataset(epoch, offset, context))
    iterator = iter(dataset)
    self._iterator_state = (epoch, step, iterator)
    return iterator

  def _advance_iterator(self, iterator, step):
    """Records that `iterator` now stands at global step `step` of its epoch."""
    epoch = self._iterator_state[0]
    self._iterator_state = (epoch, step, iterator)

  # ------------------------------------------------------------ the steps

  def _enter_phase(self, phase):
    models.unfreeze_all(self.model)
    if phase.trainable == config_lib.TRAINABLE_HEAD:
      models.freeze_backbone(self.model)
    elif phase.trainable != config_lib.TRAINABLE_ALL:
      models.freeze_below(self.model, phase.trainable)
    logging.info("Phase %r: steps %d to %d, trainable %s (%d variables).", phase.name,
                 phase.start_step, phase.end_step, phase.trainable,
                 len(self.model.trainable_variables))
    if self.config.train.training_loop == "fit":
      # Keras traces fit's step with the trainable variables of compile time.
      self._compile()
    self._sync_moving_statistics = self._make_sync_moving_statistics()

  def sync_replicas(self):
    """Makes the replicas' moving statistics agree (their mean), before they are saved or used."""
    if self._sync_moving_statistics is not None:
      self._sync_moving_statistics()

  def _agree_on_finite(self, gradients):
    """Makes every replica's gradients non-finite when any replica's are.

    The loss-scale optimizer decides per replica whether to skip a step; a
    replica skipping alone would leave the others waiting in the all-reduce.
    """
    finite = tf.cast(self.optimizer.check_finite(gradients), tf.float32)
    bad_replicas = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, 1.0 - finite)
    poison = tf.where(bad_replicas > 0, np.nan, 0.0)
    return [gradient + tf.cast(poison, gradient.dtype) for gradient in gradients]

  def _make_agree_to_stop(self):
    """bool(local stop request) -> whether any worker asked to stop; all workers get the same answer."""
    if distribute.num_workers(self.strategy) == 1:
      return bool
    strategy = self.strategy

    @tf.function
    def any_worker(flag):
      per_replica = strategy.run(tf.identity, args=(flag,))
      return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None) > 0

    return lambda requested: bool(any_worker(tf.constant(float(requested))))

  def divergence_error(self, step, learning_rate):
    """The DivergenceError train() raises when global step `step`, at `learning_rate`, gave a
    non-finite loss or gradients under nan_policy='stop'."""
    latest = tf.train.latest_checkpoint(self.model_dir)
    kept = f"the last good checkpoint is {latest}" if latest else "no checkpoint was saved"
    if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
      what = ("the loss became NaN or Inf (dtype=fp16: dynamic loss scaling already skips steps "
              "whose scaled gradients overflow; this was the loss itself)")
    else:
      what = "the loss or its gradients became NaN or Inf"
    return DivergenceError(
        f"Training diverged at step {step}: {what} at learning rate {learning_rate:.6g}. "
        f"Stopped without saving or exporting after it; {kept}. Lower --base_learning_rate "
        "(or lengthen --warmup_epochs), or pass --nan_policy=skip to skip such steps.")

  def make_train_function(self):
    """tf.function(iterator, num_steps) running num_steps train steps; returns a dict:

    loss_sum: each step's mean loss over the global batch, summed over the steps;
    top_1_correct, top_k_correct: examples whose label is the top-1, among the top-k logits
      (k = losses.top_k(num_classes));
    examples: examples trained on (these four leave out steps skipped by nan_policy='skip');
    nonfinite_steps: steps whose loss or gradients were NaN or Inf (int64);
    first_nonfinite_step: the global step of the first of them, 0 when none (int64);
    first_nonfinite_learning_rate: its learning rate, 0 when none (float64).

    Each call advances the global step by num_steps. The tf.function traces for the
    trainable variables of now: build it again after freezing or unfreezing layers.
    """
    model, optimizer, strategy = self.model, self.optimizer, self.strategy
    variables = model.trainable_variables
    global_batch = self.config.data.batch_size
    num_replicas = strategy.num_replicas_in_sync
    train = self.config.train
    label_smoothing = train.label_smoothing
    num_classes = self.config.model.num_classes
    k = losses.top_k(num_classes)
    loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    skip = train.nan_policy == "skip"
    normalization = self.config.data.normalization if self.normalizes_on_device else None
    mix_settings, image_size, ema = self.mix_settings, self.config.data.image_size, self.ema

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
        loss = tf.reduce_sum(per_example) / global_batch
        if model.losses:
          loss += tf.add_n([tf.cast(term, tf.float32) for term in model.losses]) / num_replicas
        # The dynamic scale, a fixed loss_scale_factor, or the loss as it is.
        scaled_loss = optimizer.scale_loss(loss)
      gradients = tape.gradient(scaled_loss, variables)
      top_1, top_k = losses.correct_counts(labels, logits, k)
      return gradients, progress.pack_sums({
          "loss_sum": loss, "top_1_correct": top_1, "top_k_correct": top_k,
          "examples": tf.shape(labels)[0]})

    if self.config.runtime.enable_xla:
      # The model's math only: the optimizer's cross-replica update cannot run inside XLA.
      forward_backward = tf.function(forward_backward, jit_compile=True)

    def clipped(gradients):
      if train.gradient_clip_norm is None:
        return gradients
      return self._clip_by_global_norm(gradients, train.gradient_clip_norm, loss_scaling)

    # Read before each forward pass updates them, to be put back when the step is skipped.
    moving_statistics = self.moving_statistics() if skip else []

    def replica_step(inputs):
      images, labels = inputs
      statistics_before = [tf.identity(variable) for variable in moving_statistics]
      mix = None
      if mix_settings is not None:
        mix = mixing.sample(self._mix_seed_of_step(), tf.shape(labels)[0], image_size, image_size,
                            mix_settings)
      gradients, sums = forward_backward(images, labels, mix)
      finite = tf.math.is_finite(sums[0])
      if not loss_scaling:
        finite &= tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in gradients])
      if skip:
        all_finite = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32)) == 0
        # A skipped step leaves BatchNorm's moving statistics as they were, not NaN.
        tf.cond(all_finite, lambda: None, lambda: _assign_all(moving_statistics, statistics_before))
      if loss_scaling:
        # The loss-scale optimizer skips overflowing gradients itself: only the loss counts.
        gradients = self._agree_on_finite(gradients)
        optimizer.apply(clipped(gradients), variables)
      elif skip:
        private_apis.apply_if(optimizer, all_finite, clipped(gradients), variables)
      else:
        optimizer.apply(clipped(gradients), variables)
      # The bad-replica count rides after the sums in their all-reduce: no extra collective
      # per step.
      return tf.concat([sums, [1.0 - tf.cast(finite, tf.float32)]], axis=0)

    @tf.function
    def train_steps(iterator, num_steps):
      num_sums = len(progress.SUM_NAMES)
      totals = tf.zeros([num_sums])
      # [steps, first step, its learning rate]; float64 keeps steps and rates exact.
      nonfinite = tf.zeros([3], tf.float64)
      for _ in tf.range(num_steps):
        learning_rate = tf.cast(optimizer.learning_rate, tf.float64)
        per_replica = strategy.run(replica_step, args=(next(iterator),))
        reduced = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
        self.step.assign_add(1)
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
                           tf.where(first, tf.cast(self.step, tf.float64), 0.0),
                           tf.where(first, learning_rate, 0.0)]), tf.constant(0.0, tf.float64))
      return {**progress.unpack_sums(totals),
              "nonfinite_steps": tf.cast(nonfinite[0], tf.int64),
              "first_nonfinite_step": tf.cast(nonfinite[1], tf.int64),
              "first_nonfinite_learning_rate": nonfinite[2]}

    return train_steps

  def moving_statistics(self):
    """The state a training step updates outside the optimizer: non-trainable weights
    (BatchNorm's moving mean and variance) of the layers that are not frozen."""
    return [weight.value for layer in self.model.layers if layer.trainable
            for weight in layer.non_trainable_weights]

  def _mix_seed_of_step(self):
    """In replica context: the stateless seed of this step's mixing on this replica.

    A function of the run's seed, the global step and the replica alone, so a resumed run
    mixes its batches as an uninterrupted one would.
    """
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    seed = tf.stack([tf.constant(self._mix_seed, tf.int64), tf.cast(self.step, tf.int64)])
    return tf.random.experimental.stateless_fold_in(seed, tf.cast(replica, tf.int64))

  def _clip_by_global_norm(self, gradients, clip_norm, loss_scaling):
    """This replica's share of the replicas' summed gradients clipped to global norm clip_norm.

    Keras' global_clipnorm clips each replica's share before its all-reduce, which is not
    the norm of the update; here the shares are summed first (one more all-reduce when
    there are several replicas), clipped, and handed back as equal shares.
    """
    if loss_scaling:
      # Still loss-scaled: the same clipping at the scaled norm.
      clip_norm = clip_norm * tf.cast(self.optimizer.dynamic_scale, tf.float32)
    replicas = self.strategy.num_replicas_in_sync
    if replicas > 1:
      gradients = tf.distribute.get_replica_context().all_reduce(
          tf.distribute.ReduceOp.SUM, gradients)
    gradients, _ = tf.clip_by_global_norm(gradients, clip_norm)
    if replicas > 1:
      gradients = [gradient / replicas for gradient in gradients]
    return gradients

  def _make_sync_moving_statistics(self):
    """tf.function() averaging the replicas' copies of the model's moving statistics (and of
    their averages, with --ema_decay); None if none.

    Keras 3 BatchNorm updates its moving statistics on each replica's own copy, so the
    copies drift apart (training itself uses batch statistics). Averaging them gives what
    a per-step mean across replicas would (the update is linear), as tf.keras 2's MEAN
    aggregation did; the averages follow each replica's own statistics alike.
    """
    averages = self.ema.statistics if self.ema is not None else []
    return distribute.make_replica_mean(self.strategy, self.moving_statistics() + averages)

  def _make_evaluate_all(self):
    """tf.function() -> {"sums": pack_sums of progress.SUM_NAMES, "confusion": [C, C]} summed
    over one pass of the eval set (loss_sum per example); confusion rows are true classes,
    columns predicted ones."""
    model, strategy = self.model, self.strategy
    num_classes = self.config.model.num_classes
    k = losses.top_k(num_classes)

    def batch_sums(images, labels):
      logits = model(images, training=False)
      loss = tf.reduce_sum(losses.per_example_crossentropy(labels, logits))
      top_1, top_k = losses.correct_counts(labels, logits, k)
      predictions = tf.argmax(tf.cast(logits, tf.float32), axis=-1, output_type=tf.int32)
      confusion = tf.math.confusion_matrix(tf.reshape(labels, [-1]), predictions,
                                           num_classes=num_classes, dtype=tf.float32)
      sums = progress.pack_sums({"loss_sum": loss, "top_1_correct": top_1,
                                 "top_k_correct": top_k, "examples": tf.shape(labels)[0]})
      return {"sums": sums, "confusion": confusion}

    if self.config.runtime.enable_xla:
      batch_sums = tf.function(batch_sums, jit_compile=True)

    def replica_eval(images, labels):
      # Replicas past the end of the eval set get empty batches, which the model must not
      # see: TF 2.21's oneDNN CPU convolution returns an empty input unchanged.
      return tf.cond(tf.shape(labels)[0] > 0, lambda: batch_sums(images, labels),
                     lambda: {"sums": tf.zeros([len(progress.SUM_NAMES)]),
                              "confusion": tf.zeros([num_classes, num_classes])})

    dataset = strategy.distribute_datasets_from_function(
        lambda context: input_pipeline.build_dataset(self.config.data, training=False,
                                                     input_context=context))

    def reduce_sum(per_replica):
      return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    @tf.function
    def evaluate_all():
      sums = tf.zeros([len(progress.SUM_NAMES)])
      confusion = tf.zeros([num_classes, num_classes])
      for inputs in dataset:
        per_replica = strategy.run(replica_eval, args=inputs)
        # One reduce per value: MultiWorkerMirroredStrategy's reduce of a list stacks its
        # values, which fails for values of different shapes.
        sums += reduce_sum(per_replica["sums"])
        confusion += reduce_sum(per_replica["confusion"])
      return {"sums": sums, "confusion": confusion}

    return evaluate_all

  # ------------------------------------------------------------ the loops

  def _run_custom(self, train_function, start, end, on_steps, profiler):
    step = start
    steps_per_loop = self.config.train.steps_per_loop or self.steps_per_epoch
    while step < end:
      # A call stops where the host has something to do: log, checkpoint, profile, piece
      # end, and where the epoch's data ends.
      stop = min(end, step + steps_per_loop, _next_multiple(step, self.config.train.log_steps),
                 _next_multiple(step, self._checkpoint_every()),
                 _next_multiple(step, self.steps_per_epoch), profiler.next_boundary(step) or end)
      iterator = self._train_iterator(step)
      began = time.perf_counter()
      results = train_function(iterator, tf.constant(stop - step, tf.int32))
      self._advance_iterator(iterator, stop)
      on_steps(stop, {name: value.numpy() for name, value in results.items()}, stop - step,
               time.perf_counter() - began)
      step = stop

  def _run_fit(self, start, end, on_steps):
    epoch, offset = divmod(start, self.steps_per_epoch)
    dataset = self.train_dataset(epoch, offset)
    callback = _FitSteps(self, on_steps, self.config.data.batch_size)
    self.model.fit(dataset, steps_per_epoch=end - start, epochs=1, verbose=0, callbacks=[callback])

  def _checkpoint_every(self):
    return self.config.train.checkpoint_steps or self.steps_per_epoch

  def _eval_every(self):
    return max(1, round(self.config.train.epochs_between_evals * self.steps_per_epoch))

  @contextlib.contextmanager
  def evaluation_weights(self):
    """While it lasts, the model holds the weights evaluation and export use: the average
    of the weights when the run keeps one, else the trained weights themselves."""
    if self.ema is None:
      yield
      return
    self.ema.swap()
    try:
      yield
    finally:
      self.ema.swap()

  def evaluate(self, average=False):
    """Metrics over the whole evaluation set, each example exactly once, on every strategy.

    average=True evaluates what the run evaluates (evaluation_weights): the average of the
    weights when the run keeps one; else the trained weights.

    Returns progress.eval_result's dict: loss, top-1, top-5, examples, per-class precision,
    recall and F1, and the confusion matrix.
    """
    if average:
      with self.evaluation_weights():
        return self.evaluate()
    if self._evaluate_all is None:
      self._evaluate_all = self._make_evaluate_all()
    self.sync_replicas()
    totals = self._evaluate_all()
    return progress.eval_result(progress.unpack_sums(totals["sums"].numpy()),
                                totals["confusion"].numpy(), self.class_names)

  def train(self, evaluate=True):
    """Trains to the end of the last phase from the current step; returns the run's stats.

    Raises Preempted after saving when SIGTERM/SIGINT arrives (on any worker), and
    DivergenceError (nan_policy='stop') when a step's loss is not finite.
    """
    profiler = profiling.StepProfiler(self.config.train.profile_steps,
                                      os.path.join(self.model_dir, "train"), active=self.is_chief)
    with _StopOnSignal() as stop_request, profiler:
      return self._train(evaluate, stop_request, profiler)

  def _warn_about_schedules(self):
    """One line per phase whose given warm-up or decay epochs fall outside it."""
    for phase, config in zip(self.phases, self.config.train.resolved_phases()):
      if self.current_step() < phase.end_step:
        outside = schedules.outside_the_phase(config.schedule, self.steps_per_epoch,
                                              phase.end_step - phase.start_step)
        if outside:
          logging.warning("Phase %r lasts %.4g epochs (%d steps): %s.", phase.name,
                          (phase.end_step - phase.start_step) / self.steps_per_epoch,
                          phase.end_step - phase.start_step, outside)

  def _train(self, evaluate, stop_request, profiler):
    began = time.time()
    start_step = self.current_step()
    skipped_before = bad_data.SKIPPED_IMAGES.snapshot()
    self._warn_about_schedules()
    manager = self._checkpoint_manager()
    reporter = progress.Reporter(self.model_dir, self.total_steps, active=self.is_chief,
                                 tensorboard=self.config.train.enable_tensorboard)
    profiler.after(start_step)
    phase_ends = {phase.end_step for phase in self.phases}
    window, interval, steady = progress.MetricSums(), progress.MetricSums(), progress.MetricSums()
    history = []
    last_metrics = None
    first_call = True
    best = None
    if self.config.train.best_metric:
      best = best_checkpoint.BestCheckpoint(self.model_dir, self.config.train.best_metric,
                                            self.is_chief)

    def on_steps(step, results, steps, seconds):
      """After `steps` steps up to `step`: `results` as make_train_function's, in numbers."""
      nonlocal first_call
      bad_steps = int(results["nonfinite_steps"])
      first_bad = int(results["first_nonfinite_step"])
      learning_rate = float(results["first_nonfinite_learning_rate"])
      if bad_steps and self.config.train.nan_policy == "stop":
        reporter.close()
        raise self.divergence_error(first_bad, learning_rate)
      if bad_steps:
        logging.warning("Skipped %d steps whose loss or gradients were NaN or Inf, the first at "
                        "step %d (learning rate %.6g).", bad_steps, first_bad, learning_rate)
      trained = steps - bad_steps
      window.add(results, trained, seconds)
      interval.add(results, trained, seconds)
      # The first call includes tracing and compilation: left out of the throughput figure.
      if not first_call:
        steady.add(results, trained, seconds)
      first_call = False
      profiler.after(step)
      if step % self.config.train.log_steps == 0 or step in phase_ends:
        reporter.train(step, window.result(), self.last_learning_rate())
        window.reset()
      if step % self._checkpoint_every() == 0:
        self._save(manager)
      if self._agree_to_stop(stop_request.received is not None):
        self._save(manager)
        reporter.close()
        raise Preempted(stop_request.received or "another worker's signal", step, self.total_steps)

    for phase in self.phases:
      if self.current_step() >= phase.end_step:
        continue
      self._enter_phase(phase)
      train_function = (self.make_train_function()
                        if self.config.train.training_loop == "custom" else None)
      while (step := self.current_step()) < phase.end_step:
        end = min(phase.end_step, _next_multiple(step, self.steps_per_epoch),
                  _next_multiple(step, self._eval_every()))
        if train_function is None:
          self._run_fit(step, end, on_steps)
        else:
          self._run_custom(train_function, step, end, on_steps, profiler)
        if end % self._eval_every() == 0 or end == phase.end_step:
          # Throughput goes to the log lines and stats["examples_per_second"]; an interval's
          # would include the first call's tracing.
          entry = {"step": end, "epoch": end / self.steps_per_epoch, "phase": phase.name,
                   "learning_rate": float(self.optimizer.learning_rate),
                   **{f"train_{name}": value for name, value in interval.result().items()
                      if name != "examples_per_second"}}
          interval.reset()
          if evaluate:
            last_metrics = self._evaluate_and_keep_best(end, best)
            reporter.evaluate(end, last_metrics)
            entry.update(progress.eval_fields(last_metrics, with_report=False))
          history.append(entry)
      self._save(manager)
    if not history:
      logging.info("Step %d already reaches the %d steps to train.", start_step, self.total_steps)
      if evaluate:
        last_metrics = self._evaluate_and_keep_best(start_step, best)
        reporter.evaluate(start_step, last_metrics)
        history.append({"step": start_step, "epoch": start_step / self.steps_per_epoch,
                        **progress.eval_fields(last_metrics, with_report=False)})
    reporter.close()
    profiler.close()
    stats = self._stats(start_step, history, steady, time.time() - began)
    if last_metrics is not None:
      stats.update(progress.eval_fields(last_metrics))
    stats.update(bad_data.SKIPPED_IMAGES.since(skipped_before))
    if self.is_chief:
      run_state.write_stats(self.model_dir, stats)
    return stats

  def _evaluate_and_keep_best(self, step, best):
    """Evaluates the evaluation weights; `best` (a BestCheckpoint or None) keeps a better step."""
    metrics = self.evaluate(average=True)
    if best is not None:
      scratch = os.path.join(self.model_dir, "worker_tmp", distribute.task_name(self.strategy),
                             best_checkpoint.DIRECTORY)
      best.consider(step, metrics, self._write_checkpoint, scratch_dir=scratch)
    return metrics

  def _write_checkpoint(self, prefix):
    self.sync_replicas()
    self.checkpoint.write(prefix)

  def _stats(self, start_step, history, steady, wall_time):
    step = self.current_step()
    stats = {"step": step, "start_step": start_step, "total_steps": self.total_steps,
             "steps_per_epoch": self.steps_per_epoch, "epochs": step / self.steps_per_epoch,
             "global_batch_size": self.config.data.batch_size,
             "num_replicas": self.strategy.num_replicas_in_sync,
             "training_loop": self.config.train.training_loop,
             "wall_time_s": wall_time, "history": history}
    if steady.steps:
      stats["examples_per_second"] = steady.result()["examples_per_second"]
    for entry in reversed(history):
      stats.update({name: value for name, value in entry.items()
                    if name.startswith(("train_", "eval_")) and name not in stats})
    return stats


class _FitSteps(keras.callbacks.Callback):
  """Turns fit's running means into per-step sums, and counts the global step."""

  def __init__(self, trainer, on_steps, global_batch):
    super().__init__()
    self._trainer = trainer
    self._on_steps = on_steps
    self._global_batch = global_batch

  def on_train_begin(self, logs=None):
    self._previous = dict.fromkeys(progress.SUM_NAMES, 0.0)
    self._time = time.perf_counter()

  def on_train_batch_end(self, batch, logs=None):
    steps = batch + 1
    examples = steps * self._global_batch
    cumulative = {"loss_sum": logs["loss"] * steps,
                  "top_1_correct": logs["top_1_accuracy"] * examples,
                  "top_k_correct": logs["top_5_accuracy"] * examples, "examples": examples}
    results = {name: cumulative[name] - self._previous[name] for name in progress.SUM_NAMES}
    self._previous = cumulative
    self._trainer.step.assign_add(1)
    now = time.perf_counter()
    step = self._trainer.current_step()
    finite = np.isfinite(results["loss_sum"])
    results.update(nonfinite_steps=0 if finite else 1, first_nonfinite_step=0 if finite else step,
                   first_nonfinite_learning_rate=(
                       0.0 if finite else float(self._trainer.optimizer.learning_rate)))
    self._on_steps(step, results, 1, now - self._time)
    self._time = now


def eval_reporter(trainer):
  """The progress.Reporter of an evaluation job: no progress bar, TensorBoard as configured."""
  return progress.Reporter(trainer.model_dir, trainer.total_steps, active=trainer.is_chief,
                           tensorboard=trainer.config.train.enable_tensorboard, progress_bar=False)


def record_evaluation(trainer, reporter, step, metrics):
  """Reports `metrics` of step `step` (log, TensorBoard, model_dir/eval/) and writes them to
  eval_stats.json (chief only); returns the stats written."""
  reporter.evaluate(step, metrics)
  reporter.close()
  stats = {"step": step, **progress.eval_fields(metrics)}
  if trainer.is_chief:
    run_state.write_stats(trainer.model_dir, stats, name=run_state.EVAL_STATS_FILE)
  return stats

"""The training of a run, one for every tf.distribute strategy: a Trainer and its parts.

A Trainer holds what training changes (model, optimizer, global step, the average of the
weights) and the checkpoint of all of it, built under a strategy; the rest is in the
parts, the Model Garden's split (official/core/base_trainer.py, orbit's Controller):

    train/phases.py         the run's classes, steps per epoch and phases; freezing
    train/inputs.py         the training batches over all epochs, from a global step
    train/step.py           the train step (make_train_function)
    train/evaluator.py      evaluation; built alone, it needs no optimizer
    train/checkpointing.py  restore(), the one way to read a checkpoint; saving
    train/controller.py     the loop: pieces, logging, checkpoints, evaluations, stops
    train/faults.py         signals (Preempted) and divergence (DivergenceError)

The global step, optimizer slots and the schedule's position come back from the
checkpoint, and each epoch's data order from the data seed (inputs.py), so a resumed run
ends with the weights of an uninterrupted one. What surrounds a Trainer in a run
(model_dir's lock, the export after training) is run.py's.
"""
import contextlib
import os

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from official_resnet import distribute
from official_resnet import ema as ema_lib
from official_resnet import losses
from official_resnet import models
from official_resnet import optimizers
from official_resnet import profiling
from official_resnet import run_state
from official_resnet.train import checkpointing
from official_resnet.train import controller
from official_resnet.train import evaluator as evaluator_lib
from official_resnet.train import faults
from official_resnet.train import inputs
from official_resnet.train import phases as phases_lib
from official_resnet.train import step as step_lib

# The names callers of this module know (main.py, run.py, tests), from the parts.
CHECKPOINT_NAME = checkpointing.CHECKPOINT_NAME
EXIT_PREEMPTED = faults.EXIT_PREEMPTED
Preempted = faults.Preempted
DivergenceError = faults.DivergenceError
normalizes_on_device = inputs.normalizes_on_device


class Trainer:
  """Builds the model, optimizer and checkpoint under a strategy, then trains and evaluates.

  Typical use: `trainer = Trainer(experiment); trainer.restore_or_initialize(); trainer.train()`.
  """

  def __init__(self, experiment, strategy=None):
    self.config = experiment
    self.strategy = strategy or distribute.build_strategy(experiment.runtime)
    self.is_chief = distribute.is_chief(self.strategy)
    self.plan = phases_lib.plan(experiment, self.strategy.num_replicas_in_sync)
    if experiment.runtime.seed is not None:
      keras.utils.set_random_seed(experiment.runtime.seed)
    self.learning_rate_schedule = self.plan.learning_rate_schedule()
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
      self.ema = None
      if experiment.train.ema_decay is not None:
        self.ema = ema_lib.WeightAverage(self.model, experiment.train.ema_decay,
                                         experiment.train.ema_warmup, self.strategy)
    self.mix_settings = step_lib.mix_settings(experiment.train)
    seed = experiment.runtime.seed
    self._mix_seed = seed if seed is not None else int(np.random.default_rng().integers(2**62))
    self.checkpoint = checkpointing.state_checkpoint(
        self.model, step=self.step, optimizer=self.optimizer, weight_average=self.ema)
    self.train_input = inputs.TrainInput(experiment, self.strategy, self.plan.steps_per_epoch)
    self.evaluator = evaluator_lib.Evaluator(experiment, self.strategy, self.plan, self.model,
                                             self.step)
    # Rebuilt for each phase's trainable layers by enter_phase.
    self._sync_moving_statistics = step_lib.make_sync_moving_statistics(
        self.strategy, self.model, self.ema)

  @property
  def model_dir(self):
    return self.config.train.model_dir

  @property
  def class_names(self):
    return self.plan.class_names

  @property
  def steps_per_epoch(self):
    return self.plan.steps_per_epoch

  @property
  def total_steps(self):
    return self.plan.total_steps

  @property
  def normalizes_on_device(self):
    return inputs.normalizes_on_device(self.config)

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

  def restore_or_initialize(self, write_config=True):
    """Resumes from model_dir's latest checkpoint, else loads init_checkpoint, if any.

    A config.json of another model or other classes raises before anything is written.
    Returns the step training continues from.
    """
    checkpointing.check_run_config(self.model_dir, self.config.model, self.class_names)
    latest = tf.train.latest_checkpoint(self.model_dir)
    train = self.config.train
    if latest:
      checkpointing.restore(latest, self.checkpoint, weight_average=self.ema)
      logging.info("Resumed from %s at step %d.", latest, self.current_step())
    elif train.init_checkpoint:
      checkpointing.initialize(self.model, self.config, train.init_checkpoint_scope)
    if self.ema is not None and not latest:
      # The average starts at the weights training starts from, loaded ones included.
      self.ema.reset()
    # A run with nothing left to train keeps its files as they are.
    if write_config and self.is_chief and self.current_step() < self.total_steps:
      run_state.write_run_config(self.model_dir, self.config.model, self.config.data,
                                 self.class_names, self.config.train, self.config.runtime)
    return self.current_step()

  def train(self, evaluate=True):
    """Trains to the end of the last phase from the current step; returns the run's stats.

    Raises Preempted after saving when SIGTERM/SIGINT arrives (on any worker), and
    DivergenceError (nan_policy='stop') when a step's loss is not finite.
    """
    profiler = profiling.StepProfiler(self.config.train.profile_steps,
                                      os.path.join(self.model_dir, "train"), active=self.is_chief)
    with faults.StopOnSignal() as stop_request, profiler:
      return controller.Controller(self, evaluate, stop_request, profiler).run()

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
    self.sync_replicas()
    return self.evaluator.evaluate()

  def enter_phase(self, phase):
    """Makes trainable what phase `phase` (a phases.Phase) trains, and nothing else."""
    phases_lib.set_trainable(self.model, phase)
    if self.config.train.training_loop == "fit":
      # Keras traces fit's step with the trainable variables of compile time.
      self._compile()
    self._sync_moving_statistics = step_lib.make_sync_moving_statistics(
        self.strategy, self.model, self.ema)

  def make_train_function(self):
    """step.make_train_function of this trainer's model, optimizer, step and settings:
    tf.function(iterator, num_steps) -> the steps' sums; see there."""
    normalization = self.config.data.normalization if self.normalizes_on_device else None
    return step_lib.make_train_function(
        self.config, self.strategy, self.model, self.optimizer, self.step, ema=self.ema,
        normalization=normalization, mixing_settings=self.mix_settings, mix_seed=self._mix_seed)

  def moving_statistics(self):
    """The BatchNorm moving statistics the train step updates (step.moving_statistics)."""
    return step_lib.moving_statistics(self.model)

  def sync_replicas(self):
    """Makes the replicas' moving statistics agree (their mean), before they are saved or used."""
    if self._sync_moving_statistics is not None:
      self._sync_moving_statistics()

  def divergence_error(self, step, learning_rate):
    """The DivergenceError train() raises for global step `step` at `learning_rate`."""
    return faults.divergence_error(self.model_dir, self.optimizer, step, learning_rate)

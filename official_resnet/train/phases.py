"""What a run's training data and recipe make of it: its classes, steps per epoch and phases.

Training runs in phases, each with its own length, learning rate schedule and trainable
part, one after the other on the global step axis. Trainer and Evaluator both plan the
run (an evaluation job needs the run's classes and its final step), neither from the other.
"""
import dataclasses

from absl import logging
import keras

import input_pipeline
from official_resnet import config as config_lib
from official_resnet import models
from official_resnet import schedules


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


@dataclasses.dataclass(frozen=True)
class Plan:
  """The run's class names (the model's outputs, in order), steps per epoch and phases."""
  class_names: tuple[str, ...]
  steps_per_epoch: int
  phases: tuple[Phase, ...]

  @property
  def total_steps(self):
    return self.phases[-1].end_step

  def learning_rate_schedule(self):
    """One schedule over every phase, indexed by the optimizer's iterations (the global step)."""
    if len(self.phases) == 1:
      return self.phases[0].schedule
    return schedules.PhasedSchedule([phase.start_step for phase in self.phases],
                                    [phase.schedule for phase in self.phases])


def plan(experiment, num_replicas):
  """The Plan of `experiment` on `num_replicas` replicas; ValueError naming the setting that
  does not fit the training data."""
  data = experiment.data
  # Checked here, before the model is built, as well as by each input pipeline.
  input_pipeline.per_replica_batch_size(data.batch_size, num_replicas)
  train_info = input_pipeline.dataset_info(data, training=True)
  class_names = tuple(train_info.class_names)
  if len(class_names) != experiment.model.num_classes:
    raise ValueError(
        f"num_classes must equal the {len(class_names)} classes of the training data. "
        f"Received: {experiment.model.num_classes}")
  steps_per_epoch = train_info.num_examples // data.batch_size
  if not steps_per_epoch:
    raise ValueError(
        f"batch_size must be at most the {train_info.num_examples} training examples. "
        f"Received: {data.batch_size}")
  return Plan(class_names, steps_per_epoch,
              resolve_phases(experiment.train, data.batch_size, steps_per_epoch))


def set_trainable(model, phase):
  """Freezes what `phase` does not train and unfreezes the rest."""
  models.unfreeze_all(model)
  if phase.trainable == config_lib.TRAINABLE_HEAD:
    models.freeze_backbone(model)
  elif phase.trainable != config_lib.TRAINABLE_ALL:
    models.freeze_below(model, phase.trainable)
  logging.info("Phase %r: steps %d to %d, trainable %s (%d variables).", phase.name,
               phase.start_step, phase.end_step, phase.trainable, len(model.trainable_variables))


def warn_about_schedules(run_plan, train_config, step):
  """One line per phase not yet done at `step` whose given warm-up or decay epochs fall
  outside it."""
  steps_per_epoch = run_plan.steps_per_epoch
  for phase, config in zip(run_plan.phases, train_config.resolved_phases()):
    if step < phase.end_step:
      length = phase.end_step - phase.start_step
      outside = schedules.outside_the_phase(config.schedule, steps_per_epoch, length)
      if outside:
        logging.warning("Phase %r lasts %.4g epochs (%d steps): %s.", phase.name,
                        length / steps_per_epoch, length, outside)

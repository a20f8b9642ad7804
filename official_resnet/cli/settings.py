"""The ExperimentConfig of a command line: each setting from its flags, what the weights
imply, then the run in --model_dir for every setting no given flag sets."""
import os

from absl import logging
import tensorflow as tf

from input_pipeline.config import DataConfig
from official_resnet import config as config_lib
from official_resnet import distribute
from official_resnet import initial_weights
from official_resnet import official_flags
from official_resnet import run_state
from official_resnet.cli import flag_parsing
from official_resnet.cli import flag_table
from official_resnet.cli import weights_flags
from official_resnet.models import resnet
from official_resnet.models.config import HeadConfig
from official_resnet.models.config import ModelConfig
from official_resnet.train import phases as phases_lib


def _log_inert_flags(f):
  for name in official_flags.INERT:
    if f[name].present:
      logging.info("%s", official_flags.inert_message(name, f[name].value))


def _saved_run(f):
  """The RunConfig of the run in --model_dir that this command acts on; None for a new run."""
  if f.clean or (f.mode == "predict" and f.export_dir):
    return None
  if not tf.io.gfile.exists(run_state.config_path(f.model_dir)):
    return None
  return run_state.read_run_config(f.model_dir)


def _given_fields(f, left_out=()):
  """{"section.field": the first given flag that sets it} for the flags given, but those
  `left_out`."""
  given = {}
  for name, fields in flag_table.FLAG_FIELDS.items():
    if f[name].present and name not in left_out:
      for field in fields:
        given.setdefault(field, name)
  return given


def experiment_from_flags(flag_values):
  """The ExperimentConfig the flags describe; ValueError naming the flag when they do not fit.

  Each setting is, from the highest layer down: the flag given that sets it; the run in
  --model_dir it acts on (run_state.with_saved_run); what the weights it starts from imply
  (initial_weights.follow_weights); the flag's default. A resumed run reads no weights
  file: its checkpoint holds every weight and its config.json what they implied.
  """
  f = flag_values
  _log_inert_flags(f)
  strategy, num_gpus = distribute.resolve_devices(
      f.distribution_strategy, f.num_gpus, len(tf.config.list_physical_devices("GPU")))
  runtime = config_lib.RuntimeConfig(
      distribution_strategy=strategy, num_gpus=num_gpus,
      all_reduce_alg=f.all_reduce_alg, num_packs=f.num_packs,
      worker_hosts=tuple(f.worker_hosts), task_index=f.task_index,
      heartbeat_timeout_s=f.heartbeat_timeout, tpu=f.tpu,
      loss_scale=flag_parsing.loss_scale(f), enable_xla=f.enable_xla, seed=f.seed)
  saved = _saved_run(f)
  latest_checkpoint = tf.train.latest_checkpoint(f.model_dir)
  resumed = weights_flags.resumed_checkpoint(saved, latest_checkpoint)
  architecture, given_variant = flag_parsing.architecture_and_variant(f)
  source, tfds_name = flag_parsing.source_and_tfds_name(f, saved)
  num_classes = flag_parsing.num_classes(f, source, saved)
  if resumed:
    weights, weights_info = weights_flags.resumed_run_weights(f, saved, resumed)
  else:
    weights, weights_info = weights_flags.weights_to_start_from(f, architecture, given_variant,
                                                                num_classes)
  variant = weights_flags.variant(f, architecture, given_variant, weights_info)
  vgg_batch_norm, pooling, hidden_units = weights_flags.vgg_settings(
      f, architecture, None if resumed else weights)
  # An existing run's normalization comes from its config.json, not from weights files;
  # without weights it is --scratch_normalization's.
  normalization = f.normalization or (saved.data.normalization if saved is not None
                                      else f.scratch_normalization)
  normalization_in_model = normalization if f.normalize_in_model else None
  private_threads = f.datasets_num_private_threads
  if f.tf_gpu_thread_mode:
    private_threads = official_flags.datasets_private_threads(
        f.per_gpu_thread_count, num_gpus, private_threads, os.cpu_count() or 1)
  data = DataConfig(
      source=source, data_dir=f.data_dir,
      train_file_pattern=f.train_file_pattern, eval_file_pattern=f.eval_file_pattern,
      tfds_name=tfds_name, train_split=f.train_split, eval_split=f.eval_split,
      image_size=f.image_size, num_classes=num_classes, label_offset=f.label_offset,
      batch_size=f.batch_size, normalization=normalization,
      output_dtype="uint8" if f.normalize_in_model else "float32",
      validation_fraction=f.validation_fraction, shuffle_buffer_size=f.shuffle_buffer_size,
      cache=f.training_dataset_cache, eval_cache=f.eval_dataset_cache,
      experimental_slack=f.tf_data_experimental_slack, private_threads=private_threads,
      synthetic_num_examples=f.synthetic_num_examples, seed=f.seed,
      eval_resize_size=f.eval_resize_size,
      eval_resize_method=f.eval_resize_method or "bilinear",
      **flag_parsing.augmentation_and_resolution(f))
  model = ModelConfig(
      architecture=architecture, variant=variant, num_classes=num_classes,
      image_size=f.image_size, pooling=None if pooling == "none" else pooling,
      head=HeadConfig(hidden_units=hidden_units, dropout=f.head_dropout,
                      activation=f.head_activation),
      base_width=f.base_width, vgg_batch_norm=vgg_batch_norm,
      zero_init_residual=f.zero_init_residual, weight_decay=f.weight_decay,
      dtype_policy=config_lib.DTYPE_POLICIES[f.dtype], input_normalization=normalization_in_model,
      data_format=f.data_format, sync_batch_norm=f.sync_batch_norm,
      conv_padding=f.conv_padding or "same",
      pool_padding=f.pool_padding or resnet.VARIANTS[variant]["pool_padding"],
      any_input_size=flag_parsing.any_input_size(pooling, data))
  schedule = config_lib.ScheduleConfig(
      name=f.lr_schedule, base_learning_rate=f.base_learning_rate,
      base_batch_size=f.lr_base_batch_size or None, warmup_epochs=f.warmup_epochs,
      decay_epochs=flag_parsing.float_list("lr_decay_epochs", f.lr_decay_epochs) or None,
      decay_factor=f.lr_decay_factor, cosine_alpha=f.cosine_alpha,
      decay_every_epochs=f.lr_decay_every_epochs, polynomial_power=f.polynomial_power,
      polynomial_end_fraction=f.polynomial_end_fraction)
  optimizer = config_lib.OptimizerConfig(
      name=f.optimizer, momentum=f.momentum, nesterov=f.nesterov, beta_1=f.adam_beta_1,
      beta_2=f.adam_beta_2, epsilon=f.adam_epsilon, weight_decay=f.decoupled_weight_decay,
      rho=f.rmsprop_rho, lars_trust_coefficient=f.lars_trust_coefficient)
  train = config_lib.TrainConfig(
      model_dir=f.model_dir, train_epochs=f.train_epochs, train_steps=f.train_steps,
      epochs_between_evals=f.epochs_between_evals, steps_per_loop=f.steps_per_loop,
      log_steps=f.log_steps, checkpoint_steps=f.checkpoint_steps,
      keep_checkpoints=f.keep_checkpoints, label_smoothing=f.label_smoothing,
      optimizer=optimizer, schedule=schedule, phases=flag_parsing.phases(f, schedule),
      init_checkpoint=weights,
      init_checkpoint_scope=weights_flags.init_checkpoint_scope(f), training_loop=f.training_loop,
      enable_tensorboard=f.enable_tensorboard, nan_policy=f.nan_policy,
      normalize_on_device=f.normalize_on_device,
      profile_steps=official_flags.parse_profile_steps(f.profile_steps) if f.profile_steps else None,
      loss=f.loss, bce_target_threshold=f.bce_target_threshold, mixup_alpha=f.mixup_alpha,
      cutmix_alpha=f.cutmix_alpha, mix_prob=f.mix_prob, mix_switch_prob=f.mix_switch_prob,
      mix_mode=f.mix_mode, gradient_clip_norm=f.gradient_clip_norm, ema_decay=f.ema_decay,
      ema_warmup=f.ema_warmup,
      best_metric=None if f.best_metric == "none" else f.best_metric)
  export_dir = f.export_dir
  if f.enable_checkpoint_and_export and not export_dir:
    export_dir = os.path.join(f.model_dir, "saved_model")
  export_config = config_lib.ExportConfig(
      export_dir=export_dir, formats=tuple(f.export_format), top_k=f.top_k,
      weights=f.export_weights, checkpoint=f.export_checkpoint)
  experiment = config_lib.ExperimentConfig(data=data, model=model, train=train, runtime=runtime,
                                           export=export_config)
  experiment = initial_weights.follow_weights(experiment, weights_info,
                                              keep=weights_flags.chosen_over_weights(f, saved))
  if saved is not None:
    settable = {field for fields in flag_table.FLAG_FIELDS.values() for field in fields}
    # A resumed run keeps what its weights implied, whatever weights flag the command repeats.
    unread = weights_flags.WEIGHTS_FLAGS if resumed else ()
    finished = (run_state.finished_stats(f.model_dir)
                if saved.train is not None and f.mode in TRAIN_MODES else None)
    experiment = run_state.with_saved_run(experiment, saved, f.model_dir, settable,
                                          _given_fields(f, left_out=unread), finished=finished)
    if finished:
      _check_finished_run_length(experiment, saved, finished)
  weights_flags.warn_without_weights(f, weights, experiment.train.resolved_phases(),
                                     latest_checkpoint)
  return experiment


TRAIN_MODES = ("train", "train_and_eval")


def _check_finished_run_length(experiment, saved, finished):
  """Logs the schedule of a finished run made longer, in one line; refuses a shorter one,
  and a run length a run in phases does not take.

  saved: the run's RunConfig; finished: its stats.json, whose steps_per_epoch the new
  length is counted in.
  """
  steps_per_epoch, done = finished["steps_per_epoch"], finished["step"]
  batch_size = experiment.data.batch_size
  phases = phases_lib.resolve_phases(experiment.train, batch_size, steps_per_epoch)
  total = phases[-1].end_step
  if total < done:
    raise ValueError(
        f"model_dir {experiment.train.model_dir} holds a run that has trained all its {done} "
        f"steps ({done / steps_per_epoch:.4g} epochs); a run is made longer, never shorter. "
        "Give a larger --train_epochs (or --train_steps) to extend it, or use a new --model_dir. "
        f"Received: {total} steps ({total / steps_per_epoch:.4g} epochs). Nothing was written.")
  if total == done:
    lengths = [(train.train_epochs, train.train_steps) for train in (experiment.train, saved.train)]
    if experiment.train.phases and lengths[0] != lengths[1]:
      raise ValueError(
          f"model_dir {experiment.train.model_dir} holds a run in phases "
          f"{[phase.name for phase in experiment.train.phases]}, whose lengths --train_epochs "
          "and --train_steps alone do not set. Give its --phases with longer --phase_epochs or "
          "--phase_steps (one phase: its --trainable with the longer --train_epochs) to "
          "extend it. Received: train_epochs="
          f"{lengths[0][0]}, train_steps={lengths[0][1]}. Nothing was written.")
    return
  schedules = "; ".join(
      f"phase {phase.name!r} steps {phase.start_step}-{phase.end_step}: {config.schedule.name}, "
      f"peak learning rate {config.schedule.peak_learning_rate(batch_size):.4g}"
      for phase, config in zip(phases, experiment.train.resolved_phases()))
  going_on = next(phase for phase in phases if phase.start_step <= done < phase.end_step)
  rate = float(going_on.schedule(done - going_on.start_step))
  logging.info("Extending the finished run from step %d (%.4g epochs) to %d (%.4g epochs), the "
               "schedule now spanning the new length (%s): training goes on at step %d with "
               "learning rate %.4g.", done, done / steps_per_epoch, total,
               total / steps_per_epoch, schedules, done, rate)

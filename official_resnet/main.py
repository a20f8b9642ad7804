"""The command: `python -m official_resnet.main --flagfile=configs/smoke.cfg [--flag=value ...]`.

The only module that reads absl FLAGS. It turns them into frozen configs
(input_pipeline.DataConfig, models.ModelConfig, config.TrainConfig,
config.RuntimeConfig) and runs one mode. Flag names follow the official
resnet_ctl_imagenet_main.py where one exists.

A mode is a function (ExperimentConfig, flag values) -> stats dict, listed in MODES; a new
mode is one function and one entry.
"""
import dataclasses
import json
import sys

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from input_pipeline import constants
from input_pipeline.config import DataConfig
from input_pipeline.config import SOURCES
from official_resnet import config as config_lib
from official_resnet import export
from official_resnet import predict
from official_resnet import run_lock
from official_resnet import trainer
from official_resnet.models import builder
from official_resnet.models import resnet
from official_resnet.models import vgg
from official_resnet.models import weights as weights_lib
from official_resnet.models.config import ARCHITECTURES
from official_resnet.models.config import DATA_FORMATS
from official_resnet.models.config import HeadConfig
from official_resnet.models.config import ModelConfig
from official_resnet.models.config import RESNET_VARIANTS

FLAGS = flags.FLAGS


def _export(experiment, flag_values):
  del flag_values  # Everything is in experiment.export.
  if not experiment.export.export_dir:
    raise app.UsageError("--mode=export needs --export_dir, the folder that receives the "
                         "numbered versions. Received: --export_dir=None")
  path = export.export_from_model_dir(
      experiment.train.model_dir, experiment.export.export_dir,
      formats=experiment.export.formats, top_k=experiment.export.top_k,
      weights=experiment.export.weights, checkpoint=experiment.export.checkpoint)
  return {"export_path": path}


def _predict(experiment, flag_values):
  """Prints the top-k table or JSON to stdout (logs go to stderr)."""
  if not flag_values.images:
    raise app.UsageError("--mode=predict needs --images, image files or folders. "
                         "Received: --images=[]")
  source = experiment.export.export_dir or experiment.train.model_dir
  predictions = predict.predict(source, flag_values.images, experiment.export.top_k)
  print(predict.format_predictions(predictions, flag_values.output), flush=True)
  return {"source": source, "images": len(predictions)}


# mode -> function(ExperimentConfig, flag values) -> stats.
MODES = {
    "train_and_eval": lambda experiment, _: trainer.train_and_evaluate(experiment, evaluate=True),
    "train": lambda experiment, _: trainer.train_and_evaluate(experiment, evaluate=False),
    "eval": lambda experiment, _: trainer.evaluate_checkpoint(experiment),
    "export": _export,
    "predict": _predict,
}

_DATA, _MODEL, _TRAIN = DataConfig(), ModelConfig(), config_lib.TrainConfig()
_OPTIMIZER, _SCHEDULE = config_lib.OptimizerConfig(), config_lib.ScheduleConfig()
_RUNTIME = config_lib.RuntimeConfig()

flags.DEFINE_enum("mode", "train_and_eval", list(MODES), "What to run.")

# Official flags.
flags.DEFINE_string("model_dir", _TRAIN.model_dir,
                    "Checkpoints, config.json, stats.json and TensorBoard summaries. Rerunning the "
                    "same command resumes from its latest checkpoint.")
flags.DEFINE_string("data_dir", None, "imagenet: TFRecord folder; folder: image root; tfds: TFDS data_dir.")
flags.DEFINE_integer("batch_size", _DATA.batch_size, "Global batch size over all replicas.", lower_bound=1)
flags.DEFINE_float("train_epochs", _TRAIN.train_epochs, "Epochs to train.")
flags.DEFINE_integer("train_steps", None, "Total steps to train; replaces --train_epochs when set.",
                     lower_bound=1)
flags.DEFINE_float("epochs_between_evals", _TRAIN.epochs_between_evals,
                   "Epochs between evaluations (train_and_eval) and history entries.")
flags.DEFINE_enum("distribution_strategy", _RUNTIME.distribution_strategy, list(config_lib.STRATEGIES),
                  "tf.distribute strategy.")
flags.DEFINE_integer("num_gpus", _RUNTIME.num_gpus,
                     "GPUs per worker; 0 trains on the CPU (mirrored: every logical CPU device).",
                     lower_bound=0)
flags.DEFINE_enum("all_reduce_alg", None,
                  sorted({alg for algs in config_lib.ALL_REDUCE_ALGS.values() for alg in algs}),
                  "mirrored: nccl, hierarchical_copy or reduction_to_one_device; "
                  "multi_worker_mirrored: ring or nccl. Default: TF's choice.")
flags.DEFINE_integer("num_packs", _RUNTIME.num_packs, "mirrored with nccl/hierarchical_copy: gradient packs.",
                     lower_bound=1)
flags.DEFINE_enum("dtype", _RUNTIME.dtype, list(config_lib.DTYPES),
                  "Compute precision; fp16 adds dynamic loss scaling. Variables stay float32.")
flags.DEFINE_string("loss_scale", "dynamic",
                    "fp16: 'dynamic', or a number to start the dynamic loss scale at "
                    "(Keras 3 scales dynamically only).")
flags.DEFINE_boolean("enable_xla", _RUNTIME.enable_xla, "Compile the model's steps with XLA.")
flags.DEFINE_boolean("use_synthetic_data", False, "Same as --source=synthetic.")
flags.DEFINE_integer("log_steps", _TRAIN.log_steps, "Steps between log lines and TensorBoard scalars.",
                     lower_bound=1)
flags.DEFINE_integer("steps_per_loop", None,
                     "Steps per call of the compiled train function (custom loop); default one epoch.",
                     lower_bound=1)
flags.DEFINE_boolean("enable_tensorboard", _TRAIN.enable_tensorboard,
                     "Write TensorBoard scalars to model_dir/train and model_dir/eval.")
flags.DEFINE_integer("datasets_num_private_threads", None,
                     "Private tf.data thread pool size; default: the shared pool.", lower_bound=1)
flags.DEFINE_boolean("training_dataset_cache", _DATA.cache, "Cache the decoded training records in memory.")
flags.DEFINE_string("tpu", _RUNTIME.tpu, "TPU name or grpc:// address ('' or 'local': attached TPU).")
flags.DEFINE_list("worker_hosts", [],
                  "multi_worker_mirrored without TF_CONFIG/Slurm: comma-separated host:port of every worker.")
flags.DEFINE_integer("task_index", _RUNTIME.task_index, "This worker's index in --worker_hosts.")
flags.DEFINE_enum("data_format", None, [f for f in DATA_FORMATS if f],
                  "Layout inside the model; default Keras' image_data_format (channels_last).")

# Export and prediction.
_EXPORT = config_lib.ExportConfig()
flags.DEFINE_string("export_dir", _EXPORT.export_dir,
                    "export: writes <export_dir>/<N>/, N the next free version; train modes: export "
                    "there at the end; predict: the export (or one version) to predict with.")
flags.DEFINE_list("export_format", list(_EXPORT.formats),
                  f"What to export, from {list(config_lib.EXPORT_FORMATS)}; the SavedModel is always "
                  "written. tflite: float and dynamic-range quantized files.")
flags.DEFINE_list("images", [], "predict: image files or folders (searched recursively).")
flags.DEFINE_integer("top_k", _EXPORT.top_k, "export/predict: classes reported per image.",
                     lower_bound=1)
flags.DEFINE_enum("output", "table", list(predict.OUTPUT_FORMATS), "predict: output format.")

# Model.
flags.DEFINE_enum("architecture", _MODEL.architecture, list(ARCHITECTURES), "Model architecture.")
flags.DEFINE_enum("variant", _MODEL.variant, list(RESNET_VARIANTS),
                  "ResNet variant: v1.5 (official, stride in the 3x3) or v1 (keras.applications).")
flags.DEFINE_integer("num_classes", _MODEL.num_classes, "Classes of the data and the logits.", lower_bound=1)
flags.DEFINE_integer("image_size", _MODEL.image_size, "Square input size in pixels.",
                     lower_bound=constants.MIN_IMAGE_SIZE)
flags.DEFINE_integer("base_width", _MODEL.base_width, "Channels of the first stage (64 published).",
                     lower_bound=1)
flags.DEFINE_enum("pooling", _MODEL.pooling, ["avg", "max", "none"],
                  "Pooling before the head; 'none' flattens.")
flags.DEFINE_list("head_hidden_units", [], "Hidden Dense widths of the head, e.g. 4096,4096.")
flags.DEFINE_float("head_dropout", _MODEL.head.dropout, "Dropout before the logits (and after hidden layers).")
flags.DEFINE_string("head_activation", _MODEL.head.activation, "Activation of the hidden head layers.")
flags.DEFINE_boolean("vgg_batch_norm", _MODEL.vgg_batch_norm, "VGG with BatchNorm after each conv.")
flags.DEFINE_boolean("zero_init_residual", _MODEL.zero_init_residual,
                     "Zero-initialise the last BN gamma of each residual block.")
flags.DEFINE_float("weight_decay", _MODEL.weight_decay, "L2 factor on conv/dense kernels (the official 1e-4).")
flags.DEFINE_boolean("normalize_in_model", False,
                     "The pipeline outputs raw uint8 pixels and the model normalizes them.")

# Data.
flags.DEFINE_enum("source", _DATA.source, list(SOURCES), "Where the images come from.")
flags.DEFINE_string("tfds_name", None, "source=tfds: the TFDS data set, e.g. cats_vs_dogs.")
flags.DEFINE_string("train_split", _DATA.train_split, "Training split (tfds; folder subfolder).")
flags.DEFINE_string("eval_split", _DATA.eval_split, "Evaluation split (tfds; folder subfolder).")
flags.DEFINE_string("train_file_pattern", _DATA.train_file_pattern, "imagenet: training shard glob.")
flags.DEFINE_string("eval_file_pattern", _DATA.eval_file_pattern, "imagenet: validation shard glob.")
flags.DEFINE_integer("label_offset", _DATA.label_offset,
                     "imagenet: subtracted from the record labels (1: labels 1..1000 -> 0..999).")
flags.DEFINE_enum("normalization", None, list(constants.NORMALIZATION_MODES),
                  "Pixel normalization. Default: what the weights were trained with (a .h5 file: "
                  "caffe; our checkpoint: its run's config.json), else --scratch_normalization.")
flags.DEFINE_float("validation_fraction", _DATA.validation_fraction,
                   "folder without a validation subfolder: fraction held out.")
flags.DEFINE_integer("shuffle_buffer_size", _DATA.shuffle_buffer_size, "Examples in the shuffle buffer.",
                     lower_bound=1)
flags.DEFINE_integer("synthetic_num_examples", _DATA.synthetic_num_examples,
                     "source=synthetic: examples per split.", lower_bound=1)
flags.DEFINE_integer("seed", None,
                     "Seeds weights, data order and augmentation; with it a resumed run equals an "
                     "uninterrupted one.")

# Optimizer and schedule.
flags.DEFINE_enum("optimizer", _OPTIMIZER.name, list(config_lib.OPTIMIZERS), "Optimizer.")
flags.DEFINE_float("momentum", _OPTIMIZER.momentum, "sgd, rmsprop, lars: momentum.")
flags.DEFINE_boolean("nesterov", _OPTIMIZER.nesterov, "sgd, lars: Nesterov momentum.")
flags.DEFINE_float("adam_beta_1", _OPTIMIZER.beta_1, "adam/adamw/lamb: beta_1.")
flags.DEFINE_float("adam_beta_2", _OPTIMIZER.beta_2, "adam/adamw/lamb: beta_2.")
flags.DEFINE_float("adam_epsilon", _OPTIMIZER.epsilon, "adam/adamw/lamb/rmsprop: epsilon.")
flags.DEFINE_enum("lr_schedule", _SCHEDULE.name, list(config_lib.SCHEDULES),
                  "piecewise: official warm-up then x decay_factor at lr_decay_epochs; "
                  "cosine: warm-up then cosine decay; constant; step, exponential, polynomial: "
                  "warm-up then Keras' decay (see the training recipe flags).")
flags.DEFINE_float("base_learning_rate", _SCHEDULE.base_learning_rate,
                   "Peak learning rate per lr_base_batch_size examples.")
flags.DEFINE_integer("lr_base_batch_size", _SCHEDULE.base_batch_size,
                     "Peak rate = base_learning_rate * batch_size / this; 0: base_learning_rate as is.",
                     lower_bound=0)
flags.DEFINE_float("warmup_epochs", _SCHEDULE.warmup_epochs, "Linear warm-up epochs (piecewise, cosine).")
flags.DEFINE_list("lr_decay_epochs", [str(e) for e in _SCHEDULE.decay_epochs],
                  "piecewise: epochs where the rate is multiplied by lr_decay_factor.")
flags.DEFINE_float("lr_decay_factor", _SCHEDULE.decay_factor, "piecewise: multiplier at each decay epoch.")
flags.DEFINE_float("cosine_alpha", _SCHEDULE.cosine_alpha, "cosine: final rate as a fraction of the peak.")

# Training.
flags.DEFINE_enum("training_loop", _TRAIN.training_loop, list(config_lib.TRAINING_LOOPS),
                  "custom: our loop, every strategy; fit: Keras Model.fit (off/one_device/mirrored).")
flags.DEFINE_float("label_smoothing", _TRAIN.label_smoothing, "Label smoothing of the training loss.")
flags.DEFINE_integer("checkpoint_steps", None, "Steps between checkpoints; default one epoch.",
                     lower_bound=1)
flags.DEFINE_integer("keep_checkpoints", _TRAIN.keep_checkpoints, "Checkpoints kept in model_dir.",
                     lower_bound=1)
flags.DEFINE_string("init_checkpoint", None,
                    "Start a new run from these weights: keras.applications .h5/.weights.h5, a "
                    "checkpoint prefix or a model_dir.")
flags.DEFINE_enum("init_checkpoint_scope", _TRAIN.init_checkpoint_scope,
                  list(config_lib.INIT_CHECKPOINT_SCOPES),
                  "backbone: the head keeps its fresh initialization; all: the head too.")
flags.DEFINE_enum("nan_policy", _TRAIN.nan_policy, list(config_lib.NAN_POLICIES),
                  "A step whose loss (fp32/bf16: or gradients) is NaN or Inf: stop the run, keeping "
                  "the last good checkpoint, or skip that step's update (custom loop). fp16 loss "
                  "scaling skips overflowing gradients either way.")
flags.DEFINE_boolean("normalize_on_device", _TRAIN.normalize_on_device,
                     "Custom loop: training batches leave the pipeline as uint8 pixels and the "
                     "train step normalizes them on its device (less input CPU, a quarter of the "
                     "bytes to copy); --nonormalize_on_device normalizes them in the pipeline.")

# Transfer learning.
flags.DEFINE_string("pretrained", None,
                    "keras.applications weights (.h5 or .weights.h5; ResNet needs --variant=v1) to "
                    "start a new run from; our own checkpoints go to --init_checkpoint.")
flags.DEFINE_boolean("expect_weights", False,
                     "The recipe starts from weights: warn when neither --pretrained nor "
                     "--init_checkpoint is given (it then trains from scratch).")
flags.DEFINE_enum("scratch_normalization", _DATA.normalization, list(constants.NORMALIZATION_MODES),
                  "Pixel normalization without weights and without --normalization.")
flags.DEFINE_string("trainable", config_lib.TRAINABLE_ALL,
                    "One phase: what trains. all; head (backbone frozen, its BatchNorm in inference "
                    "mode); or a stage (resnet conv1..conv5, vgg block1..block5) and all after it.")
flags.DEFINE_list("phases", [],
                  "Phases trained one after the other, each named by what it trains (as "
                  "--trainable), e.g. head,conv4; lengths from --phase_epochs or --phase_steps. "
                  "Rerunning resumes inside any phase.")
flags.DEFINE_list("phase_epochs", [], "--phases: epochs of each phase, e.g. 3,5.")
flags.DEFINE_list("phase_steps", [], "--phases: steps of each phase; replaces --phase_epochs when set.")
flags.DEFINE_list("phase_learning_rates", [],
                  "--phases: --base_learning_rate of each phase, e.g. 0.01,0.001; default "
                  "--base_learning_rate for all. The other schedule flags apply to each phase.")

# Training recipe beyond the official one: loss, MixUp/CutMix, gradient clipping, the
# weight average, the best checkpoint, more optimizers and schedules, what an export holds.
_EXPORT_SETTINGS = config_lib.ExportConfig()
flags.DEFINE_enum("loss", _TRAIN.loss, list(config_lib.LOSSES),
                  "softmax: cross-entropy; bce: binary cross-entropy per class on the (smoothed, "
                  "mixed) one-hot targets, averaged over classes, as timm's.")
flags.DEFINE_float("bce_target_threshold", _TRAIN.bce_target_threshold,
                   "loss=bce: targets above it become 1, the rest 0. Default: None, soft targets.")
flags.DEFINE_float("mixup_alpha", _TRAIN.mixup_alpha,
                   "MixUp's Beta(alpha, alpha) weight, on the device in the train step; 0: off.",
                   lower_bound=0)
flags.DEFINE_float("cutmix_alpha", _TRAIN.cutmix_alpha,
                   "CutMix's Beta(alpha, alpha) weight; 0: off.", lower_bound=0)
flags.DEFINE_float("mix_prob", _TRAIN.mix_prob, "Probability of mixing a batch (or example) at all.")
flags.DEFINE_float("mix_switch_prob", _TRAIN.mix_switch_prob,
                   "With both alphas: probability of CutMix rather than MixUp.")
flags.DEFINE_enum("mix_mode", _TRAIN.mix_mode, list(config_lib.MIX_MODES),
                  "batch: one mixing per batch (per replica); elem: one per example.")
flags.DEFINE_float("gradient_clip_norm", _TRAIN.gradient_clip_norm,
                   "Clip the gradient, summed over replicas, to this global norm. Default: None, "
                   "no clipping.")
flags.DEFINE_float("ema_decay", _TRAIN.ema_decay,
                   "Keep an exponential moving average of the weights (BatchNorm statistics "
                   "included) with this decay, e.g. 0.9999; evaluation, the best checkpoint and "
                   "exports use it. Default: None, no average.")
flags.DEFINE_boolean("ema_warmup", _TRAIN.ema_warmup,
                     "Decay min(ema_decay, (1 + n) / (10 + n)) after n updates.")
flags.DEFINE_enum("best_metric", _TRAIN.best_metric, list(config_lib.BEST_METRICS),
                  "Keep the checkpoint with the best value of this eval metric in model_dir/best "
                  "(best.json beside it). Default: None, not kept.")
flags.DEFINE_float("decoupled_weight_decay", _OPTIMIZER.weight_decay,
                   "Decoupled weight decay (variable -= lr * decay * variable) for every optimizer; "
                   "lars decays inside its trust ratio. BatchNorm and biases are exempt. Consider "
                   "--weight_decay=0 (the model's L2) with it.")
flags.DEFINE_alias("adamw_weight_decay", "decoupled_weight_decay")
flags.DEFINE_float("rmsprop_rho", _OPTIMIZER.rho, "rmsprop: decay of the squared-gradient average.")
flags.DEFINE_float("lars_trust_coefficient", _OPTIMIZER.lars_trust_coefficient,
                   "lars: trust coefficient (eta) of the layer-wise rate.")
flags.DEFINE_float("lr_decay_every_epochs", _SCHEDULE.decay_every_epochs,
                   "step: multiply the rate by lr_decay_factor every this many epochs; "
                   "exponential: the same decay, continuously.")
flags.DEFINE_float("polynomial_power", _SCHEDULE.polynomial_power,
                   "polynomial: power of the decay from the peak to its end after warm-up.")
flags.DEFINE_float("polynomial_end_fraction", _SCHEDULE.polynomial_end_fraction,
                   "polynomial: final rate as a fraction of the peak.")
flags.DEFINE_enum("export_weights", _EXPORT_SETTINGS.weights, list(config_lib.EXPORT_WEIGHTS),
                  "Which weights an export holds: auto: the average when the run keeps one (what "
                  "it evaluated), else the trained weights; ema: the average; raw: the trained "
                  "weights.")
flags.DEFINE_enum("export_checkpoint", _EXPORT_SETTINGS.checkpoint,
                  list(config_lib.EXPORT_CHECKPOINTS),
                  "Which checkpoint an export reads: latest, or best (model_dir/best, "
                  "--best_metric).")


def _float_list(name, values):
  try:
    return tuple(float(value) for value in values)
  except ValueError as error:
    raise ValueError(f"--{name} must be comma-separated numbers. Received: {values}") from error


def _int_list(name, values):
  try:
    return tuple(int(value) for value in values)
  except ValueError as error:
    raise ValueError(f"--{name} must be comma-separated integers. Received: {values}") from error


def _loss_scale(value):
  if value == "dynamic":
    return _RUNTIME.loss_scale
  try:
    scale = float(value)
  except ValueError:
    scale = 0.0
  if scale <= 0:
    raise ValueError(f"--loss_scale must be 'dynamic' or a positive number. Received: {value!r}")
  return scale


def _trainable_values(architecture):
  stages = resnet.STAGES if architecture.startswith("resnet") else vgg.STAGES
  return (config_lib.TRAINABLE_ALL, config_lib.TRAINABLE_HEAD, *stages)


def _check_trainable(flag, value, architecture):
  allowed = _trainable_values(architecture)
  if value not in allowed:
    raise ValueError(f"--{flag} must be one of {allowed} for --architecture={architecture}. "
                     f"Received: {value!r}")


def _phases(f, schedule):
  """TrainConfig.phases from --phases/--phase_* or --trainable; () is one phase, all trainable."""
  if not f.phases:
    extra = [name for name in ("phase_epochs", "phase_steps", "phase_learning_rates") if f[name].value]
    if extra:
      raise ValueError(f"--{extra[0]} applies with --phases. Received: "
                       f"--{extra[0]}={','.join(f[extra[0]].value)} without --phases")
    _check_trainable("trainable", f.trainable, f.architecture)
    if f.trainable == config_lib.TRAINABLE_ALL:
      return ()
    length = {"steps": f.train_steps} if f.train_steps else {"epochs": f.train_epochs}
    return (config_lib.PhaseConfig(f.trainable, schedule=schedule, trainable=f.trainable, **length),)
  given = ",".join(f.phases)
  for name in ("trainable", "train_epochs", "train_steps"):
    if f[name].present:
      raise ValueError(f"--phases sets what each phase trains and how long (--phase_epochs or "
                       f"--phase_steps); drop --{name}. Received: --{name}={f[name].value} with "
                       f"--phases={given}")
  for trainable in f.phases:
    _check_trainable("phases items", trainable, f.architecture)
  if len(set(f.phases)) != len(f.phases):
    raise ValueError(f"--phases must not repeat an item. Received: --phases={given}")
  if f.phase_steps:
    key, lengths = "steps", _int_list("phase_steps", f.phase_steps)
  elif f.phase_epochs:
    key, lengths = "epochs", _float_list("phase_epochs", f.phase_epochs)
  else:
    raise ValueError(f"--phases needs --phase_epochs or --phase_steps, one per phase. "
                     f"Received: --phases={given} without either")
  rates = (_float_list("phase_learning_rates", f.phase_learning_rates)
           or (schedule.base_learning_rate,) * len(f.phases))
  for name, values in ((f"phase_{key}", lengths), ("phase_learning_rates", rates)):
    if len(values) != len(f.phases) or min(values) <= 0:
      raise ValueError(f"--{name} must hold one positive number per phase ({len(f.phases)}: "
                       f"{given}). Received: --{name}={','.join(map(str, values))}")
  return tuple(
      config_lib.PhaseConfig(trainable, trainable=trainable, **{key: length},
                             schedule=dataclasses.replace(schedule, base_learning_rate=rate))
      for trainable, length, rate in zip(f.phases, lengths, rates))


def _initial_weights(f):
  """--pretrained or --init_checkpoint, whichever is given (not both)."""
  if f.pretrained and f.init_checkpoint:
    raise ValueError("Give the weights to start from once: --pretrained (keras.applications .h5) or "
                     f"--init_checkpoint (ours). Received: --pretrained={f.pretrained} and "
                     f"--init_checkpoint={f.init_checkpoint}")
  if f.pretrained and not f.pretrained.endswith(".h5"):
    raise ValueError("--pretrained must be a keras.applications .h5 or .weights.h5 file; our "
                     f"checkpoints go to --init_checkpoint. Received: --pretrained={f.pretrained}")
  return f.pretrained or f.init_checkpoint


def _normalization(f, weights):
  """--normalization if given, else the weights', else --scratch_normalization."""
  if f.normalization:
    return f.normalization
  if weights:
    flag = "pretrained" if f.pretrained else "init_checkpoint"
    try:
      normalization = weights_lib.weights_normalization(weights)
    except ValueError as error:
      raise ValueError(f"--{flag}: {error}") from error
    if normalization:
      logging.info("Normalization %s, what --%s=%s was trained with.", normalization, flag, weights)
      return normalization
    logging.warning("--%s=%s has no config.json beside it to say its normalization: using "
                    "--scratch_normalization=%s; set --normalization to match the weights.",
                    flag, weights, f.scratch_normalization)
  return f.scratch_normalization


def _warn_without_weights(f, weights, phases):
  if weights or f.mode not in ("train", "train_and_eval") or tf.train.latest_checkpoint(f.model_dir):
    return
  frozen = any(phase.trainable != config_lib.TRAINABLE_ALL for phase in phases)
  if f.expect_weights or frozen:
    logging.warning(
        "No weights to start from (--pretrained=<keras.applications .h5> or "
        "--init_checkpoint=<our checkpoint or model_dir>): training from scratch%s.",
        ", and frozen layers keep their random initialization" if frozen else "")


def experiment_from_flags(flag_values=FLAGS):
  """The ExperimentConfig the flags describe; ValueError naming the flag when they do not fit."""
  f = flag_values
  runtime = config_lib.RuntimeConfig(
      distribution_strategy=f.distribution_strategy, num_gpus=f.num_gpus,
      all_reduce_alg=f.all_reduce_alg, num_packs=f.num_packs,
      worker_hosts=tuple(f.worker_hosts), task_index=f.task_index, tpu=f.tpu, dtype=f.dtype,
      loss_scale=_loss_scale(f.loss_scale), enable_xla=f.enable_xla, seed=f.seed)
  weights = _initial_weights(f)
  normalization = _normalization(f, weights)
  normalization_in_model = normalization if f.normalize_in_model else None
  data = DataConfig(
      source="synthetic" if f.use_synthetic_data else f.source, data_dir=f.data_dir,
      train_file_pattern=f.train_file_pattern, eval_file_pattern=f.eval_file_pattern,
      tfds_name=f.tfds_name, train_split=f.train_split, eval_split=f.eval_split,
      image_size=f.image_size, num_classes=f.num_classes, label_offset=f.label_offset,
      batch_size=f.batch_size, normalization=normalization,
      output_dtype="uint8" if f.normalize_in_model else "float32",
      validation_fraction=f.validation_fraction, shuffle_buffer_size=f.shuffle_buffer_size,
      cache=f.training_dataset_cache, private_threads=f.datasets_num_private_threads,
      synthetic_num_examples=f.synthetic_num_examples, seed=f.seed)
  model = ModelConfig(
      architecture=f.architecture, variant=f.variant, num_classes=f.num_classes,
      image_size=f.image_size, pooling=None if f.pooling == "none" else f.pooling,
      head=HeadConfig(hidden_units=_int_list("head_hidden_units", f.head_hidden_units),
                      dropout=f.head_dropout, activation=f.head_activation),
      base_width=f.base_width, vgg_batch_norm=f.vgg_batch_norm,
      zero_init_residual=f.zero_init_residual, weight_decay=f.weight_decay,
      dtype_policy=runtime.dtype_policy, input_normalization=normalization_in_model,
      data_format=f.data_format)
  schedule = config_lib.ScheduleConfig(
      name=f.lr_schedule, base_learning_rate=f.base_learning_rate,
      base_batch_size=f.lr_base_batch_size or None, warmup_epochs=f.warmup_epochs,
      decay_epochs=_float_list("lr_decay_epochs", f.lr_decay_epochs),
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
      optimizer=optimizer, schedule=schedule, phases=_phases(f, schedule), init_checkpoint=weights,
      init_checkpoint_scope=f.init_checkpoint_scope, training_loop=f.training_loop,
      enable_tensorboard=f.enable_tensorboard, nan_policy=f.nan_policy,
      normalize_on_device=f.normalize_on_device, loss=f.loss,
      bce_target_threshold=f.bce_target_threshold, mixup_alpha=f.mixup_alpha,
      cutmix_alpha=f.cutmix_alpha, mix_prob=f.mix_prob, mix_switch_prob=f.mix_switch_prob,
      mix_mode=f.mix_mode, gradient_clip_norm=f.gradient_clip_norm, ema_decay=f.ema_decay,
      ema_warmup=f.ema_warmup, best_metric=f.best_metric)
  export_config = config_lib.ExportConfig(
      export_dir=f.export_dir, formats=tuple(f.export_format), top_k=f.top_k,
      weights=f.export_weights, checkpoint=f.export_checkpoint)
  builder.validate(model)
  _warn_without_weights(f, weights, train.resolved_phases())
  return config_lib.ExperimentConfig(data=data, model=model, train=train, runtime=runtime,
                                     export=export_config)


def run(flag_values=FLAGS):
  """Runs --mode with the parsed flags and returns its stats."""
  try:
    experiment = experiment_from_flags(flag_values)
  except ValueError as error:
    raise app.UsageError(str(error)) from error
  stats = MODES[flag_values.mode](experiment, flag_values)
  logging.info("Run stats: %s", json.dumps({k: v for k, v in stats.items() if k != "history"}))
  return stats


# Mistakes the user can fix: one log line naming the problem and the fix; --verbosity=1 or
# higher adds the traceback.
USER_ERRORS = (ValueError, FileNotFoundError, app.UsageError, run_lock.RunLockedError)


def main(argv):
  try:
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments (flags need --name=value). Received: {argv[1:]}")
    run()
  except trainer.Preempted as stop:
    logging.warning("%s", stop)
    sys.exit(trainer.EXIT_PREEMPTED)
  except USER_ERRORS as error:
    message = " ".join(str(error).split())
    if isinstance(error, app.UsageError):
      message += " (--helpshort lists the flags.)"
    if FLAGS.verbosity >= 1:
      logging.exception("%s", message)
    else:
      logging.error("%s", message)
    sys.exit(1)


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  app.run(main)

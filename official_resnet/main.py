"""The command: `python -m official_resnet.main --flagfile=configs/smoke.cfg [--flag=value ...]`.

The only module that reads absl FLAGS. It turns them into frozen configs
(input_pipeline.DataConfig, models.ModelConfig, config.TrainConfig,
config.RuntimeConfig) and runs one mode. Flag names follow the official
resnet_ctl_imagenet_main.py where one exists.

A mode is a function (ExperimentConfig, flag values) -> stats dict, listed in MODES; a new
mode is one function and one entry.

Modes that act on an existing run (eval, export, predict, and training in a
model_dir that holds one) take every setting not given as a flag from the run's
config.json (FLAG_FIELDS says which flags set which settings). The official
tensorflow/models flags without a name of ours are defined here and described
in official_flags.py.
"""
import dataclasses
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from input_pipeline import augment
from input_pipeline import constants
from input_pipeline import folder
from input_pipeline import sources
from input_pipeline.config import DataConfig
from input_pipeline.config import SOURCES
from official_resnet import config as config_lib
from official_resnet import continuous_eval
from official_resnet import distribute
from official_resnet import initial_weights
from official_resnet import memory
from official_resnet import official_flags
from official_resnet import predict
from official_resnet import progress
from official_resnet import run as run_lib
from official_resnet import run_lock
from official_resnet import run_state
from official_resnet import trainer
from official_resnet.models import resnet
from official_resnet.models import vgg
from official_resnet.models import weight_sources
from official_resnet.models.config import ARCHITECTURES
from official_resnet.models.config import CONV_PADDINGS
from official_resnet.models.config import DATA_FORMATS
from official_resnet.models.config import HeadConfig
from official_resnet.models.config import ModelConfig
from official_resnet.models.config import POOL_PADDINGS
from official_resnet.models.config import RESNET_VARIANTS
from official_resnet.train import phases as phases_lib

FLAGS = flags.FLAGS


def _export(experiment, flag_values):
  """Exports model_dir's run; without a checkpoint there, the weights given (--pretrained,
  --init_checkpoint) as they are."""
  if not experiment.export.export_dir:
    raise app.UsageError("--mode=export needs --export_dir, the folder that receives the "
                         "numbered versions. Received: --export_dir=None")
  model_dir = experiment.train.model_dir
  if tf.train.latest_checkpoint(model_dir):
    return {"export_path": run_lib.export_model_dir(experiment)}
  if not experiment.train.init_checkpoint:
    raise app.UsageError(
        "--mode=export needs a checkpoint in --model_dir, or weights to export as they are "
        f"(--pretrained, --init_checkpoint). Received: --model_dir={model_dir} without "
        f"checkpoints, {' and '.join(_given_weights_flags(flag_values)) or 'no weights flag'}")
  return {"export_path": run_lib.export_weights(experiment)}


def _predict(experiment, flag_values):
  """Prints the top-k table or JSON to stdout (logs go to stderr)."""
  if not flag_values.images:
    raise app.UsageError("--mode=predict needs --images, image files or folders. "
                         "Received: --images=[]")
  source = experiment.export.export_dir or experiment.train.model_dir
  predictions = predict.predict(source, flag_values.images, experiment.export.top_k)
  print(predict.format_predictions(predictions, flag_values.output), flush=True)
  failed = [prediction.image for prediction in predictions if prediction.error]
  if failed:
    logging.error("%d of %d files could not be classified: %s", len(failed), len(predictions),
                  ", ".join(failed))
  return {"source": source, "images": len(predictions), "failed": len(failed)}


def _train(experiment, flag_values, evaluate):
  """Trains after the last checks: the step's memory (--check_memory), then --clean."""
  strategy = distribute.build_strategy(experiment.runtime)
  if flag_values.check_memory:
    # Before the model and model_dir: a run that cannot fit costs seconds and writes nothing.
    memory.check_train_step(experiment, strategy)
  if flag_values.clean:
    # After every check: a mistake deletes nothing.
    run_state.clean(experiment.train.model_dir)
  return run_lib.train_and_evaluate(experiment, evaluate=evaluate, strategy=strategy)


# mode -> function(ExperimentConfig, flag values) -> stats.
MODES = {
    "train_and_eval": lambda experiment, flag_values: _train(experiment, flag_values, True),
    "train": lambda experiment, flag_values: _train(experiment, flag_values, False),
    "eval": lambda experiment, _: run_lib.evaluate_checkpoint(experiment),
    "continuous_eval": lambda experiment, flag_values: continuous_eval.continuous_evaluate(
        experiment, timeout_s=flag_values.continuous_eval_timeout),
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
flags.DEFINE_enum("distribution_strategy", None, list(config_lib.STRATEGIES),
                  "tf.distribute strategy, any case. Default: mirrored over every visible GPU, "
                  "or off (the CPU) when there is none.", case_sensitive=False)
flags.DEFINE_integer("num_gpus", None,
                     "GPUs per worker; -1 or default: every visible GPU (one for off/one_device); "
                     "0 trains on the CPU (mirrored: every logical CPU device).",
                     lower_bound=distribute.ALL_GPUS)
flags.DEFINE_enum("all_reduce_alg", None,
                  sorted({alg for algs in config_lib.ALL_REDUCE_ALGS.values() for alg in algs}),
                  "mirrored: nccl, hierarchical_copy or reduction_to_one_device; "
                  "multi_worker_mirrored: ring or nccl. Default: TF's choice.")
flags.DEFINE_integer("num_packs", _RUNTIME.num_packs, "mirrored with nccl/hierarchical_copy: gradient packs.",
                     lower_bound=1)
flags.DEFINE_enum("dtype", next(name for name, policy in config_lib.DTYPE_POLICIES.items()
                                if policy == _MODEL.dtype_policy), list(config_lib.DTYPES),
                  "Compute precision; fp16 adds dynamic loss scaling. Variables stay float32.")
flags.DEFINE_string("loss_scale", None,
                    "fp16: 'dynamic' (default; Keras' LossScaleOptimizer), or a number: a fixed "
                    "loss scale, as the official flag. Ignored (logged) without --dtype=fp16.")
flags.DEFINE_boolean("enable_xla", _RUNTIME.enable_xla, "Compile the model's steps with XLA.")
flags.DEFINE_boolean("use_synthetic_data", False, "Same as --source=synthetic.")
flags.DEFINE_boolean("check_memory", True,
                     "Before training, estimate the train step's memory and refuse a run that "
                     "cannot fit the machine (or each GPU), naming a batch size that fits.")
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
flags.DEFINE_float("heartbeat_timeout", _RUNTIME.heartbeat_timeout_s,
                   "multi_worker_mirrored: seconds without a heartbeat before a worker counts as "
                   "dead and all workers stop.")
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
                  "ResNet variant: v1.5 (official, stride in the 3x3) or v1 (keras.applications). "
                  "Default: the weights' (--pretrained, --init_checkpoint), else v1.5.")
flags.DEFINE_integer("num_classes", _MODEL.num_classes,
                     "Classes of the data and the logits. Default: the run's in --model_dir, else "
                     "an image folder's class count, else 1000 (ImageNet).", lower_bound=1)
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
flags.DEFINE_boolean("sync_batch_norm", _MODEL.sync_batch_norm,
                     "BatchNorm moments over the global batch (all replicas and workers), as one "
                     "replica would compute them; default: each replica's own part.")
flags.DEFINE_boolean("zero_init_residual", _MODEL.zero_init_residual,
                     "Zero-initialise the last BN gamma of each residual block.")
flags.DEFINE_float("weight_decay", _MODEL.weight_decay, "L2 factor on conv/dense kernels (the official 1e-4).")
flags.DEFINE_boolean("normalize_in_model", False,
                     "The pipeline outputs raw uint8 pixels and the model normalizes them.")

# Data.
flags.DEFINE_enum("source", None, list(SOURCES),
                  "Where the images come from. Default: the run's in --model_dir, else what "
                  "--data_dir holds (class folders or <class>.<id>.jpg images: folder; TFRecord "
                  "shards: imagenet; a prepared TFDS data set: tfds); synthetic without --data_dir.")
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

# Augmentation and resolution: per-image augmentation of the training crops (in this
# order: colour jitter, AutoAugment or RandAugment, random erasing) and the train/test
# sizes and crops. Names follow timm and the Model Garden.
flags.DEFINE_integer("eval_image_size", None,
                     "Evaluation and export image size; default --image_size. Train smaller than "
                     "you test (FixRes: --image_size=160 --eval_image_size=224); needs global "
                     "pooling, not --pooling=none.", lower_bound=constants.MIN_IMAGE_SIZE)
flags.DEFINE_list("train_crop_area_range", [str(v) for v in _DATA.train_crop_area_range],
                  "low,high: the random train crop's fraction of the image (timm: 0.08,1).")
flags.DEFINE_list("train_crop_aspect_range", [str(v) for v in _DATA.train_crop_aspect_range],
                  "low,high: the random train crop's width / height (timm: 0.75,1.3333).")
flags.DEFINE_float("eval_crop_fraction", _DATA.eval_crop_fraction,
                   "Evaluation and export: the shorter side is resized to the eval size / this, "
                   "then the centre is cropped (timm's crop_pct; 1: no margin).")
flags.DEFINE_boolean("random_flip", _DATA.random_flip,
                     "The random horizontal flip of each training crop (the official recipe's; "
                     "timm: --hflip 0.5). --norandom_flip for digits, text and other images "
                     "whose mirror image is not the same class.")
flags.DEFINE_float("color_jitter", _DATA.color_jitter,
                   "Brightness, contrast and saturation each scaled by a factor in [1-x, 1+x] "
                   "(timm: 0.4); 0: off.")
flags.DEFINE_enum("autoaugment", _DATA.autoaugment, list(augment.AUTOAUGMENT_POLICIES),
                  "AutoAugment policy (v0: the ImageNet policy of the Model Garden and timm); "
                  "default off.")
flags.DEFINE_integer("randaugment_layers", _DATA.randaugment_layers,
                     "RandAugment: ops applied per image (usually 2); 0: off.", lower_bound=0)
flags.DEFINE_float("randaugment_magnitude", _DATA.randaugment_magnitude,
                   "RandAugment: magnitude of every op, 0-10 (timm's m, e.g. 9; RSB A3: 6).")
flags.DEFINE_float("randaugment_magnitude_std", _DATA.randaugment_magnitude_std,
                   "RandAugment: Gaussian noise on each op's magnitude (timm's mstd, e.g. 0.5).")
flags.DEFINE_enum("randaugment_variant", _DATA.randaugment_variant,
                  list(augment.RANDAUGMENT_VARIANTS),
                  "RandAugment ops and scaling: model_garden (16 ops and a no-op, every drawn op "
                  "applied) or timm (its rand-...-inc1: 15 ops growing with the magnitude, each "
                  "applied with probability 0.5). Ops as PIL's; 9 unlike the Model Garden's: docs/training.md.")
flags.DEFINE_float("random_erasing_probability", _DATA.random_erasing_probability,
                   "Random erasing: probability of one rectangle of per-pixel noise per image "
                   "(timm's reprob, e.g. 0.25); 0: off.")
flags.DEFINE_list("random_erasing_area_range", [str(v) for v in _DATA.random_erasing_area_range],
                  "low,high: the erased rectangle's fraction of the image.")

# Optimizer and schedule.
flags.DEFINE_enum("optimizer", _OPTIMIZER.name, list(config_lib.OPTIMIZERS), "Optimizer.")
flags.DEFINE_float("momentum", _OPTIMIZER.momentum, "sgd, rmsprop, lars: momentum.")
flags.DEFINE_boolean("nesterov", _OPTIMIZER.nesterov, "sgd, lars: Nesterov momentum.")
flags.DEFINE_float("adam_beta_1", _OPTIMIZER.beta_1, "adam/adamw/lamb: beta_1.")
flags.DEFINE_float("adam_beta_2", _OPTIMIZER.beta_2, "adam/adamw/lamb: beta_2.")
flags.DEFINE_float("adam_epsilon", _OPTIMIZER.epsilon, "adam/adamw/lamb/rmsprop: epsilon.")
flags.DEFINE_enum("lr_schedule", _SCHEDULE.name, list(config_lib.SCHEDULES),
                  "piecewise: linear warm-up, then x lr_decay_factor at lr_decay_epochs; "
                  "cosine: warm-up then cosine decay to the phase's end; constant; step, "
                  "exponential, polynomial: warm-up then Keras' decay (see the training recipe "
                  "flags). Without epochs given, piecewise and cosine take the official shape's "
                  "fractions of the phase (warm-up 5/90, decays at 30/90, 60/90, 80/90): the "
                  "official schedule over 90 epochs.")
flags.DEFINE_float("base_learning_rate", _SCHEDULE.base_learning_rate,
                   "Peak learning rate per lr_base_batch_size examples.")
flags.DEFINE_integer("lr_base_batch_size", _SCHEDULE.base_batch_size,
                     "Peak rate = base_learning_rate * batch_size / this; 0: base_learning_rate as is.",
                     lower_bound=0)
flags.DEFINE_float("warmup_epochs", _SCHEDULE.warmup_epochs,
                   "Linear warm-up epochs (piecewise, cosine); default 5/90 of the phase.")
flags.DEFINE_list("lr_decay_epochs", [],
                  "piecewise: epochs where the rate is multiplied by lr_decay_factor; default "
                  "30/90, 60/90 and 80/90 of the phase (the official 30,60,80 over 90 epochs).")
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
                    "Weights to start a new run from: a keras.applications .h5/.weights.h5 file "
                    "(ResNet v1), a torchvision/timm .pth/.pt/.bin/.safetensors file "
                    "(ResNet v1.5), or a name: imagenet (keras.applications), "
                    "torchvision, torchvision:IMAGENET1K_V2, hf://timm/resnet50.a1_in1k. Our own "
                    "checkpoints go to --init_checkpoint.")
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

# What travels with the weights; each defaults to what --pretrained/--init_checkpoint say.
flags.DEFINE_enum("conv_padding", None, list(CONV_PADDINGS),
                  "ResNet's strided 3x3 convolutions: same (TF) or symmetric (torchvision, "
                  "timm). Default: the weights', else same.")
flags.DEFINE_enum("pool_padding", None, list(POOL_PADDINGS),
                  "ResNet's 3x3/2 stem max pool: same (the official model: 0 before, 1 after) or "
                  "symmetric (1 on every side: keras.applications, torchvision, timm). Default: "
                  "the weights', else the variant's (v1.5: same; v1: symmetric).")
flags.DEFINE_integer("eval_resize_size", None,
                     "Eval: shorter side before the centre crop. Default: the published protocol "
                     "of the weights, else image_size / 0.875.", lower_bound=constants.MIN_IMAGE_SIZE)
flags.DEFINE_enum("eval_resize_method", None, list(constants.EVAL_RESIZE_METHODS),
                  "Eval: how the shorter side is resized. Default: the weights' published "
                  "protocol, else bilinear (the official kernel).")

# Continuous evaluation (--mode=continuous_eval).
flags.DEFINE_integer("continuous_eval_timeout", None,
                     "continuous_eval: stop after this many seconds without a new checkpoint; "
                     "default: wait until the run's final step is evaluated.", lower_bound=1)

# Official tensorflow/models flags without a name of ours (official_flags.py says what each
# does here): first those with their official effect, then those accepted with a log line.
_DEFINE = {"bool": flags.DEFINE_boolean, "string": flags.DEFINE_string,
           "integer": flags.DEFINE_integer}
for _name, _flag in official_flags.IMPLEMENTED.items():
  _DEFINE[_flag.kind](_name, _flag.default, f"Official flag. {_flag.help}")
for _name, (_flag, _) in official_flags.INERT.items():
  _DEFINE[_flag.kind](_name, _flag.default, f"Official flag. {_flag.help}")

# The settings ("section.field" of ExperimentConfig) each flag sets. When model_dir holds a
# run, a setting no given flag sets comes from its config.json (run_state.with_saved_run).
# A new flag that sets a config field belongs here.
FLAG_FIELDS = {
    "architecture": ("model.architecture",), "model": ("model.architecture", "model.variant"),
    "resnet_size": ("model.architecture",), "variant": ("model.variant",),
    "resnet_version": ("model.variant",),
    "num_classes": ("model.num_classes", "data.num_classes"),
    "image_size": ("model.image_size", "data.image_size"),
    "pooling": ("model.pooling",), "head_hidden_units": ("model.head",),
    "head_dropout": ("model.head",), "head_activation": ("model.head",),
    "base_width": ("model.base_width",), "vgg_batch_norm": ("model.vgg_batch_norm",),
    "zero_init_residual": ("model.zero_init_residual",), "weight_decay": ("model.weight_decay",),
    "dtype": ("model.dtype_policy",),
    "normalize_in_model": ("model.input_normalization", "data.output_dtype"),
    "data_format": ("model.data_format",), "sync_batch_norm": ("model.sync_batch_norm",),
    "conv_padding": ("model.conv_padding",), "pool_padding": ("model.pool_padding",),
    "eval_resize_size": ("data.eval_resize_size",),
    "eval_resize_method": ("data.eval_resize_method",),
    "source": ("data.source",), "use_synthetic_data": ("data.source",),
    "data_dir": ("data.data_dir", "data.source"), "tfds_name": ("data.tfds_name",),
    "train_split": ("data.train_split",), "eval_split": ("data.eval_split",),
    "train_file_pattern": ("data.train_file_pattern",),
    "eval_file_pattern": ("data.eval_file_pattern",), "label_offset": ("data.label_offset",),
    "batch_size": ("data.batch_size",),
    "normalization": ("data.normalization",), "scratch_normalization": ("data.normalization",),
    # What travels with the weights (normalization, padding, eval resize) comes with them.
    **{name: ("data.normalization", "train.init_checkpoint", "model.conv_padding",
              "model.pool_padding", "data.eval_resize_size", "data.eval_resize_method")
       for name in ("pretrained", "init_checkpoint", "pretrained_filepath")},
    "validation_fraction": ("data.validation_fraction",),
    "shuffle_buffer_size": ("data.shuffle_buffer_size",),
    "training_dataset_cache": ("data.cache",), "eval_dataset_cache": ("data.eval_cache",),
    "tf_data_experimental_slack": ("data.experimental_slack",),
    "datasets_num_private_threads": ("data.private_threads",),
    "synthetic_num_examples": ("data.synthetic_num_examples",),
    "seed": ("data.seed", "runtime.seed"),
    "train_epochs": ("train.train_epochs",), "train_steps": ("train.train_steps",),
    "epochs_between_evals": ("train.epochs_between_evals",),
    "steps_per_loop": ("train.steps_per_loop",), "log_steps": ("train.log_steps",),
    "checkpoint_steps": ("train.checkpoint_steps",),
    "keep_checkpoints": ("train.keep_checkpoints",),
    "label_smoothing": ("train.label_smoothing",),
    **{name: ("train.optimizer",) for name in (
        "optimizer", "momentum", "nesterov", "adam_beta_1", "adam_beta_2", "adam_epsilon",
        "decoupled_weight_decay", "adamw_weight_decay", "rmsprop_rho", "lars_trust_coefficient")},
    **{name: ("train.schedule", "train.phases") for name in (
        "lr_schedule", "base_learning_rate", "lr_base_batch_size", "warmup_epochs",
        "lr_decay_epochs", "lr_decay_factor", "cosine_alpha", "lr_decay_every_epochs",
        "polynomial_power", "polynomial_end_fraction")},
    **{name: (f"train.{name}",) for name in (
        "loss", "bce_target_threshold", "mixup_alpha", "cutmix_alpha", "mix_prob",
        "mix_switch_prob", "mix_mode", "gradient_clip_norm", "ema_decay", "ema_warmup",
        "best_metric")},
    **{name: ("train.phases",) for name in (
        "trainable", "phases", "phase_epochs", "phase_steps", "phase_learning_rates")},
    "init_checkpoint_scope": ("train.init_checkpoint_scope",),
    "training_loop": ("train.training_loop",), "enable_tensorboard": ("train.enable_tensorboard",),
    "nan_policy": ("train.nan_policy",), "normalize_on_device": ("train.normalize_on_device",),
    "profile_steps": ("train.profile_steps",),
    "loss_scale": ("runtime.loss_scale",), "enable_xla": ("runtime.enable_xla",),
    # Augmentation and resolution. The eval size decides whether the model takes any size
    # and, with the crop fraction, the shorter side (else the weights' protocol).
    "eval_image_size": ("data.eval_image_size", "model.any_input_size", "data.eval_resize_size"),
    "eval_crop_fraction": ("data.eval_crop_fraction", "data.eval_resize_size"),
    **{name: (f"data.{name}",) for name in (
        "train_crop_area_range", "train_crop_aspect_range", "random_flip", "color_jitter",
        "autoaugment", "randaugment_layers", "randaugment_magnitude", "randaugment_magnitude_std",
        "randaugment_variant", "random_erasing_probability", "random_erasing_area_range")},
    # What each command exports (config.json does not keep it).
    "export_dir": ("export.export_dir",), "enable_checkpoint_and_export": ("export.export_dir",),
    "export_format": ("export.formats",), "top_k": ("export.top_k",),
    "export_weights": ("export.weights",), "export_checkpoint": ("export.checkpoint",),
}
# Settings never taken from a run: where the command runs and where the run is kept.
COMMAND_FIELDS = ("model.include_top", "model.fused_batch_norm", "train.model_dir",
                  "runtime.distribution_strategy", "runtime.num_gpus", "runtime.all_reduce_alg",
                  "runtime.num_packs", "runtime.worker_hosts", "runtime.task_index",
                  "runtime.heartbeat_timeout_s", "runtime.tpu")


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


def _loss_scale(f):
  """None (dynamic) or the fixed scale of --loss_scale."""
  if f.loss_scale is not None and f.dtype != "fp16":
    logging.info("--loss_scale=%s applies to --dtype=fp16 only (as in the official code); "
                 "--dtype=%s computes without loss scaling.", f.loss_scale, f.dtype)
  if f.loss_scale in (None, "dynamic"):
    return None
  try:
    scale = float(f.loss_scale)
  except ValueError:
    scale = 0.0
  if scale <= 0:
    raise ValueError(f"--loss_scale must be 'dynamic' or a positive number. Received: {f.loss_scale!r}")
  return scale


def _architecture_and_variant(f):
  """--architecture and --variant, or what the official --model/--resnet_size/--resnet_version
  ask; the variant None when no flag gives it (then the weights say it: _variant)."""
  chosen = {"architecture": f.architecture, "variant": f.variant if f["variant"].present else None}
  official = official_flags.architecture_and_variant(f.model, f.resnet_size, f.resnet_version)
  for name, value in official.items():
    if f[name].present and f[name].value != value:
      given = [f"--{flag}={f[flag].value}" for flag in ("model", "resnet_size", "resnet_version")
               if f[flag].present]
      raise ValueError(f"{' '.join(given)} asks for {name} {value!r}. Received: --{name}="
                       f"{f[name].value} as well; give one of them.")
    chosen[name] = value
  return chosen["architecture"], chosen["variant"]


def _variant(f, architecture, given, info):
  """The ResNet variant given, else the weights' (logged), else --variant's default."""
  if given:
    return given
  if info.variant and architecture.startswith("resnet"):
    logging.info("ResNet variant %s, what %s weights are (--variant).", info.variant, info.source)
    return info.variant
  return f.variant


def _vgg_settings(f, architecture, weights):
  """(vgg_batch_norm, pooling, head hidden units): the flags', else what a VGG torch file
  `weights` holds (logged): BatchNorm after its convolutions, and its classic head (pooling
  none, its hidden widths) when neither --pooling nor --head_hidden_units is given and the
  head is loaded (eval, export, --init_checkpoint_scope=all); otherwise a log line says how
  to keep it. A --vgg_batch_norm the file contradicts is refused."""
  hidden_units = _int_list("head_hidden_units", f.head_hidden_units)
  given = (f.vgg_batch_norm, f.pooling, hidden_units)
  layout = (initial_weights.vgg_layout(weights)
            if weights and architecture.startswith("vgg") else None)
  if layout is None:
    return given
  flag = _weights_flag(f)
  if f["vgg_batch_norm"].present and f.vgg_batch_norm != layout.batch_norm:
    holds = (f"BatchNorm after each convolution ({layout.batch_norm_key})" if layout.batch_norm
             else "no BatchNorm")
    raise ValueError(f"--{flag}: {weights} holds a VGG with {holds}: leave --vgg_batch_norm out "
                     f"(it follows the weights) or give --{'' if layout.batch_norm else 'no'}"
                     f"vgg_batch_norm. Received: --{'' if f.vgg_batch_norm else 'no'}"
                     "vgg_batch_norm")
  if layout.batch_norm and not f["vgg_batch_norm"].present:
    logging.info("--vgg_batch_norm: %s has BatchNorm after each convolution (%s).", weights,
                 layout.batch_norm_key)
  if not layout.hidden_units or f["pooling"].present or f["head_hidden_units"].present:
    return layout.batch_norm, f.pooling, hidden_units
  units = ",".join(map(str, layout.hidden_units))
  if f.mode in ("eval", "export") or _init_checkpoint_scope(f) == "all":
    logging.info("--pooling=none --head_hidden_units=%s: the classic head of %s (%s).", units,
                 weights, ", ".join(layout.hidden_keys))
    return layout.batch_norm, "none", layout.hidden_units
  logging.info("%s has a classic head (%s), which --init_checkpoint_scope=%s leaves out: the "
               "model gets a new head. --pooling=none --head_hidden_units=%s builds the file's "
               "(its weights load with --init_checkpoint_scope=all).", weights,
               ", ".join(layout.hidden_keys), _init_checkpoint_scope(f), units)
  return layout.batch_norm, f.pooling, hidden_units


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


def _augmentation_and_resolution(f):
  """The DataConfig fields of the augmentation and resolution flags."""
  return dict(
      eval_image_size=f.eval_image_size,
      train_crop_area_range=_float_list("train_crop_area_range", f.train_crop_area_range),
      train_crop_aspect_range=_float_list("train_crop_aspect_range", f.train_crop_aspect_range),
      random_flip=f.random_flip, eval_crop_fraction=f.eval_crop_fraction, color_jitter=f.color_jitter,
      autoaugment=f.autoaugment, randaugment_layers=f.randaugment_layers,
      randaugment_magnitude=f.randaugment_magnitude,
      randaugment_magnitude_std=f.randaugment_magnitude_std,
      randaugment_variant=f.randaugment_variant,
      random_erasing_probability=f.random_erasing_probability,
      random_erasing_area_range=_float_list("random_erasing_area_range",
                                            f.random_erasing_area_range))


def _any_input_size(pooling, data):
  """Whether the model must take other sizes than --image_size: to evaluate at another."""
  if data.eval_size == data.image_size:
    return False
  if pooling == "none":
    raise ValueError(
        f"--eval_image_size={data.eval_size} differs from --image_size={data.image_size}, which "
        "needs a model that takes any image size, and --pooling=none (a flatten head, as "
        "VGG's classic one) fixes it. Use --pooling=avg or leave --eval_image_size unset. "
        "Received: --pooling=none")
  return True


PRETRAINED_EXTENSIONS = (".h5", ".pth", ".pt", ".bin", ".safetensors")
WEIGHTS_FLAGS = ("pretrained", "init_checkpoint", "pretrained_filepath")


def _given_weights_flags(f):
  """["--pretrained=...", ...]: the weights flags given a value."""
  return [f"--{name}={f[name].value}" for name in WEIGHTS_FLAGS if f[name].value]


def _num_classes(f, source, saved):
  """--num_classes; without it, for a new run on an image folder, its classes (logged), as
  Keras' image_dataset_from_directory and timm count them. A run in --model_dir keeps its own."""
  if f["num_classes"].present or saved is not None or source != "folder":
    return f.num_classes
  classes = folder.list_image_folder(f.data_dir, True, f.validation_fraction, f.train_split,
                                     f.eval_split).class_names
  shown = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
  logging.info("--num_classes=%d: the classes of --data_dir=%s (%s).", len(classes), f.data_dir,
               shown)
  return len(classes)


def _initial_weights(f, architecture, variant, num_classes):
  """(file, WeightsInfo) of --pretrained (a named set resolved to its file), --init_checkpoint
  or the official --pretrained_filepath, whichever is given (not two); (None, empty
  WeightsInfo) without."""
  given = _given_weights_flags(f)
  if len(given) > 1:
    raise ValueError("Give the weights to start from once: --pretrained (keras.applications, "
                     "torchvision, timm), --init_checkpoint (ours) or --pretrained_filepath (the "
                     f"official name). Received: {' and '.join(given)}")
  weights = f.pretrained or f.init_checkpoint or f.pretrained_filepath
  if not weights:
    return None, weight_sources.WeightsInfo()
  try:
    if (f.pretrained and not weight_sources.is_named(f.pretrained)
        and not f.pretrained.endswith(PRETRAINED_EXTENSIONS)):
      raise ValueError(f"must be a weights file ({', '.join(PRETRAINED_EXTENSIONS)}) or a name "
                       "(imagenet, torchvision[:WEIGHTS], hf://ORG/REPO); our checkpoints go to "
                       f"--init_checkpoint. Received: --pretrained={f.pretrained}")
    return initial_weights.resolve(weights, architecture=architecture, variant=variant,
                                   vgg_batch_norm=f.vgg_batch_norm, num_classes=num_classes)
  except ValueError as error:
    raise ValueError(f"--{_weights_flag(f)}: {error}") from error


def _resumed_checkpoint(saved, latest_checkpoint):
  """The checkpoint of the run in --model_dir that this command goes on from; None if none.

  It holds every weight, so the command that resumes a run does not read the weights it
  started from again (a file since deleted, a hub that cannot be reached): what they
  implied is in the run's config.json.
  """
  return None if saved is None or saved.train is None else latest_checkpoint


def _resumed_run_weights(f, saved, checkpoint):
  """(file, empty WeightsInfo): the weights the resumed run started from, not read again."""
  given = _given_weights_flags(f)
  if given:
    logging.info("%s not read: %s holds every weight (the run started from %s).",
                 " and ".join(given), checkpoint, saved.train.init_checkpoint)
  return saved.train.init_checkpoint, weight_sources.WeightsInfo()


def _weights_flag(f):
  """The weights flag given (the first, if several), else "pretrained"."""
  return next((name for name in WEIGHTS_FLAGS if f[name].value), "pretrained")


def _init_checkpoint_scope(f):
  # The official --pretrained_filepath loads the whole model (Keras load_weights).
  if f.pretrained_filepath and not f["init_checkpoint_scope"].present:
    return "all"
  return f.init_checkpoint_scope


def _chosen_over_weights(f, saved):
  """The initial_weights.IMPLIED_FIELDS the flags (or the run in --model_dir) settle, which
  the weights then leave alone."""
  chosen = {"data.normalization": f.normalization or saved is not None,
            "model.conv_padding": f.conv_padding,
            "model.pool_padding": f.pool_padding,
            "data.eval_resize_size": f.eval_resize_size or f["eval_crop_fraction"].present,
            "data.eval_resize_method": f.eval_resize_method}
  return {field for field, given in chosen.items() if given}


def _warn_without_weights(f, weights, phases, latest_checkpoint):
  if weights or f.mode not in ("train", "train_and_eval") or latest_checkpoint:
    return
  frozen = any(phase.trainable != config_lib.TRAINABLE_ALL for phase in phases)
  if f.expect_weights or frozen:
    logging.warning(
        "No weights to start from (--pretrained=<weights file or name such as torchvision> or "
        "--init_checkpoint=<our checkpoint or model_dir>): training from scratch%s.",
        ", and frozen layers keep their random initialization" if frozen else "")


def _source_and_tfds_name(f, saved):
  """--source (--use_synthetic_data: synthetic), else the run's in --model_dir, else what
  --data_dir holds; synthetic without --data_dir (said in one line).

  A --data_dir given to a run of synthetic images says what it holds, so that the run
  refuses it (FLAG_FIELDS: --data_dir sets data.source too).
  """
  if f.use_synthetic_data:
    return "synthetic", f.tfds_name
  if f.source:
    return f.source, f.tfds_name
  if saved is not None and not (f.data_dir and saved.data.source == "synthetic"):
    return saved.data.source, f.tfds_name or saved.data.tfds_name
  if f.tfds_name:
    return "tfds", f.tfds_name
  if not f.data_dir:
    logging.info("No --data_dir: synthetic images (--source=synthetic).")
    return "synthetic", None
  source, tfds_name = sources.infer_source(f.data_dir, f.train_file_pattern)
  logging.info("--data_dir=%s holds %s: --source=%s.", f.data_dir,
               {"folder": "images", "imagenet": "TFRecord shards",
                "tfds": f"the TFDS data set {tfds_name}"}[source], source)
  return source, tfds_name


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
  for name, fields in FLAG_FIELDS.items():
    if f[name].present and name not in left_out:
      for field in fields:
        given.setdefault(field, name)
  return given


def _log_inert_flags(f):
  for name in official_flags.INERT:
    if f[name].present:
      logging.info("%s", official_flags.inert_message(name, f[name].value))


def experiment_from_flags(flag_values=FLAGS):
  """The ExperimentConfig the flags describe; ValueError naming the flag when they do not fit.

  When --model_dir holds a run to act on, settings no given flag sets are the run's.
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
      loss_scale=_loss_scale(f), enable_xla=f.enable_xla, seed=f.seed)
  saved = _saved_run(f)
  latest_checkpoint = tf.train.latest_checkpoint(f.model_dir)
  resumed = _resumed_checkpoint(saved, latest_checkpoint)
  architecture, given_variant = _architecture_and_variant(f)
  source, tfds_name = _source_and_tfds_name(f, saved)
  num_classes = _num_classes(f, source, saved)
  weights, weights_info = (_resumed_run_weights(f, saved, resumed) if resumed
                           else _initial_weights(f, architecture, given_variant, num_classes))
  variant = _variant(f, architecture, given_variant, weights_info)
  vgg_batch_norm, pooling, hidden_units = _vgg_settings(
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
      **_augmentation_and_resolution(f))
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
      any_input_size=_any_input_size(pooling, data))
  schedule = config_lib.ScheduleConfig(
      name=f.lr_schedule, base_learning_rate=f.base_learning_rate,
      base_batch_size=f.lr_base_batch_size or None, warmup_epochs=f.warmup_epochs,
      decay_epochs=_float_list("lr_decay_epochs", f.lr_decay_epochs) or None,
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
      init_checkpoint_scope=_init_checkpoint_scope(f), training_loop=f.training_loop,
      enable_tensorboard=f.enable_tensorboard, nan_policy=f.nan_policy,
      normalize_on_device=f.normalize_on_device,
      profile_steps=official_flags.parse_profile_steps(f.profile_steps) if f.profile_steps else None,
      loss=f.loss, bce_target_threshold=f.bce_target_threshold, mixup_alpha=f.mixup_alpha,
      cutmix_alpha=f.cutmix_alpha, mix_prob=f.mix_prob, mix_switch_prob=f.mix_switch_prob,
      mix_mode=f.mix_mode, gradient_clip_norm=f.gradient_clip_norm, ema_decay=f.ema_decay,
      ema_warmup=f.ema_warmup, best_metric=f.best_metric)
  export_dir = f.export_dir
  if f.enable_checkpoint_and_export and not export_dir:
    export_dir = os.path.join(f.model_dir, "saved_model")
  export_config = config_lib.ExportConfig(
      export_dir=export_dir, formats=tuple(f.export_format), top_k=f.top_k,
      weights=f.export_weights, checkpoint=f.export_checkpoint)
  experiment = config_lib.ExperimentConfig(data=data, model=model, train=train, runtime=runtime,
                                           export=export_config)
  experiment = initial_weights.follow_weights(experiment, weights_info,
                                              keep=_chosen_over_weights(f, saved))
  if saved is not None:
    settable = {field for fields in FLAG_FIELDS.values() for field in fields}
    # A resumed run keeps what its weights implied, whatever weights flag the command repeats.
    unread = WEIGHTS_FLAGS if resumed else ()
    finished = (run_state.finished_stats(f.model_dir)
                if saved.train is not None and f.mode in TRAIN_MODES else None)
    experiment = run_state.with_saved_run(experiment, saved, f.model_dir, settable,
                                          _given_fields(f, left_out=unread), finished=finished)
    if finished:
      _check_finished_run_length(experiment, saved, finished)
  _warn_without_weights(f, weights, experiment.train.resolved_phases(), latest_checkpoint)
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


def _mode(f):
  if f.skip_eval and f.mode == "eval":
    raise ValueError("--skip_eval leaves --mode=eval nothing to do. Received: --mode=eval --skip_eval")
  # The official --skip_eval: training without evaluations.
  return "train" if f.skip_eval and f.mode == "train_and_eval" else f.mode


def apply_process_settings(f):
  """What the official flags set for the whole process: environment, eager execution."""
  environment = {}
  if f.tf_gpu_thread_mode:
    environment = official_flags.gpu_thread_environment(f.tf_gpu_thread_mode,
                                                        f.per_gpu_thread_count)
  for name, value in environment.items():
    os.environ[name] = value
    logging.info("%s=%s", name, value)
  if f["batchnorm_spatial_persistent"].present:
    if f.batchnorm_spatial_persistent:
      os.environ["TF_USE_CUDNN_BATCHNORM_SPATIAL_PERSISTENT"] = "1"
    else:
      os.environ.pop("TF_USE_CUDNN_BATCHNORM_SPATIAL_PERSISTENT", None)
  eager = f.run_eagerly or not f.use_tf_function
  if eager:
    logging.info("Running the train and eval steps eagerly (--use_tf_function=false or "
                 "--run_eagerly): slow, for debugging.")
  tf.config.run_functions_eagerly(eager)


def run(flag_values=FLAGS):
  """Runs --mode with the parsed flags and returns its stats."""
  try:
    mode = _mode(flag_values)
    if flag_values.clean and mode not in TRAIN_MODES:
      raise ValueError(f"--clean deletes model_dir before training; --mode={mode} would "
                       f"delete the run it acts on. Received: --mode={mode} --clean")
    experiment = experiment_from_flags(flag_values)
    apply_process_settings(flag_values)
  except ValueError as error:
    raise app.UsageError(str(error)) from error
  stats = MODES[mode](experiment, flag_values)
  # The evaluation report has its own log line and files (model_dir/eval/).
  left_out = {"history", *(f"eval_{name}" for name in progress.REPORT_FIELDS)}
  logging.info("Run stats: %s", json.dumps({k: v for k, v in stats.items() if k not in left_out}))
  return stats


# Mistakes the user can fix: one log line naming the problem and the fix; --verbosity=1 or
# higher adds the traceback.
USER_ERRORS = (ValueError, FileNotFoundError, app.UsageError, run_lock.RunLockedError)


def main(argv):
  try:
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments (flags need --name=value). Received: {argv[1:]}")
    stats = run()
    if stats.get("failed"):
      sys.exit(1)
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

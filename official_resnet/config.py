"""Frozen configs of a training run: optimizer, schedule, phases, runtime, and the experiment.

main.py builds these from flags; everything below main takes them as
arguments. Defaults are the official ResNet-50 ImageNet recipe, with its learning
rate schedule scaled to the length of the run (OFFICIAL_IMAGENET_SCHEDULE is the
original).
"""
import dataclasses

from input_pipeline import checks
from input_pipeline.config import DataConfig
from official_resnet.models.config import ModelConfig

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "lamb", "lars")
SCHEDULES = ("piecewise", "cosine", "constant", "step", "polynomial", "exponential")
STRATEGIES = ("off", "one_device", "mirrored", "multi_worker_mirrored", "tpu")
# All-reduce implementations each strategy accepts (None: TF picks).
ALL_REDUCE_ALGS = {
    "mirrored": ("nccl", "hierarchical_copy", "reduction_to_one_device"),
    "multi_worker_mirrored": ("ring", "nccl"),
}
# Keras dtype policy (ModelConfig.dtype_policy, the one place a run's precision is kept)
# of each --dtype value.
DTYPE_POLICIES = {"fp32": "float32", "fp16": "mixed_float16", "bf16": "mixed_bfloat16"}
DTYPES = tuple(DTYPE_POLICIES)
# float16 needs loss scaling (RuntimeConfig.loss_scale) and is refused on TPU.
FLOAT16_POLICY = DTYPE_POLICIES["fp16"]
TRAINING_LOOPS = ("custom", "fit")
# Keras' own fit loop is known to work on one host only (keras-team/keras#20585).
FIT_STRATEGIES = ("off", "one_device", "mirrored")
INIT_CHECKPOINT_SCOPES = ("backbone", "all")
# What an export writes besides the SavedModel, which is always written.
EXPORT_FORMATS = ("saved_model", "keras", "tflite")
# Which weights an export holds: "auto" the averaged ones when the run keeps an average
# (what its evaluations used), else the trained ones; "ema" insists on the average.
EXPORT_WEIGHTS = ("auto", "ema", "raw")
# Which checkpoint an export reads: model_dir's latest, or the best one kept in model_dir/best.
EXPORT_CHECKPOINTS = ("latest", "best")
# The training loss: softmax cross-entropy, or binary cross-entropy per class on the
# one-hot (smoothed, mixed) targets, as timm's "ResNet strikes back" recipes train.
LOSSES = ("softmax", "bce")
# MixUp/CutMix draws one mixing per batch (per replica), or one per example.
MIX_MODES = ("batch", "elem")
# Eval metrics the best checkpoint can follow; loss is better lower, the others higher.
BEST_METRICS = ("top_1_accuracy", "top_5_accuracy", "loss")
DEFAULT_TOP_K = 5
# What a step with a non-finite loss (or, below fp16, gradients) does: stop the run, or
# skip that step's update.
NAN_POLICIES = ("stop", "skip")
# What a phase trains besides these: "all", "head" (backbone frozen), or a
# stage name such as "conv4" (stages before it frozen).
TRAINABLE_ALL = "all"
TRAINABLE_HEAD = "head"


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  name: str = "sgd"
  # sgd, rmsprop, lars.
  momentum: float = 0.9
  nesterov: bool = False
  # adam, adamw, lamb.
  beta_1: float = 0.9
  beta_2: float = 0.999
  # adam, adamw, lamb, rmsprop.
  epsilon: float = 1e-7
  # Decoupled decay (variable -= learning_rate * weight_decay * variable) for every
  # optimizer but lars, whose decay is part of the update its trust ratio scales.
  # BatchNorm parameters and biases are exempt. The model's L2 (ModelConfig.weight_decay)
  # is separate.
  weight_decay: float = 0.0
  # rmsprop: decay of the squared-gradient average.
  rho: float = 0.9
  # lars: the trust coefficient (eta) scaling ||w|| / ||g + weight_decay * w||.
  lars_trust_coefficient: float = 0.001

  def __post_init__(self):
    checks.check_choice("optimizer", self.name, OPTIMIZERS)
    checks.check_positive("momentum", self.momentum, allow_zero=True)
    checks.check_positive("decoupled_weight_decay", self.weight_decay, allow_zero=True)
    if self.nesterov and self.name not in ("sgd", "lars"):
      raise ValueError("nesterov applies to optimizer='sgd' or 'lars' only. "
                       f"Received: optimizer={self.name!r}")
    if not 0.0 <= self.rho < 1.0:
      raise ValueError(f"rmsprop_rho must be in [0, 1). Received: {self.rho!r}")
    checks.check_positive("lars_trust_coefficient", self.lars_trust_coefficient)


# The official ImageNet schedule's shape as fractions of its 90 epochs: 5 warm-up epochs,
# x0.1 at epochs 30, 60 and 80. A schedule without explicit epochs takes these fractions of
# its own phase, so it fits a run of any length and is the official one over 90 epochs.
WARMUP_FRACTION = 5 / 90
DECAY_FRACTIONS = (30 / 90, 60 / 90, 80 / 90)


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
  """Learning rate over one phase; epochs count from the phase's start.

  The peak rate is base_learning_rate * batch_size / base_batch_size (the
  official linear scaling, 0.1 per 256 examples); base_batch_size=None uses
  base_learning_rate as it is. The default fits any run: a linear warm-up over
  WARMUP_FRACTION of the phase, then a cosine decay to zero at its end.
  OFFICIAL_IMAGENET_SCHEDULE is the official recipe's.
  """
  name: str = "cosine"
  base_learning_rate: float = 0.1
  base_batch_size: int | None = 256
  # None: WARMUP_FRACTION of the phase.
  warmup_epochs: float | None = None
  # piecewise: multiply by decay_factor at each of these epochs; None: at DECAY_FRACTIONS
  # of the phase.
  decay_epochs: tuple[float, ...] | None = None
  decay_factor: float = 0.1
  # cosine: the rate ends at cosine_alpha * peak.
  cosine_alpha: float = 0.0
  # step: multiply by decay_factor every decay_every_epochs epochs; exponential: the
  # same rate of decay, continuously.
  decay_every_epochs: float = 30.0
  # polynomial: from the peak after warm-up to polynomial_end_fraction * peak at the
  # phase's end, along (1 - t) ** polynomial_power.
  polynomial_power: float = 1.0
  polynomial_end_fraction: float = 0.0

  def __post_init__(self):
    checks.check_choice("lr_schedule", self.name, SCHEDULES)
    checks.check_positive("base_learning_rate", self.base_learning_rate)
    if self.base_batch_size is not None:
      checks.check_positive("lr_base_batch_size", self.base_batch_size)
    if self.warmup_epochs is not None:
      checks.check_positive("warmup_epochs", self.warmup_epochs, allow_zero=True)
    decays = self.decay_epochs
    if decays is not None and (list(decays) != sorted(decays) or any(e <= 0 for e in decays)):
      raise ValueError(f"lr_decay_epochs must be positive and increasing. Received: {decays}")
    checks.check_positive("lr_decay_factor", self.decay_factor)
    checks.check_positive("lr_decay_every_epochs", self.decay_every_epochs)
    checks.check_positive("polynomial_power", self.polynomial_power)
    if not 0.0 <= self.polynomial_end_fraction <= 1.0:
      raise ValueError(
          f"polynomial_end_fraction must be in [0, 1]. Received: {self.polynomial_end_fraction!r}")

  def peak_learning_rate(self, batch_size):
    if self.base_batch_size is None:
      return self.base_learning_rate
    return self.base_learning_rate * batch_size / self.base_batch_size


# The official ResNet-50 ImageNet schedule (configs/imagenet_*.cfg spell it out).
OFFICIAL_IMAGENET_SCHEDULE = ScheduleConfig(name="piecewise", warmup_epochs=5.0,
                                            decay_epochs=(30.0, 60.0, 80.0))


@dataclasses.dataclass(frozen=True)
class PhaseConfig:
  """One stretch of training with its own length, schedule and trainable part.

  Two-phase fine-tuning is two of these, e.g. the head alone for 3 epochs,
  then everything from "conv4" on at a lower rate.
  """
  name: str = "train"
  # Exactly one of epochs and steps.
  epochs: float | None = None
  steps: int | None = None
  schedule: ScheduleConfig = ScheduleConfig()
  trainable: str = TRAINABLE_ALL

  def __post_init__(self):
    if (self.epochs is None) == (self.steps is None):
      raise ValueError(
          f"Phase {self.name!r} needs exactly one of epochs and steps. "
          f"Received: epochs={self.epochs}, steps={self.steps}")
    checks.check_positive(f"phase {self.name!r} length",
                          self.epochs if self.steps is None else self.steps)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  model_dir: str = "/tmp/official_resnet"
  train_epochs: float = 90.0
  # Total steps; when set it replaces train_epochs.
  train_steps: int | None = None
  epochs_between_evals: float = 1.0
  # Steps per call of the compiled train function; None: up to one epoch.
  steps_per_loop: int | None = None
  log_steps: int = 100
  # None: one checkpoint per epoch (and always one at the end).
  checkpoint_steps: int | None = None
  keep_checkpoints: int = 5
  label_smoothing: float = 0.0
  optimizer: OptimizerConfig = OptimizerConfig()
  schedule: ScheduleConfig = ScheduleConfig()
  # Empty: one phase of train_epochs / train_steps with `schedule`, all trainable.
  phases: tuple[PhaseConfig, ...] = ()
  # The weights training starts from (a file or a checkpoint of ours): set it with
  # initial_weights.start_from, which also sets the normalization, padding and eval resize
  # the weights imply.
  init_checkpoint: str | None = None
  init_checkpoint_scope: str = "backbone"
  training_loop: str = "custom"
  # Scalars to model_dir/train and model_dir/eval: small, and what `./run.sh tensorboard` shows.
  enable_tensorboard: bool = True
  nan_policy: str = "stop"
  # Custom loop: training batches leave the input pipeline as uint8 pixels and the train
  # step normalizes them on its device. Per image that is 7% less input-pipeline CPU than
  # float32 output (benchmarks/pipeline.py) and a quarter of the bytes to copy to an
  # accelerator. Training crops are random, so no bit-for-bit result is lost; evaluation
  # keeps the float32 pipeline.
  normalize_on_device: bool = True
  # (first, last) global steps, 1-based, to trace with the TensorBoard profiler into
  # model_dir/train (the official --profile_steps); None: no trace.
  profile_steps: tuple[int, int] | None = None
  # The training loss (LOSSES); bce: targets above bce_target_threshold become 1, the
  # rest 0 (None keeps the soft targets).
  loss: str = "softmax"
  bce_target_threshold: float | None = None
  # MixUp and CutMix, as timm's Mixup: a Beta(alpha, alpha) weight per batch or example
  # (mix_mode); with both alphas, CutMix with probability mix_switch_prob; mixing at all
  # with probability mix_prob. Both 0: off.
  mixup_alpha: float = 0.0
  cutmix_alpha: float = 0.0
  mix_prob: float = 1.0
  mix_switch_prob: float = 0.5
  mix_mode: str = "batch"
  # Clip the gradient (summed over replicas) to this global norm; None: no clipping.
  gradient_clip_norm: float | None = None
  # Exponential moving average of the weights (BatchNorm statistics included), used by
  # evaluation and exports; None: off. ema_warmup: decay min(ema_decay, (1 + n) / (10 + n))
  # after n updates, tf.train.ExponentialMovingAverage's num_updates rule.
  ema_decay: float | None = None
  ema_warmup: bool = True
  # Keep the checkpoint with the best value of this eval metric in model_dir/best (timm's
  # model_best), when the run evaluates; None: off.
  best_metric: str | None = "top_1_accuracy"

  def __post_init__(self):
    if not self.model_dir:
      raise ValueError(f"model_dir must be a directory path. Received: {self.model_dir!r}")
    checks.check_positive("train_epochs", self.train_epochs)
    if self.train_steps is not None:
      checks.check_positive("train_steps", self.train_steps)
    checks.check_positive("epochs_between_evals", self.epochs_between_evals)
    if self.steps_per_loop is not None:
      checks.check_positive("steps_per_loop", self.steps_per_loop)
    checks.check_positive("log_steps", self.log_steps)
    if self.checkpoint_steps is not None:
      checks.check_positive("checkpoint_steps", self.checkpoint_steps)
    checks.check_positive("keep_checkpoints", self.keep_checkpoints)
    if not 0.0 <= self.label_smoothing < 1.0:
      raise ValueError(f"label_smoothing must be in [0, 1). Received: {self.label_smoothing}")
    checks.check_choice("init_checkpoint_scope", self.init_checkpoint_scope, INIT_CHECKPOINT_SCOPES)
    checks.check_choice("training_loop", self.training_loop, TRAINING_LOOPS)
    checks.check_choice("nan_policy", self.nan_policy, NAN_POLICIES)
    if self.nan_policy == "skip" and self.training_loop != "custom":
      raise ValueError("nan_policy='skip' needs training_loop='custom' (Keras fit cannot skip a "
                       f"step's update). Received: training_loop={self.training_loop!r}")
    names = [phase.name for phase in self.phases]
    if len(set(names)) != len(names):
      raise ValueError(f"phase names must be unique. Received: {names}")
    if self.profile_steps is not None and not (
        len(self.profile_steps) == 2 and 1 <= self.profile_steps[0] <= self.profile_steps[1]):
      raise ValueError("profile_steps must be two step numbers 1 <= first <= last. "
                       f"Received: {self.profile_steps}")
    self._check_recipe()

  def _check_recipe(self):
    """The loss, mixing, clipping, averaging and best-checkpoint fields."""
    checks.check_choice("loss", self.loss, LOSSES)
    if self.bce_target_threshold is not None:
      if self.loss != "bce":
        raise ValueError("bce_target_threshold applies to loss='bce' only. "
                         f"Received: loss={self.loss!r}")
      if not 0.0 <= self.bce_target_threshold < 1.0:
        raise ValueError(
            f"bce_target_threshold must be in [0, 1). Received: {self.bce_target_threshold!r}")
    checks.check_positive("mixup_alpha", self.mixup_alpha, allow_zero=True)
    checks.check_positive("cutmix_alpha", self.cutmix_alpha, allow_zero=True)
    for name in ("mix_prob", "mix_switch_prob"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]. Received: {getattr(self, name)!r}")
    checks.check_choice("mix_mode", self.mix_mode, MIX_MODES)
    if self.gradient_clip_norm is not None:
      checks.check_positive("gradient_clip_norm", self.gradient_clip_norm)
    if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
      raise ValueError(f"ema_decay must be in (0, 1). Received: {self.ema_decay!r}")
    if self.best_metric is not None:
      checks.check_choice("best_metric", self.best_metric, BEST_METRICS)
    custom_only = [name for name, used in (
        ("mixup_alpha/cutmix_alpha", self.mixes), ("gradient_clip_norm", self.gradient_clip_norm),
        ("ema_decay", self.ema_decay)) if used]
    if custom_only and self.training_loop != "custom":
      raise ValueError(f"{custom_only[0]} needs training_loop='custom' (the train step mixes, "
                       "clips and averages; Keras fit does not). Received: "
                       f"training_loop={self.training_loop!r}")

  @property
  def mixes(self):
    """Whether the train step mixes its batches (MixUp or CutMix)."""
    return self.mixup_alpha > 0 or self.cutmix_alpha > 0

  def resolved_phases(self):
    """The phases to run: `phases`, or the single phase the top-level fields describe."""
    if self.phases:
      return self.phases
    if self.train_steps is not None:
      return (PhaseConfig(steps=self.train_steps, schedule=self.schedule),)
    return (PhaseConfig(epochs=self.train_epochs, schedule=self.schedule),)


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
  distribution_strategy: str = "mirrored"
  # mirrored/one_device: GPUs to use; 0 uses the CPU (every logical CPU device under mirrored).
  num_gpus: int = 1
  all_reduce_alg: str | None = None
  num_packs: int = 1
  # multi_worker_mirrored without TF_CONFIG or Slurm: "host:port" of every worker.
  worker_hosts: tuple[str, ...] = ()
  task_index: int = -1
  # multi_worker_mirrored: seconds without a heartbeat before a worker counts as dead and
  # every worker's collectives abort. TF's own default, 10 s, fails workers on busy hosts;
  # 100 s is JAX's default (10 missed heartbeats of 10 s).
  heartbeat_timeout_s: float = 100.0
  tpu: str = ""
  # Under a float16 model (ModelConfig.dtype_policy): None scales the loss dynamically
  # (keras.optimizers.LossScaleOptimizer); a number is a fixed scale, the official meaning
  # of --loss_scale=N.
  loss_scale: float | None = None
  enable_xla: bool = False
  seed: int | None = None

  def __post_init__(self):
    checks.check_choice("distribution_strategy", self.distribution_strategy, STRATEGIES)
    checks.check_positive("num_gpus", self.num_gpus, allow_zero=True)
    checks.check_positive("num_packs", self.num_packs)
    checks.check_positive("heartbeat_timeout_s", self.heartbeat_timeout_s)
    if self.loss_scale is not None:
      checks.check_positive("loss_scale", self.loss_scale)
    if self.all_reduce_alg is not None:
      allowed = ALL_REDUCE_ALGS.get(self.distribution_strategy, ())
      if not allowed:
        raise ValueError(
            f"all_reduce_alg applies to distribution_strategy in {tuple(ALL_REDUCE_ALGS)}. "
            f"Received: all_reduce_alg={self.all_reduce_alg!r} with "
            f"distribution_strategy={self.distribution_strategy!r}")
      checks.check_choice(f"all_reduce_alg (with {self.distribution_strategy})",
                          self.all_reduce_alg, allowed)
    if self.distribution_strategy in ("off", "one_device") and self.num_gpus > 1:
      raise ValueError(
          f"distribution_strategy={self.distribution_strategy!r} uses at most one GPU; use "
          f"'mirrored' for more. Received: num_gpus={self.num_gpus}")
    if self.worker_hosts and not 0 <= self.task_index < len(self.worker_hosts):
      raise ValueError(
          f"task_index must be in [0, {len(self.worker_hosts)}) for {len(self.worker_hosts)} "
          f"worker_hosts. Received: {self.task_index}")


def check_export_formats(formats, argument="formats"):
  """Shared by ExportConfig (checked before training) and export (its public functions)."""
  if not formats or any(name not in EXPORT_FORMATS for name in formats):
    raise ValueError(f"{argument} must be a non-empty subset of {EXPORT_FORMATS}. "
                     f"Received: {tuple(formats)!r}")


def check_top_k(top_k):
  checks.check_int("top_k", top_k, 1)


@dataclasses.dataclass(frozen=True)
class ExportConfig:
  """Where and what to export: --mode=export, or the end of training when export_dir is set."""
  export_dir: str | None = None
  formats: tuple[str, ...] = ("saved_model", "keras")
  top_k: int = DEFAULT_TOP_K
  # EXPORT_WEIGHTS and EXPORT_CHECKPOINTS.
  weights: str = "auto"
  checkpoint: str = "latest"

  def __post_init__(self):
    check_export_formats(self.formats, "export_format")
    check_top_k(self.top_k)
    checks.check_choice("export_weights", self.weights, EXPORT_WEIGHTS)
    checks.check_choice("export_checkpoint", self.checkpoint, EXPORT_CHECKPOINTS)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Everything one run needs. The data and model configs must agree on classes and size."""
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  train: TrainConfig = TrainConfig()
  runtime: RuntimeConfig = RuntimeConfig()
  export: ExportConfig = ExportConfig()

  def __post_init__(self):
    if self.data.num_classes != self.model.num_classes:
      raise ValueError(
          "num_classes of the data and the model must agree. "
          f"Received: data {self.data.num_classes}, model {self.model.num_classes}")
    if self.data.image_size != self.model.image_size:
      raise ValueError(
          "image_size of the data and the model must agree. "
          f"Received: data {self.data.image_size}, model {self.model.image_size}")
    if self.data.eval_size != self.data.image_size and not self.model.any_input_size:
      raise ValueError(
          "Evaluating at another size than training needs a model built with "
          f"any_input_size=True. Received: data image_size {self.data.image_size}, "
          f"eval_image_size {self.data.eval_image_size}, model any_input_size=False")
    # Pixels are normalized once: by a model that normalizes its own input (from uint8),
    # else by the pipeline or the train step (trainer.normalizes_on_device).
    in_model = self.model.input_normalization
    if (self.data.output_dtype != ("float32" if in_model is None else "uint8")
        or in_model not in (None, self.data.normalization)):
      raise ValueError(
          "A model that normalizes its own input takes uint8 pixels normalized as the data "
          "says (data output_dtype='uint8', model input_normalization equal to data "
          "normalization); any other model takes float32 (output_dtype='float32', "
          f"input_normalization=None). Received: input_normalization={in_model!r}, "
          f"normalization={self.data.normalization!r}, output_dtype={self.data.output_dtype!r}")
    strategy = self.runtime.distribution_strategy
    if self.train.training_loop == "fit" and strategy not in FIT_STRATEGIES:
      raise ValueError(
          f"training_loop='fit' works with distribution_strategy in {FIT_STRATEGIES}: Keras 3 "
          "Model.fit fails under multi-worker strategies (keras-team/keras#20585) and is untested "
          f"on TPU here; use training_loop='custom'. Received: distribution_strategy={strategy!r}")
    if self.model.dtype_policy == FLOAT16_POLICY and strategy == "tpu":
      raise ValueError(f"dtype_policy={FLOAT16_POLICY!r} (dtype='fp16') is not supported on TPU; "
                       f"use {DTYPE_POLICIES['bf16']!r} (dtype='bf16'). "
                       f"Received: dtype_policy={FLOAT16_POLICY!r}")

"""Settings from their flags: lists, the loss scale, the model's names, phases, augmentation,
the source and the classes. Each takes the parsed flag values (absl FlagValues) and raises
ValueError naming the flag."""
import dataclasses

from absl import logging

from input_pipeline import folder
from input_pipeline import sources
from official_resnet import config as config_lib
from official_resnet import official_flags
from official_resnet.models import resnet
from official_resnet.models import vgg


def float_list(name, values):
  try:
    return tuple(float(value) for value in values)
  except ValueError as error:
    raise ValueError(f"--{name} must be comma-separated numbers. Received: {values}") from error


def int_list(name, values):
  try:
    return tuple(int(value) for value in values)
  except ValueError as error:
    raise ValueError(f"--{name} must be comma-separated integers. Received: {values}") from error


def loss_scale(f):
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


def architecture_and_variant(f):
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


def _trainable_values(architecture):
  stages = resnet.STAGES if architecture.startswith("resnet") else vgg.STAGES
  return (config_lib.TRAINABLE_ALL, config_lib.TRAINABLE_HEAD, *stages)


def _check_trainable(flag, value, architecture):
  allowed = _trainable_values(architecture)
  if value not in allowed:
    raise ValueError(f"--{flag} must be one of {allowed} for --architecture={architecture}. "
                     f"Received: {value!r}")


def phases(f, schedule):
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
    key, lengths = "steps", int_list("phase_steps", f.phase_steps)
  elif f.phase_epochs:
    key, lengths = "epochs", float_list("phase_epochs", f.phase_epochs)
  else:
    raise ValueError(f"--phases needs --phase_epochs or --phase_steps, one per phase. "
                     f"Received: --phases={given} without either")
  rates = (float_list("phase_learning_rates", f.phase_learning_rates)
           or (schedule.base_learning_rate,) * len(f.phases))
  for name, values in ((f"phase_{key}", lengths), ("phase_learning_rates", rates)):
    if len(values) != len(f.phases) or min(values) <= 0:
      raise ValueError(f"--{name} must hold one positive number per phase ({len(f.phases)}: "
                       f"{given}). Received: --{name}={','.join(map(str, values))}")
  return tuple(
      config_lib.PhaseConfig(trainable, trainable=trainable, **{key: length},
                             schedule=dataclasses.replace(schedule, base_learning_rate=rate))
      for trainable, length, rate in zip(f.phases, lengths, rates))


def augmentation_and_resolution(f):
  """The DataConfig fields of the augmentation and resolution flags."""
  return dict(
      eval_image_size=f.eval_image_size,
      train_crop_area_range=float_list("train_crop_area_range", f.train_crop_area_range),
      train_crop_aspect_range=float_list("train_crop_aspect_range", f.train_crop_aspect_range),
      random_flip=f.random_flip, eval_crop_fraction=f.eval_crop_fraction, color_jitter=f.color_jitter,
      autoaugment=f.autoaugment, randaugment_layers=f.randaugment_layers,
      randaugment_magnitude=f.randaugment_magnitude,
      randaugment_magnitude_std=f.randaugment_magnitude_std,
      randaugment_variant=f.randaugment_variant,
      random_erasing_probability=f.random_erasing_probability,
      random_erasing_area_range=float_list("random_erasing_area_range",
                                            f.random_erasing_area_range))


def any_input_size(pooling, data):
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


def num_classes(f, source, saved):
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


def source_and_tfds_name(f, saved):
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

"""The weights a command starts from, and what they say about the model: --pretrained,
--init_checkpoint or the official --pretrained_filepath, resolved to a file and its
WeightsInfo; for a resumed run, the run's own; the variant and VGG layout the file holds."""
from absl import logging

from official_resnet import config as config_lib
from official_resnet import initial_weights
from official_resnet.cli import flag_parsing
from official_resnet.models import weight_sources


PRETRAINED_EXTENSIONS = (".h5", ".pth", ".pt", ".bin", ".safetensors")
WEIGHTS_FLAGS = ("pretrained", "init_checkpoint", "pretrained_filepath")


def given_weights_flags(f):
  """["--pretrained=...", ...]: the weights flags given a value."""
  return [f"--{name}={f[name].value}" for name in WEIGHTS_FLAGS if f[name].value]


def weights_flag(f):
  """The weights flag given (the first, if several), else "pretrained"."""
  return next((name for name in WEIGHTS_FLAGS if f[name].value), "pretrained")


def init_checkpoint_scope(f):
  # The official --pretrained_filepath loads the whole model (Keras load_weights).
  if f.pretrained_filepath and not f["init_checkpoint_scope"].present:
    return "all"
  return f.init_checkpoint_scope


def weights_to_start_from(f, architecture, variant, num_classes):
  """(file, WeightsInfo) of --pretrained (a named set resolved to its file), --init_checkpoint
  or the official --pretrained_filepath, whichever is given (not two); (None, empty
  WeightsInfo) without."""
  given = given_weights_flags(f)
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
    raise ValueError(f"--{weights_flag(f)}: {error}") from error


def resumed_checkpoint(saved, latest_checkpoint):
  """The checkpoint of the run in --model_dir that this command goes on from; None if none.

  It holds every weight, so the command that resumes a run does not read the weights it
  started from again (a file since deleted, a hub that cannot be reached): what they
  implied is in the run's config.json.
  """
  return None if saved is None or saved.train is None else latest_checkpoint


def resumed_run_weights(f, saved, checkpoint):
  """(file, empty WeightsInfo): the weights the resumed run started from, not read again."""
  given = given_weights_flags(f)
  if given:
    logging.info("%s not read: %s holds every weight (the run started from %s).",
                 " and ".join(given), checkpoint, saved.train.init_checkpoint)
  return saved.train.init_checkpoint, weight_sources.WeightsInfo()


def variant(f, architecture, given, info):
  """The ResNet variant given, else the weights' (logged), else --variant's default."""
  if given:
    return given
  if info.variant and architecture.startswith("resnet"):
    logging.info("ResNet variant %s, what %s weights are (--variant).", info.variant, info.source)
    return info.variant
  return f.variant


def vgg_settings(f, architecture, weights):
  """(vgg_batch_norm, pooling, head hidden units): the flags', else what a VGG torch file
  `weights` holds (logged): BatchNorm after its convolutions, and its classic head (pooling
  none, its hidden widths) when neither --pooling nor --head_hidden_units is given and the
  head is loaded (eval, export, --init_checkpoint_scope=all); otherwise a log line says how
  to keep it. A --vgg_batch_norm the file contradicts is refused."""
  hidden_units = flag_parsing.int_list("head_hidden_units", f.head_hidden_units)
  given = (f.vgg_batch_norm, f.pooling, hidden_units)
  layout = (initial_weights.vgg_layout(weights)
            if weights and architecture.startswith("vgg") else None)
  if layout is None:
    return given
  flag = weights_flag(f)
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
  if f.mode in ("eval", "export") or init_checkpoint_scope(f) == "all":
    logging.info("--pooling=none --head_hidden_units=%s: the classic head of %s (%s).", units,
                 weights, ", ".join(layout.hidden_keys))
    return layout.batch_norm, "none", layout.hidden_units
  logging.info("%s has a classic head (%s), which --init_checkpoint_scope=%s leaves out: the "
               "model gets a new head. --pooling=none --head_hidden_units=%s builds the file's "
               "(its weights load with --init_checkpoint_scope=all).", weights,
               ", ".join(layout.hidden_keys), init_checkpoint_scope(f), units)
  return layout.batch_norm, f.pooling, hidden_units


def chosen_over_weights(f, saved):
  """The initial_weights.IMPLIED_FIELDS the flags (or the run in --model_dir) settle, which
  the weights then leave alone."""
  chosen = {"data.normalization": f.normalization or saved is not None,
            "model.conv_padding": f.conv_padding,
            "model.pool_padding": f.pool_padding,
            "data.eval_resize_size": f.eval_resize_size or f["eval_crop_fraction"].present,
            "data.eval_resize_method": f.eval_resize_method}
  return {field for field, given in chosen.items() if given}


def warn_without_weights(f, weights, phases, latest_checkpoint):
  if weights or f.mode not in ("train", "train_and_eval") or latest_checkpoint:
    return
  frozen = any(phase.trainable != config_lib.TRAINABLE_ALL for phase in phases)
  if f.expect_weights or frozen:
    logging.warning(
        "No weights to start from (--pretrained=<weights file or name such as torchvision> or "
        "--init_checkpoint=<our checkpoint or model_dir>): training from scratch%s.",
        ", and frozen layers keep their random initialization" if frozen else "")

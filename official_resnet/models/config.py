"""ModelConfig: what build_model needs, in one frozen dataclass that checks itself."""
import dataclasses

import keras

from input_pipeline import checks
from input_pipeline import constants

ARCHITECTURES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "vgg16", "vgg19")
RESNET_VARIANTS = ("v1", "v1.5")
POOLINGS = ("avg", "max", None)
DTYPE_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
DATA_FORMATS = ("channels_last", "channels_first", None)
# ResNet's strided 3x3 convolutions: "same" is TF's (at stride 2 on an even size, 0 pixels
# before and 1 after); "symmetric" pads kernel_size // 2 on every side, as torchvision and
# timm do, so their weights give their outputs.
CONV_PADDINGS = ("same", "symmetric")
# ResNet's 3x3/2 stem max pool: "same" is the official resnet_model.py's (on the 112 px map,
# 0 pixels before and 1 after); "symmetric" pads 1 on every side, as keras.applications and
# torchvision do. Their weights need theirs: one pixel off, the logits move (docs/weights.md).
POOL_PADDINGS = ("same", "symmetric")


@dataclasses.dataclass(frozen=True)
class HeadConfig:
  """Classifier on top of the pooled/flattened features.

  The classic VGG16 cats-vs-dogs head is HeadConfig((4096, 4096), dropout=0.5).
  """
  hidden_units: tuple[int, ...] = ()
  dropout: float = 0.0
  activation: str = "relu"

  def __post_init__(self):
    for units in self.hidden_units:
      checks.check_int("hidden_units[i]", units, 1)
    checks.check(0 <= self.dropout < 1, "dropout", "in [0, 1)", self.dropout)
    try:
      keras.activations.get(self.activation)
    except ValueError as error:
      raise ValueError("activation must name a Keras activation. "
                       f"Received: {self.activation!r}") from error


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  architecture: str = "resnet50"
  # v1.5: official (stride in the 3x3, no conv bias); v1: keras.applications.
  variant: str = "v1.5"
  num_classes: int = 1000
  image_size: int = 224
  include_top: bool = True
  pooling: str | None = "avg"
  head: HeadConfig = HeadConfig()
  # Channels of the first stage; 64 is the published width, smaller for tests/demos.
  base_width: int = 64
  vgg_batch_norm: bool = False
  zero_init_residual: bool = False
  weight_decay: float = 1e-4
  dtype_policy: str = "float32"
  # When set, the model normalizes raw [0, 255] pixels itself (pipeline uint8 output).
  input_normalization: str | None = None
  # None: keras.config.image_data_format(). The model input stays NHWC either way;
  # channels_first (faster on some GPUs) transposes once after the input.
  data_format: str | None = None
  # BatchNorm layers train with TF's fused kernel (models.layers.FusedBatchNormalization);
  # False: stock keras.layers.BatchNormalization, e.g. for .keras files loaded without us.
  fused_batch_norm: bool = True
  # BatchNorm moments over the global batch (an all-reduce per layer and step) instead of
  # each replica's own part: training then equals one replica on the global batch.
  sync_batch_norm: bool = False
  conv_padding: str = "same"
  # POOL_PADDINGS; None: the variant's (v1.5: same, the official model's; v1: symmetric,
  # keras.applications').
  pool_padding: str | None = None
  # Input [None, None, None, 3]: images of any size (global pooling makes the weights
  # size-free), e.g. to evaluate at another size than image_size, the training size.
  # A flatten head (pooling None with include_top) fixes the size and refuses it.
  any_input_size: bool = False

  def __post_init__(self):
    checks.check_choice("architecture", self.architecture, ARCHITECTURES)
    checks.check_choice("variant", self.variant, RESNET_VARIANTS)
    checks.check_int("num_classes", self.num_classes, 1)
    checks.check_int("image_size", self.image_size, constants.MIN_IMAGE_SIZE)
    checks.check_choice("pooling", self.pooling, POOLINGS)
    checks.check(isinstance(self.head, HeadConfig), "head", "a HeadConfig", self.head)
    checks.check_int("base_width", self.base_width, 1)
    checks.check_positive("weight_decay", self.weight_decay, allow_zero=True)
    checks.check_choice("dtype_policy", self.dtype_policy, DTYPE_POLICIES)
    checks.check_choice("input_normalization", self.input_normalization,
                        constants.NORMALIZATION_MODES + (None,))
    checks.check_choice("data_format", self.data_format, DATA_FORMATS)
    checks.check_choice("conv_padding", self.conv_padding, CONV_PADDINGS)
    checks.check_choice("pool_padding", self.pool_padding, POOL_PADDINGS + (None,))
    for name in ("include_top", "vgg_batch_norm", "zero_init_residual", "fused_batch_norm",
                 "sync_batch_norm", "any_input_size"):
      checks.check(isinstance(getattr(self, name), bool), name, "True or False",
                   getattr(self, name))
    if self.any_input_size and self.include_top and self.pooling is None:
      raise ValueError("any_input_size needs global pooling ('avg' or 'max'): a flatten head's "
                       "weights fix the input size. Received: any_input_size=True, pooling=None")
    if not self.include_top and self.head != HeadConfig():
      raise ValueError("head only applies with include_top=True; leave it at HeadConfig(). "
                       f"Received: include_top=False, head={self.head!r}")

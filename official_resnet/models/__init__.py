"""Model zoo: ResNet v1/v1.5 18-152 and VGG16/19, heads, freezing, weight import."""
from official_resnet.models.builder import build_model
from official_resnet.models.config import HeadConfig
from official_resnet.models.config import ModelConfig
from official_resnet.models.layers import FusedBatchNormalization
from official_resnet.models.layers import InputNormalization
from official_resnet.models.transfer import feature_model
from official_resnet.models.transfer import freeze_backbone
from official_resnet.models.transfer import freeze_below
from official_resnet.models.transfer import unfreeze_all
from official_resnet.models.weights import load_pretrained

__all__ = ["FusedBatchNormalization", "HeadConfig", "InputNormalization", "ModelConfig",
           "build_model", "feature_model", "freeze_backbone", "freeze_below", "load_pretrained",
           "unfreeze_all"]

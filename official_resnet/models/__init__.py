"""Model zoo: ResNet v1/v1.5 18-152 and VGG16/19, heads, freezing, weight import."""
from official_resnet.models.builder import build_model
from official_resnet.models.config import HeadConfig
from official_resnet.models.config import ModelConfig
from official_resnet.models.layers import InputNormalization

__all__ = ["HeadConfig", "InputNormalization", "ModelConfig", "build_model"]

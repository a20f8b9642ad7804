"""torch, torchvision and timm for the parity tests, on torch's CPU wheel.

torchvision's models are plain Python, but the PyPI wheel's compiled ops (_C.so) are
built against torch's CUDA libraries and do not load beside the CPU wheel. torchvision
is made to import without them, except that it registers fake kernels for two of their
operators, nms and qnms, unconditionally, which fails when the library did not define
them. Defining those two schemas first lets the import finish; no test calls them.
"""
import importlib.util
import os

import numpy as np
import torch

_DEFINITIONS = []  # Keeps the Library alive: its definitions go with it.


def _define_missing_torchvision_ops():
  spec = importlib.util.find_spec("torchvision")
  try:
    torch.ops.load_library(os.path.join(os.path.dirname(spec.origin), "_C.so"))
  except OSError:
    library = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
      library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _DEFINITIONS.append(library)


_define_missing_torchvision_ops()

import timm  # noqa: E402  (after the definitions above)
import torchvision  # noqa: E402

__all__ = ["randomize_batch_norm", "timm", "torch", "torchvision", "to_nchw"]


def randomize_batch_norm(model, seed):
  """Statistics and affine parameters far from their fresh values, so a mixed-up one shows."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        channels = module.num_features
        module.running_mean.copy_(torch.rand(channels, generator=generator) - 0.5)
        module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
        module.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
        module.bias.copy_(torch.rand(channels, generator=generator) - 0.5)
  return model


def to_nchw(images):
  return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))

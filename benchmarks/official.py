"""The official tensorflow/models code the benchmarks measure ours against, imported from a folder apart.

tf-models-official's legacy ResNet (resnet_ctl_imagenet_main, imagenet_preprocessing)
needs tf-keras (Keras 2) and tensorflow-model-optimization; the Model Garden's augment ops
(official/vision/ops, tests/test_augment_references.py) need gin-config. Installed with
--no-deps into their own folder, they import beside .venv's TF 2.21 and Keras 3
without changing them:

    .venv/bin/python -m pip install --no-deps --target .official \\
        tf-models-official==2.20.0 tf-keras==2.21.0 tensorflow-model-optimization==0.8.1 \\
        gin-config==0.5.0
"""
import importlib
import os
import sys

DEFAULT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".official")
INSTALL = (".venv/bin/python -m pip install --no-deps --target .official "
           "tf-models-official==2.20.0 tf-keras==2.21.0 tensorflow-model-optimization==0.8.1 "
           "gin-config==0.5.0")
RESNET = "official.legacy.image_classification.resnet"


def import_module(name: str, official_dir: str = DEFAULT_DIR):
  """(module `name` of the official code, None), or (None, why it cannot be imported)."""
  if not os.path.isdir(os.path.join(official_dir, "official")):
    return None, f"no official code in {official_dir}; install it with: {INSTALL}"
  if official_dir not in sys.path:
    # Appended: .venv's TF and Keras 3 come first; the official code and tf-keras from here.
    sys.path.append(official_dir)
  try:
    return importlib.import_module(name), None
  except ImportError as e:
    return None, f"{name} does not import from {official_dir} ({e}); install it with: {INSTALL}"

"""`python -m official_resnet.demo`: `./run.sh demo` (official_resnet/demo/stages.py)."""
from official_resnet import tf_noise
tf_noise.filter_stderr()
from official_resnet.demo import stages  # noqa: E402  (TensorFlow after the filter)

stages.main()

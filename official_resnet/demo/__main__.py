"""`python -m official_resnet.demo`: the demo of `./run.sh demo` (see official_resnet/demo/__init__.py)."""
from official_resnet import tf_noise
tf_noise.filter_stderr()
from official_resnet.demo import main

main()

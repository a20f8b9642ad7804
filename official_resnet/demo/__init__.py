"""`./run.sh demo`: pre-train, transfer with a frozen backbone, export, predict in a new process
(official_resnet/demo/stages.py). Nothing is imported here, so `python -m official_resnet.demo`
filters TensorFlow's start-up noise (tf_noise) before TensorFlow is imported."""

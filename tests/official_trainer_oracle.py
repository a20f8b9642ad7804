"""The official trainer as a test oracle: runs tensorflow/models' resnet_ctl_imagenet_main
setup and its ResnetRunnable's own train loop on given batches, and records what a step does.

    python tests/official_trainer_oracle.py BATCHES.npz RECORD.npz -- OFFICIAL_FLAGS...

BATCHES.npz holds `images` [steps, batch, 224, 224, 3] float32 (already preprocessed),
`labels` [steps, batch], `start_step` (the optimizer step the first batch trains at),
`rate_steps` (steps to evaluate the learning-rate schedule at) and `head_bias` (fc1000's
bias to start from). RECORD.npz gets, by the
official variable names ("res2a_branch2a/kernel"): `state{i}/...` the weights, moving
statistics and momentum slots (`.../momentum`) before step i and after the last; `loss{i}`
the train_loss of step i; `inference_logits{i}` and `training_logits{i}` of the first batch
(the fc1000 outputs) at states 0 and `steps`; `rates` the schedule at `rate_steps`.

A process of its own: the official code defines absl flags that ours define too, and
imports tf_keras (Keras 2) beside Keras 3.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import official  # noqa: E402


def _import_official():
  ctl_main, reason = official.import_module(f"{official.RESNET}.resnet_ctl_imagenet_main")
  if ctl_main is None:
    raise SystemExit(reason)
  return ctl_main


def _variable_name(variable):
  return variable.name.removesuffix(":0")


def _state(runnable):
  """{name: value}: every model variable and every momentum slot the optimizer has made."""
  model, optimizer = runnable.model, runnable.optimizer
  state = {_variable_name(v): v.numpy() for v in model.variables}
  # The slots are made at the first update: none before it (a velocity of zero).
  if "momentum" in optimizer.get_slot_names():
    for variable in model.trainable_variables:
      state[f"{_variable_name(variable)}/momentum"] = optimizer.get_slot(variable, "momentum").numpy()
  state["iterations"] = np.array(optimizer.iterations.numpy())
  return state


def _logits(runnable, images, record, index):
  """fc1000's outputs in inference and training mode; training mode moves the moving
  statistics, which are put back."""
  import tf_keras  # pylint: disable=import-outside-toplevel
  model = runnable.model
  logits_model = tf_keras.Model(model.inputs, model.get_layer("fc1000").output)
  record[f"inference_logits{index}"] = logits_model(images, training=False).numpy()
  statistics = [(v, v.numpy()) for v in model.non_trainable_variables]
  record[f"training_logits{index}"] = logits_model(images, training=True).numpy()
  for variable, value in statistics:
    variable.assign(value)


def main(batches_path, record_path, official_flags):
  ctl_main = _import_official()
  # pylint: disable=import-outside-toplevel
  import tensorflow as tf
  import tf_keras
  from official.common import distribute_utils
  from official.legacy.image_classification.resnet import common
  from official.legacy.image_classification.resnet import resnet_runnable
  from official.modeling import performance
  from official.utils.flags import core as flags_core
  from official.utils.misc import keras_utils
  # pylint: enable=import-outside-toplevel
  batches = np.load(batches_path)
  common.define_keras_flags()
  flags_obj = flags.FLAGS
  flags_obj(["resnet_ctl_imagenet_main", *official_flags])
  # resnet_ctl_imagenet_main.run()'s setup, as a user's run makes it.
  keras_utils.set_session_config(enable_xla=flags_obj.enable_xla)
  performance.set_mixed_precision_policy(flags_core.get_tf_dtype(flags_obj))
  tf_keras.backend.set_image_data_format(flags_obj.data_format or "channels_last")
  strategy = distribute_utils.get_distribution_strategy(
      distribution_strategy=flags_obj.distribution_strategy, num_gpus=flags_obj.num_gpus)
  per_epoch_steps, _, _ = ctl_main.get_num_train_iterations(flags_obj)
  time_callback = keras_utils.TimeHistory(flags_obj.batch_size, flags_obj.log_steps)
  with distribute_utils.get_strategy_scope(strategy):
    runnable = resnet_runnable.ResnetRunnable(flags_obj, time_callback, per_epoch_steps)
  images, labels = batches["images"], batches["labels"]
  steps = len(images)
  # Its own train loop (orbit's StandardTrainer.train), fed these batches in order.
  runnable.train_dataset = strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensor_slices((images, labels)))
  runnable.optimizer.iterations.assign(int(batches["start_step"]))
  runnable.model.get_layer("fc1000").bias.assign(batches["head_bias"])
  record = {}
  _logits(runnable, images[0], record, 0)
  time_callback.on_train_begin()
  for step in range(steps):
    record.update({f"state{step}/{name}": value for name, value in _state(runnable).items()})
    outputs = runnable.train(tf.constant(1, tf.int32))
    record[f"loss{step}"] = np.array(outputs["train_loss"])
  record.update({f"state{steps}/{name}": value for name, value in _state(runnable).items()})
  _logits(runnable, images[0], record, steps)
  # Called in a graph, as its optimizer calls it (eagerly, its piecewise part is a callable).
  rate = tf.function(runnable.optimizer.learning_rate,
                     input_signature=[tf.TensorSpec([], tf.int64)])
  record["rates"] = np.array([float(rate(step)) for step in batches["rate_steps"]])
  np.savez(record_path, **record)


if __name__ == "__main__":
  separator = sys.argv.index("--")
  main(sys.argv[1], sys.argv[2], sys.argv[separator + 1:])

"""Each private TF/Keras internal official_resnet/private_apis.py uses, run as we use it: one
of these failing after an upgrade names the internal that moved or changed."""
import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.distribute import collective_all_reduce_strategy
from tensorflow.python.eager import context as eager_context

from official_resnet import private_apis


def test_the_strategy_keeps_a_coordination_service_configured_before_it():
  """configure_coordination_service works only because MultiWorkerMirroredStrategy configures
  the service itself only when there is none yet, with the arguments our copy passes."""
  source = inspect.getsource(
      collective_all_reduce_strategy.CollectiveAllReduceExtended._initialize_multi_worker)
  assert "if context.context().coordination_service is None:" in source
  assert 'service_type="standalone"' in source and "coordinated_jobs=" in source
  parameters = inspect.signature(eager_context.Context.configure_coordination_service).parameters
  assert {"service_type", "service_leader", "coordinated_jobs",
          "heartbeat_timeout_in_ms"} <= set(parameters)


def test_coordination_pieces_build_the_jobs_and_leader_of_a_cluster():
  spec = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
  job = private_apis.coordination_config_pb2.CoordinatedJob(name="worker", num_tasks=2)
  assert (job.name, job.num_tasks) == ("worker", 2)
  assert private_apis.multi_worker_util.coordination_leader(spec) == "/job:chief/replica:0/task:0"
  # A process that started no cluster has no service, hence no timeout.
  assert private_apis.heartbeat_timeout_s() is None


@pytest.mark.parametrize("replicas", [1, 2])
def test_apply_if_applies_or_leaves_everything_as_it_was(replicas):
  if replicas == 1:
    strategy = tf.distribute.get_strategy()
  else:
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())
  with strategy.scope():
    variable = tf.Variable([1.0, 2.0])
    optimizer = keras.optimizers.SGD(learning_rate=0.5, momentum=0.9)
    optimizer.build([variable])

  @tf.function
  def step(apply_update):
    def replica_step():
      private_apis.apply_if(optimizer, apply_update, [tf.constant([1.0, 1.0])], [variable])
    strategy.run(replica_step)

  step(tf.constant(False))
  np.testing.assert_array_equal(variable.numpy(), [1.0, 2.0])
  assert int(optimizer.iterations.numpy()) == 0
  step(tf.constant(True))
  # Each replica's gradient share is summed: 0.5 * replicas.
  np.testing.assert_allclose(variable.numpy(), np.array([1.0, 2.0]) - 0.5 * replicas)
  assert int(optimizer.iterations.numpy()) == 1


def test_a_checkpoints_object_graph_names_each_layers_variables(tmp_path):
  """checkpoint_object_graph: the trainer's tf.train.Checkpoint(model=...) keeps the model's
  layers under model/_operations, each with its variables' full names and checkpoint keys
  (what models/weights.py loads a checkpoint by)."""
  inputs = keras.Input((4,))
  model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(
      keras.layers.Dense(5, name="hidden")(inputs)))
  prefix = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
  reader = tf.train.load_checkpoint(prefix)
  graph = private_apis.checkpoint_object_graph(reader)

  def child(node_id, name):
    return next(c.node_id for c in graph.nodes[node_id].children if c.local_name == name)

  operations = graph.nodes[child(child(0, "model"), "_operations")].children
  stored = {attribute.full_name: reader.get_tensor(attribute.checkpoint_key)
            for operation in operations
            for variable in graph.nodes[operation.node_id].children
            for attribute in graph.nodes[variable.node_id].attributes}
  assert sorted(stored) == ["hidden/bias", "hidden/kernel", "logits/bias", "logits/kernel"]
  np.testing.assert_array_equal(stored["logits/kernel"], model.get_layer("logits").kernel.numpy())


def test_build_without_weights_leaves_no_variable_to_initialize_later():
  def build():
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(3)(inputs))

  # pylint: disable=protected-access
  model = private_apis.build_without_weights(build)
  assert model.count_params() == 15
  assert all(variable._value is None for variable in model.weights)
  # The next scope's exit initializes what is listed then: nothing of the model above.
  with keras.StatelessScope():
    pass
  assert all(variable._value is None for variable in model.weights)

"""Every private TensorFlow or Keras internal official_resnet uses, in one place.

Each was checked on TensorFlow 2.21.0 with Keras 3.15.1; tests/test_private_apis.py runs each
one and fails, naming it, when an upgrade moves or changes it. Where a public API appears
that does the same, the function here goes and its callers use that.
"""
import keras
from keras.src.backend.common import global_state as keras_global_state
import tensorflow as tf
from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
from tensorflow.core.protobuf import trackable_object_graph_pb2
from tensorflow.python.distribute import multi_worker_util
from tensorflow.python.eager import context as eager_context


def configure_coordination_service(cluster_spec, heartbeat_timeout_s):
  """What MultiWorkerMirroredStrategy configures itself, with our heartbeat timeout.

  MultiWorkerMirroredStrategy has no public way to set its heartbeat timeout, so this is a
  copy of the private block in tensorflow/python/distribute/collective_all_reduce_strategy.py
  (TF 2.21.0) that configures the coordination service, run before the strategy is built
  (the strategy then keeps the service it finds). `cluster_spec`: ClusterSpec.as_dict().
  """
  jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=len(cluster_spec[job]))
          for job in ("chief", "worker") if job in cluster_spec]
  eager_context.context().configure_coordination_service(
      service_type="standalone",
      service_leader=multi_worker_util.coordination_leader(cluster_spec),
      coordinated_jobs=jobs, heartbeat_timeout_in_ms=int(heartbeat_timeout_s * 1000))


def heartbeat_timeout_s():
  """The heartbeat timeout of this process's coordination service; None before it has one.

  Reads the eager context's private coordination_service config (TF 2.21.0).
  """
  service = eager_context.context().coordination_service
  return service.heartbeat_timeout_in_ms / 1000 if service is not None else None


def apply_if(optimizer, apply_update, gradients, variables):
  """In replica context: optimizer.apply(gradients, variables) when `apply_update` (a bool
  tensor, equal on every replica), else nothing at all, not even the iteration count.

  A copy of how Keras 3.15's LossScaleOptimizer skips a step (keras/src/optimizers/
  loss_scale_optimizer.py): the cond runs in replica context where the strategy needs no
  merge_call (tf.__internal__.distribute.strategy_supports_no_merge_call, TF 2.21.0), else
  in cross-replica context through merge_call.
  """

  def apply(gradients):
    optimizer.apply(gradients, variables)

  if tf.__internal__.distribute.strategy_supports_no_merge_call():
    tf.cond(apply_update, lambda: apply(gradients), lambda: None)
    return

  def cross_replica(distribution, gradients, apply_update):
    apply_update = distribution.experimental_local_results(apply_update)[0]
    tf.cond(apply_update,
            lambda: distribution.extended.call_for_each_replica(apply, args=(gradients,)),
            lambda: None)

  tf.distribute.get_replica_context().merge_call(cross_replica, args=(gradients, apply_update))


# Where tf.train.Checkpoint stores its object graph (TF 2.21.0's base.OBJECT_GRAPH_PROTO_KEY).
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


def checkpoint_object_graph(reader):
  """The TrackableObjectGraph proto of the checkpoint `reader` (tf.train.load_checkpoint) reads:
  each object's children by local name and its variables' full names and checkpoint keys.
  No public API lists which layer a stored variable belongs to (TF 2.21.0)."""
  graph = trackable_object_graph_pb2.TrackableObjectGraph()
  graph.ParseFromString(reader.get_tensor(OBJECT_GRAPH_KEY))
  return graph


def build_without_weights(build):
  """build() in a keras.StatelessScope whose variables never get values (shapes only).

  Keras 3.15 lists variables made in a StatelessScope (keras/src/backend/common/variables.py,
  register_uninitialized_variable) and draws their initial values when the outermost scope
  exits, the next one's included (every symbolic layer call opens one): left listed, a
  model built here would be initialized by the next model's build. They are taken off.
  """
  listed = list(keras_global_state.get_global_attribute("uninitialized_variables") or [])
  with keras.StatelessScope(initialize_variables=False):
    built = build()
  keras_global_state.set_global_attribute("uninitialized_variables", listed)
  return built

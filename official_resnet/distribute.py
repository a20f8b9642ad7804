"""tf.distribute strategies from a RuntimeConfig, and who among the workers is the chief.

multi_worker_mirrored finds its cluster, in this order, from --worker_hosts and
--task_index, from TF_CONFIG, or from Slurm's environment (srun with more than
one task); with none of them it runs as a single worker.
"""
import os

from absl import logging
import tensorflow as tf

from official_resnet import config as config_lib
from official_resnet import private_apis

_MIRRORED_CROSS_DEVICE_OPS = {
    "nccl": tf.distribute.NcclAllReduce,
    "hierarchical_copy": tf.distribute.HierarchicalCopyAllReduce,
}
_COLLECTIVE_IMPLEMENTATIONS = {
    None: tf.distribute.experimental.CommunicationImplementation.AUTO,
    "ring": tf.distribute.experimental.CommunicationImplementation.RING,
    "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
}
# First port srun tasks on one node listen on; SlurmClusterResolver offsets it per task.
SLURM_PORT_BASE = 8888


def _in_slurm_job_step():
  return "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1


def cluster_resolver(runtime):
  """The ClusterResolver multi_worker_mirrored uses for `runtime`."""
  resolvers = tf.distribute.cluster_resolver
  if runtime.worker_hosts:
    spec = tf.train.ClusterSpec({"worker": list(runtime.worker_hosts)})
    return resolvers.SimpleClusterResolver(spec, task_type="worker", task_id=runtime.task_index,
                                           rpc_layer="grpc")
  if os.environ.get("TF_CONFIG"):
    return resolvers.TFConfigClusterResolver()
  if _in_slurm_job_step():
    if runtime.num_gpus:
      # Each task gets num_gpus of its node's GPUs through CUDA_VISIBLE_DEVICES.
      return resolvers.SlurmClusterResolver(port_base=SLURM_PORT_BASE, gpus_per_task=runtime.num_gpus)
    # The resolver lays tasks out over GPU slots; CPU tasks get one placeholder slot each.
    return resolvers.SlurmClusterResolver(
        port_base=SLURM_PORT_BASE, gpus_per_node=int(os.environ["SLURM_STEP_NUM_TASKS"]),
        gpus_per_task=1, auto_set_gpu=False)
  return resolvers.TFConfigClusterResolver()


# --num_gpus=-1: every GPU visible, as the official flag means.
ALL_GPUS = -1


def resolve_devices(distribution_strategy, num_gpus, visible_gpus):
  """(strategy, num_gpus) for what the user gave (None: not given) and the GPUs visible.

  Nothing given: every visible GPU under `mirrored`, or the CPU (`off`) when there is
  none. A strategy given alone gets every visible GPU (one for `one_device`); num_gpus
  -1 is every visible GPU. Given values are kept as they are, and checked where the
  strategy is built.
  """
  if num_gpus is not None and num_gpus < ALL_GPUS:
    raise ValueError(f"num_gpus must be -1 (all visible GPUs) or >= 0. Received: {num_gpus}")
  if num_gpus is None or num_gpus == ALL_GPUS:
    num_gpus = visible_gpus
    if distribution_strategy in ("off", "one_device"):
      num_gpus = min(num_gpus, 1)
  if distribution_strategy is None:
    distribution_strategy = "mirrored" if num_gpus else "off"
    if num_gpus:
      logging.info("Running on %d GPU(s) with --distribution_strategy=mirrored.", num_gpus)
    elif visible_gpus:
      logging.info("--num_gpus=0: running on the CPU (--distribution_strategy=off).")
    else:
      logging.info("No GPU visible: running on the CPU (--distribution_strategy=off).")
  return distribution_strategy, num_gpus


def _mirrored_devices(num_gpus):
  if num_gpus:
    available = len(tf.config.list_logical_devices("GPU"))
    if available < num_gpus:
      raise ValueError(
          f"num_gpus must be at most the {available} GPUs visible. Received: {num_gpus}")
    return [f"/device:GPU:{i}" for i in range(num_gpus)]
  return [device.name for device in tf.config.list_logical_devices("CPU")]


def _mirrored_strategy(runtime):
  devices = _mirrored_devices(runtime.num_gpus)
  alg = runtime.all_reduce_alg
  if alg is None and not runtime.num_gpus:
    # CPU replicas: reducing on one device needs no collective ops. TF's default
    # collectives also clash between two MirroredStrategy objects of one process
    # (the second reuses the first's instance keys, a shape mismatch if its steps differ).
    alg = "reduction_to_one_device"
  if alg is None:
    cross_device_ops = None
  elif alg == "reduction_to_one_device":
    cross_device_ops = tf.distribute.ReductionToOneDevice()
  else:
    cross_device_ops = _MIRRORED_CROSS_DEVICE_OPS[alg](num_packs=runtime.num_packs)
  return tf.distribute.MirroredStrategy(devices=devices, cross_device_ops=cross_device_ops)


def heartbeat_timeout_s():
  """The heartbeat timeout of this process's coordination service; None before it has one."""
  return private_apis.heartbeat_timeout_s()


def _multi_worker_strategy(runtime):
  resolver = cluster_resolver(runtime)
  spec = resolver.cluster_spec().as_dict()
  # As the strategy does: only chief and worker tasks take part (a single worker has neither).
  if resolver.task_type in ("chief", "worker"):
    # TF's default (10 s) declares a worker dead when its host is busy for 10 s (a CPU-bound
    # input pipeline, tracing on few cores), which aborts every worker's collectives.
    private_apis.configure_coordination_service(spec, runtime.heartbeat_timeout_s)
  options = tf.distribute.experimental.CommunicationOptions(
      implementation=_COLLECTIVE_IMPLEMENTATIONS[runtime.all_reduce_alg])
  strategy = tf.distribute.MultiWorkerMirroredStrategy(
      cluster_resolver=resolver, communication_options=options)
  logging.info("multi_worker_mirrored: worker %s of %s, %d replicas in sync, heartbeat "
               "timeout %s s", strategy.cluster_resolver.task_id, num_workers(strategy),
               strategy.num_replicas_in_sync, heartbeat_timeout_s())
  return strategy


def _tpu_strategy(runtime):
  resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=runtime.tpu)
  if runtime.tpu not in ("", "local"):
    tf.config.experimental_connect_to_cluster(resolver)
  tf.tpu.experimental.initialize_tpu_system(resolver)
  return tf.distribute.TPUStrategy(resolver)


def build_strategy(runtime):
  """The tf.distribute.Strategy for `runtime` (a RuntimeConfig)."""
  name = runtime.distribution_strategy
  if name == "off":
    return tf.distribute.get_strategy()
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy("/device:GPU:0" if runtime.num_gpus else "/device:CPU:0")
  if name == "mirrored":
    return _mirrored_strategy(runtime)
  if name == "multi_worker_mirrored":
    return _multi_worker_strategy(runtime)
  if name == "tpu":
    return _tpu_strategy(runtime)
  raise ValueError(f"distribution_strategy must be one of {config_lib.STRATEGIES}. Received: {name!r}")


def num_workers(strategy):
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return 1
  spec = resolver.cluster_spec().as_dict()
  return max(1, sum(len(spec.get(job, ())) for job in ("chief", "worker")))


def is_chief(strategy):
  """Whether this process writes checkpoints, summaries and config for the whole cluster."""
  if num_workers(strategy) == 1:
    return True
  resolver = strategy.cluster_resolver
  has_chief_job = "chief" in resolver.cluster_spec().as_dict()
  if has_chief_job:
    return resolver.task_type == "chief"
  return resolver.task_type in (None, "worker") and resolver.task_id in (None, 0)


def task_name(strategy):
  """"chief_0", "worker_1"...: unique per process of the cluster."""
  if num_workers(strategy) == 1:
    return "chief_0"
  resolver = strategy.cluster_resolver
  return f"{resolver.task_type}_{resolver.task_id}"


def make_replica_mean(strategy, variables):
  """tf.function() setting every replica's copy of each of `variables` to the copies' mean;
  None when there is one replica or nothing to average."""
  if strategy.num_replicas_in_sync == 1 or not variables:
    return None

  def replica_means():
    # One replica-context all-reduce of the whole list: the strategy packs values of any
    # shapes into few collectives. strategy.reduce would stack them, which fails under
    # MultiWorkerMirroredStrategy as soon as two variables differ in shape.
    return tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.MEAN, [tf.identity(variable) for variable in variables])

  @tf.function
  def assign_means():
    means = strategy.run(replica_means)
    for variable, mean in zip(variables, means):
      # Every replica holds the same mean; the cross-replica assign writes it to each copy.
      variable.assign(strategy.experimental_local_results(mean)[0])

  return assign_means

import json
import pytest
import tensorflow as tf

from official_resnet import config as config_lib
from official_resnet import distribute


def runtime(**kwargs):
  return config_lib.RuntimeConfig(**{"num_gpus": 0, **kwargs})


def test_local_strategies_and_their_replicas():
  assert distribute.build_strategy(runtime(distribution_strategy="off")).num_replicas_in_sync == 1
  one = distribute.build_strategy(runtime(distribution_strategy="one_device"))
  assert isinstance(one, tf.distribute.OneDeviceStrategy)
  # num_gpus=0: mirrored over every logical CPU device (conftest makes two).
  mirrored = distribute.build_strategy(
      runtime(distribution_strategy="mirrored", all_reduce_alg="reduction_to_one_device"))
  assert isinstance(mirrored, tf.distribute.MirroredStrategy)
  assert mirrored.num_replicas_in_sync == 2
  assert distribute.is_chief(mirrored) and distribute.num_workers(mirrored) == 1


def test_more_gpus_than_visible_is_refused():
  with pytest.raises(ValueError, match=r"num_gpus must be at most the 0 GPUs visible. Received: 2"):
    distribute.build_strategy(runtime(distribution_strategy="mirrored", num_gpus=2))


def test_runtime_config_names_bad_values_and_combinations():
  with pytest.raises(ValueError, match=r"distribution_strategy must be one of \('off', .*Received: 'horovod'"):
    runtime(distribution_strategy="horovod")
  with pytest.raises(ValueError, match=r"all_reduce_alg \(with mirrored\) must be one of \('nccl', "
                                       r"'hierarchical_copy', 'reduction_to_one_device'\). Received: 'ring'"):
    runtime(distribution_strategy="mirrored", all_reduce_alg="ring")
  with pytest.raises(ValueError, match="all_reduce_alg applies to distribution_strategy in"):
    runtime(distribution_strategy="off", all_reduce_alg="nccl")
  with pytest.raises(ValueError, match=r"task_index must be in \[0, 2\) for 2 worker_hosts. Received: 2"):
    runtime(distribution_strategy="multi_worker_mirrored", worker_hosts=("a:1", "b:2"), task_index=2)
  with pytest.raises(ValueError, match="uses at most one GPU"):
    runtime(distribution_strategy="one_device", num_gpus=2)
  with pytest.raises(ValueError, match=r"heartbeat_timeout_s must be > 0. Received: 0"):
    runtime(distribution_strategy="multi_worker_mirrored", heartbeat_timeout_s=0)


def test_cluster_from_worker_hosts_flags(monkeypatch):
  monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["x:1"]}, "task": {"type": "worker", "index": 0}}))
  resolver = distribute.cluster_resolver(runtime(
      distribution_strategy="multi_worker_mirrored", worker_hosts=("h0:2222", "h1:2222"), task_index=1))
  # The flags win over TF_CONFIG.
  assert resolver.cluster_spec().as_dict() == {"worker": ["h0:2222", "h1:2222"]}
  assert (resolver.task_type, resolver.task_id) == ("worker", 1)


def test_cluster_from_tf_config(monkeypatch):
  monkeypatch.setenv("TF_CONFIG", json.dumps(
      {"cluster": {"chief": ["c:1"], "worker": ["w:1", "w:2"]}, "task": {"type": "worker", "index": 1}}))
  resolver = distribute.cluster_resolver(runtime(distribution_strategy="multi_worker_mirrored"))
  assert resolver.cluster_spec().as_dict() == {"chief": ["c:1"], "worker": ["w:1", "w:2"]}
  assert (resolver.task_type, resolver.task_id) == ("worker", 1)


def test_cluster_from_slurm_environment(monkeypatch):
  # What srun -N2 --ntasks-per-node=1 sets for its second task.
  monkeypatch.delenv("TF_CONFIG", raising=False)
  for name, value in {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2",
                      "SLURM_STEP_NODELIST": "node[07-08]", "SLURM_STEP_TASKS_PER_NODE": "1(x2)"}.items():
    monkeypatch.setenv(name, value)
  resolver = distribute.cluster_resolver(runtime(distribution_strategy="multi_worker_mirrored"))
  assert isinstance(resolver, tf.distribute.cluster_resolver.SlurmClusterResolver)
  port = distribute.SLURM_PORT_BASE
  assert resolver.cluster_spec().as_dict() == {"worker": [f"node07:{port}", f"node08:{port}"]}
  assert (resolver.task_type, resolver.task_id) == ("worker", 1)

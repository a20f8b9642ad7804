"""The tensorflow/models ResNet flags that have no name of ours, and what each does here.

Scripts written for the official resnet_ctl_imagenet_main.py (its flags come from
official/utils/flags and common.define_keras_flags) run unchanged. main.py defines
these flags and reads them; this module holds what they mean, without FLAGS:

- IMPLEMENTED: flags with the official effect (cli/ applies each);
- INERT: flags accepted with one log line saying what the official code would
  have done and why nothing does it here;
- the official model names (--model, --resnet_size, --resnet_version) as our
  --architecture and --variant;
- the environment the official code sets for --tf_gpu_thread_mode.
"""
from official_resnet.cli.table import flag

# What travels with the weights (normalization, padding, eval resize): the settings each
# weights flag sets, ours (cli/flag_table.py) and the official --pretrained_filepath.
WEIGHTS_FIELDS = ("data.normalization", "train.init_checkpoint", "model.conv_padding",
                  "model.pool_padding", "data.eval_resize_size", "data.eval_resize_method")

IMPLEMENTED = (
    flag("skip_eval", "boolean", False,
         help="Train without evaluating (train_and_eval -> train)."),
    flag("clean", "boolean", False,
         help="Train modes: delete what model_dir holds first (refused while a trainer runs "
              "there)."),
    flag("pretrained_filepath", "string", "", sets=WEIGHTS_FIELDS,
         help="Weights to start from, the whole model by default (official load_weights): "
              "--init_checkpoint with --init_checkpoint_scope=all unless that is given."),
    flag("enable_checkpoint_and_export", "boolean", False, sets=("export.export_dir",),
         help="Export a SavedModel to model_dir/saved_model/<N> when training ends (unless "
              "--export_dir says where); checkpoints are written either way."),
    flag("profile_steps", "string", None, sets=("train.profile_steps",),
         help="first,last: trace these training steps (1-based) with the TensorBoard profiler "
              "into model_dir/train, e.g. 2,4."),
    flag("eval_dataset_cache", "boolean", False, sets=("data.eval_cache",),
         help="Keep the evaluation records in memory after the first pass."),
    flag("tf_data_experimental_slack", "boolean", False, sets=("data.experimental_slack",),
         help="Training input: tf.data's experimental_slack option."),
    flag("tf_gpu_thread_mode", "string", None,
         help="GPU kernel launch threads, e.g. gpu_private: sets TF_GPU_THREAD_MODE (and "
              "TF_GPU_THREAD_COUNT), as the official code does."),
    flag("per_gpu_thread_count", "integer", 0,
         help="Threads per GPU with --tf_gpu_thread_mode (0: 2, the official default)."),
    flag("batchnorm_spatial_persistent", "boolean", True,
         help="When given: true sets TF_USE_CUDNN_BATCHNORM_SPATIAL_PERSISTENT=1 for cuDNN's "
              "batch norm, false unsets it (official default true; here only when given)."),
    flag("use_tf_function", "boolean", True,
         help="false runs the train and eval steps eagerly (tf.config.run_functions_eagerly), "
              "for debugging."),
    flag("run_eagerly", "boolean", False,
         help="Same as --use_tf_function=false."),
    flag("model", "string", None, sets=("model.architecture", "model.variant"),
         help="Official model preset: resnet50_v1.5 (= --architecture=resnet50 --variant=v1.5)."),
    flag("resnet_size", "string", None, sets=("model.architecture",),
         help="Official ResNet depth, 18/34/50/101/152 (= --architecture=resnetN)."),
    flag("resnet_version", "string", None, sets=("model.variant",),
         help="Official ResNet version: 1 (stride in the 3x3, = --variant=v1.5); 2 "
              "(pre-activation) is not built here."),
)

_BENCHMARK_REASON = ("would log or upload benchmark results (PerfZero, BigQuery); there is no "
                     "benchmark logger here: stats.json and the log lines hold the figures")
INERT = {
    "enable_eager": (
        flag("enable_eager", "boolean", False, help="Accepted; TF 2 is eager already."),
        "would enable eager execution; TF 2 runs eagerly already, and the steps are tf.functions "
        "(--use_tf_function=false runs them eagerly)"),
    "set_learning_phase_to_train": (
        flag("set_learning_phase_to_train", "boolean", True,
             help="Accepted; Keras 3 has no global learning phase."),
        "would set Keras' global learning phase; Keras 3 has none: every call passes training="),
    "explicit_gpu_placement": (
        flag("explicit_gpu_placement", "boolean", False,
             help="Accepted; TF places the steps itself."),
        "would wrap a strategy-less run in tf.device('/GPU:0'); TF already places it on the first "
        "GPU, and --distribution_strategy=one_device pins it"),
    "use_trivial_model": (
        flag("use_trivial_model", "boolean", False, help="Accepted; no trivial model here."),
        "would train a one-layer model to time the input; time the input with python -m "
        "benchmarks.pipeline instead"),
    "report_accuracy_metrics": (
        flag("report_accuracy_metrics", "boolean", True,
             help="Accepted; accuracy is always reported."),
        "would switch the accuracy metrics on or off; here top-1/top-5 come from each step's "
        "logits at no extra cost and are always reported"),
    "use_tensor_lr": (
        flag("use_tensor_lr", "boolean", True, help="Accepted; the rate is always a tensor."),
        "would choose a tensor learning rate over a callback; the schedule here is always a "
        "tensor function of the step"),
    "use_tf_while_loop": (
        flag("use_tf_while_loop", "boolean", True,
             help="Accepted; the train function always loops in the graph."),
        "would choose a tf.while_loop over a Python loop for --steps_per_loop steps; the train "
        "function here always runs them in a tf.while_loop"),
    "single_l2_loss_op": (
        flag("single_l2_loss_op", "boolean", False, help="Accepted; L2 is added per layer."),
        "would sum the L2 loss in one op over every non-BatchNorm weight; here the layers' "
        "regularizers add it (--weight_decay): every conv kernel, the dense kernel and its bias, "
        "the same sum"),
    "enable_get_next_as_optional": (
        flag("enable_get_next_as_optional", "boolean", False,
             help="Accepted; evaluation handles partial batches already."),
        "would let the distributed iterator end on a partial batch; evaluation here already sees "
        "every image once, and training input never ends"),
    "fp16_implementation": (
        flag("fp16_implementation", "string", "keras",
             help="Accepted; --dtype=fp16 uses the Keras mixed policy."),
        "would choose 'graph_rewrite' (TF 1's mixed-precision graph rewrite, gone from TF 2.21) "
        "or 'keras'; --dtype=fp16 here is always the Keras mixed_float16 policy"),
    "benchmark_logger_type": (
        flag("benchmark_logger_type", "string", "BaseBenchmarkLogger", help="Accepted; no logger."),
        _BENCHMARK_REASON),
    "benchmark_test_id": (
        flag("benchmark_test_id", "string", None, help="Accepted; no logger."),
        _BENCHMARK_REASON),
    "benchmark_log_dir": (
        flag("benchmark_log_dir", "string", None, help="Accepted; no logger."),
        _BENCHMARK_REASON),
    "gcp_project": (
        flag("gcp_project", "string", None, help="Accepted; no upload."),
        _BENCHMARK_REASON),
    "bigquery_data_set": (
        flag("bigquery_data_set", "string", "test_benchmark", help="Accepted; no upload."),
        _BENCHMARK_REASON),
    "bigquery_run_table": (
        flag("bigquery_run_table", "string", "benchmark_run", help="Accepted; no upload."),
        _BENCHMARK_REASON),
    "bigquery_run_status_table": (
        flag("bigquery_run_status_table", "string", "benchmark_run_status",
             help="Accepted; no upload."),
        _BENCHMARK_REASON),
    "bigquery_metric_table": (
        flag("bigquery_metric_table", "string", "benchmark_metric", help="Accepted; no upload."),
        _BENCHMARK_REASON),
}

# The rows of every official flag, for the flag table.
FLAGS = (*IMPLEMENTED, *(row for row, _ in INERT.values()))

# --model presets -> (architecture, variant).
MODEL_PRESETS = {"resnet50_v1.5": ("resnet50", "v1.5")}
RESNET_SIZES = ("18", "34", "50", "101", "152")
# The official code's version 1 strides in the 3x3 convolution: our v1.5.
RESNET_VERSIONS = {"1": "v1.5"}
# The official default of --per_gpu_thread_count=0.
DEFAULT_GPU_THREAD_COUNT = 2
DATASET_THREADS_PER_GPU = 8


def inert_message(name, value):
  """The log line of inert flag `name` given as `value`."""
  shown = str(value).lower() if isinstance(value, bool) else value
  return f"--{name}={shown} {INERT[name][1]}; nothing changes."


def parse_profile_steps(value):
  """'first,last' -> (first, last), ValueError naming the flag otherwise."""
  parts = value.split(",")
  try:
    steps = tuple(int(part) for part in parts)
  except ValueError:
    steps = ()
  if len(steps) != 2 or not 1 <= steps[0] <= steps[1]:
    raise ValueError("--profile_steps must be two step numbers first,last with 1 <= first <= "
                     f"last, e.g. 2,4. Received: --profile_steps={value}")
  return steps


def architecture_and_variant(model, resnet_size, resnet_version):
  """{"architecture": ..., "variant": ...} the official model flags ask for (None: not given)."""
  wanted = {}
  if model is not None:
    if model not in MODEL_PRESETS:
      raise ValueError(f"--model must be one of {tuple(MODEL_PRESETS)} (MobileNet is not built "
                       f"here; see --architecture). Received: --model={model}")
    wanted["architecture"], wanted["variant"] = MODEL_PRESETS[model]
  if resnet_size is not None:
    if resnet_size not in RESNET_SIZES:
      raise ValueError(f"--resnet_size must be one of {RESNET_SIZES}. Received: "
                       f"--resnet_size={resnet_size}")
    wanted["architecture"] = f"resnet{resnet_size}"
  if resnet_version is not None:
    if resnet_version not in RESNET_VERSIONS:
      raise ValueError(f"--resnet_version must be one of {tuple(RESNET_VERSIONS)} (version 2, "
                       f"pre-activation, is not built here). Received: "
                       f"--resnet_version={resnet_version}")
    wanted["variant"] = RESNET_VERSIONS[resnet_version]
  return wanted


def gpu_thread_environment(mode, per_gpu_thread_count):
  """The environment of the official set_gpu_thread_mode_and_count: per_gpu_thread_count
  (default 2) kernel-launch threads of its own for each GPU."""
  count = per_gpu_thread_count or DEFAULT_GPU_THREAD_COUNT
  return {"TF_GPU_THREAD_MODE": mode, "TF_GPU_THREAD_COUNT": str(count)}


def datasets_private_threads(per_gpu_thread_count, num_gpus, private_threads, cpu_count):
  """The input pipeline's threads next to private GPU threads, as the official code sets them.

  Without --datasets_num_private_threads: what the cores leave, min(cores - GPU threads -
  one runtime thread per GPU, 8 per GPU); None (the shared pool) when nothing is left.
  """
  if private_threads or not num_gpus:
    return private_threads
  count = per_gpu_thread_count or DEFAULT_GPU_THREAD_COUNT
  left = cpu_count - count * num_gpus - num_gpus
  return min(left, DATASET_THREADS_PER_GPU * num_gpus) if left > 0 else None

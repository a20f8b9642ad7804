"""Side-by-side throughput: our ResNet train step, keras.applications `fit`, the machine's ceiling.

    python -m benchmarks.train_step --output=benchmarks/results_cpu.json
    python -m benchmarks.train_step --quick --items='train/*'   # seconds, tiny sizes

Every item runs in its own subprocess, so its peak RSS is its own and threads
or oneDNN settings cannot leak from one item into the next. An item's figure
is the median images/s (or GFLOP/s) over `num_windows` timed windows after
warm-up; with `rounds` > 1 the whole item list runs that many times and an
item's figure is its median round. Real-data train items time the synthetic
batches in turn with the real ones, window by window in the same process, and
their ratio to synthetic is the median over those pairs. FLOPs per image are
counted from the Conv2D/Dense kernel shapes of the model that ran (2 per
multiply-add; BN, ReLU, pooling and residual adds are left out, under 1% for
ResNet-50); training counts 3x forward (forward, input gradient, weight gradient).
A recipe-cost train item times the step with MixUp/CutMix, with the weight average and
with both, in turn with the plain step in one process, and reports each against it.
An official_train item runs the official `resnet_ctl_imagenet_main` trainer's train
loop (tf-models-official, installed apart into --official_dir; benchmarks/official.py)
on its synthetic batch, in the same rounds as ours; the summary divides our train item
of the same precision, XLA and steps per call by it.
"""
import argparse
import dataclasses
import datetime
import fnmatch
import importlib.metadata
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import logging

from benchmarks import official

# Name -> (Keras dtype policy of the models, tensor dtype of the ceiling ops).
PRECISIONS = {"fp32": ("float32", "float32"),
              "bf16": ("mixed_bfloat16", "bfloat16"),
              "fp16": ("mixed_float16", "float16")}
KINDS = ("conv_ceiling", "matmul_ceiling", "train", "official_train", "keras_fit", "inference",
         "savedmodel_jpeg")
INPUTS = ("synthetic", "real")
PRESETS = ("cpu", "full", "gpu")
TRAIN_FLOPS_PER_FORWARD = 3
# Generated real-data set: enough files that file-level interleave has work to spread.
REAL_DATA_SHARDS = 8
# Targets, checked in the summary of every run.
TARGETS = {"fp32_over_keras_fit": 1.3,
           "fp32_fraction_of_conv_ceiling": 0.8,
           "bf16_over_fp32": 1.6,
           "real_over_synthetic": 0.95,
           "train_over_official": 1.15,
           # MixUp/CutMix and the weight average cost at most 3% of the step.
           "recipe_over_plain": 0.97}
# Train steps a recipe-cost item times beside the plain one: the TrainConfig fields each
# sets (timm's A3 mixing, the Model Garden's average decay).
RECIPE_VARIANTS = {
    "mixup_cutmix": {"mixup_alpha": 0.1, "cutmix_alpha": 1.0},
    "ema": {"ema_decay": 0.9999},
    "mixup_cutmix_ema": {"mixup_alpha": 0.1, "cutmix_alpha": 1.0, "ema_decay": 0.9999},
}
_RESULT_VERSION = 1
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
  """Sizes and repetitions shared by every item of one run."""
  batch_size: int = 32
  image_size: int = 224
  architecture: str = "resnet50"
  base_width: int = 64
  # Steps run before timing (at least one call, which traces and compiles).
  warmup_steps: int = 3
  num_windows: int = 5
  # Times the whole item list runs; an item's figure is its median round. Items a few
  # minutes apart saw this 2-core VM's speed drift by 10%, so each item samples the run's span.
  rounds: int = 1
  # Each timed window is as many whole calls as fill about this long.
  window_seconds: float = 15.0
  # The "many steps per call" setting; the other train items use 1.
  long_steps_per_loop: int = 10
  # Ceiling convolution NHWC input [N, H, W, C_in] and C_out: conv3_x-like, 3x3, stride 1.
  conv_shape: tuple[int, int, int, int, int] = (32, 56, 56, 256, 256)
  matmul_size: int = 4096
  # Real-data input: TFRecords in this directory, else generated into work_dir.
  data_dir: str | None = None
  train_file_pattern: str = "train-*"
  work_dir: str = os.path.join(tempfile.gettempdir(), "official_resnet_benchmark")
  num_real_images: int = 1024
  inter_op_threads: int | None = None
  intra_op_threads: int | None = None
  # Real-data input: a private tf.data thread pool of this size (main's
  # --datasets_num_private_threads); None shares the runtime's inter-op pool.
  input_private_threads: int | None = None
  # Extra environment of every item's subprocess, e.g. (("TF_ENABLE_ONEDNN_OPTS", "0"),).
  env: tuple[tuple[str, str], ...] = ()
  item_timeout_s: float = 3600.0
  # Where the official code is installed (official_train items only; benchmarks/official.py).
  official_dir: str = official.DEFAULT_DIR


# Small enough that the whole quick preset runs in about a minute on 2 cores. ResNet-18:
# the same train step, traced in a third of ResNet-50's time.
QUICK_CONFIG = BenchmarkConfig(
    batch_size=4, image_size=32, architecture="resnet18", base_width=8, warmup_steps=2,
    num_windows=2, window_seconds=0.2, long_steps_per_loop=2, conv_shape=(2, 16, 16, 16, 16),
    matmul_size=128, num_real_images=16)


@dataclasses.dataclass(frozen=True)
class Item:
  """One measurement; its name is derived from the fields so it cannot disagree with them."""
  kind: str
  precision: str = "fp32"
  xla: bool = False
  input: str = "synthetic"
  steps_per_loop: int = 1
  # train: False builds stock keras BatchNormalization layers, to show what the fused ones buy.
  fused_batch_norm: bool = True
  # train: "v1" is keras.applications' network (stride in the 1x1, conv biases), for a
  # comparison with `fit` on the same network; v1.5 has 6% more FLOPs.
  variant: str = "v1.5"
  # train: time the RECIPE_VARIANTS steps in turn with the plain one (figures: all of them).
  recipe_cost: bool = False

  @property
  def name(self) -> str:
    parts = [self.kind]
    if self.kind in ("train", "official_train", "keras_fit"):
      parts.append(self.input)
    parts.append(self.precision)
    if self.xla:
      parts.append("xla")
    if self.kind in ("train", "official_train"):
      parts.append(f"spl{self.steps_per_loop}")
      if not self.fused_batch_norm:
        parts.append("stock_bn")
      if self.variant != "v1.5":
        parts.append(self.variant)
      if self.recipe_cost:
        parts.append("recipe_cost")
    return "/".join(parts)


def _check_choice(name, value, allowed):
  if value not in allowed:
    raise ValueError(f"`{name}` must be one of {tuple(allowed)}. Received: {name}={value!r}")


def _check_positive(name, value):
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")


def validate(config: BenchmarkConfig, items) -> None:
  """Raises ValueError naming the first bad field of `config` or `items`."""
  for field in ("batch_size", "base_width", "warmup_steps", "num_windows", "rounds",
                "long_steps_per_loop", "matmul_size", "num_real_images"):
    _check_positive(field, getattr(config, field))
  if not config.window_seconds > 0:
    raise ValueError(f"`window_seconds` must be > 0. Received: window_seconds={config.window_seconds!r}")
  if config.image_size < 32:
    raise ValueError(f"`image_size` must be >= 32. Received: image_size={config.image_size!r}")
  if len(config.conv_shape) != 5:
    raise ValueError("`conv_shape` must be (N, H, W, C_in, C_out). "
                     f"Received: conv_shape={config.conv_shape!r}")
  for size in config.conv_shape:
    _check_positive("conv_shape[i]", size)
  if config.input_private_threads is not None:
    _check_positive("input_private_threads", config.input_private_threads)
  for threads in ("inter_op_threads", "intra_op_threads"):
    value = getattr(config, threads)
    if value is not None and (not isinstance(value, int) or value < 0):
      raise ValueError(f"`{threads}` must be None or an integer >= 0. "
                       f"Received: {threads}={value!r}")
  if not items:
    raise ValueError("`items` must name at least one item. Received: items=()")
  for item in items:
    _check_choice("kind", item.kind, KINDS)
    _check_choice("precision", item.precision, PRECISIONS)
    _check_choice("input", item.input, INPUTS)
    _check_positive("steps_per_loop", item.steps_per_loop)
    if item.recipe_cost and item.kind != "train":
      raise ValueError(f"`recipe_cost` applies to kind='train' only. Received: kind={item.kind!r}")
    if item.kind == "official_train" and (item.input, item.variant, item.fused_batch_norm,
                                          item.recipe_cost) != ("synthetic", "v1.5", True, False):
      raise ValueError("An official_train item runs the official model on its synthetic batch: "
                       "input, variant, fused_batch_norm and recipe_cost keep their defaults. "
                       f"Received: {item!r}")


def preset_items(preset: str, config: BenchmarkConfig) -> list[Item]:
  """The items of a preset, ceilings first so the fractions can use them."""
  _check_choice("preset", preset, PRESETS)
  many = config.long_steps_per_loop
  if preset == "gpu":
    # Mixed precision + XLA is the GPU recipe; fp32 stays as the baseline.
    precisions = ("fp32", "bf16", "fp16")
    return ([Item(kind, p) for kind in ("conv_ceiling", "matmul_ceiling") for p in precisions]
            + [Item("train", p, xla=True, steps_per_loop=many) for p in precisions]
            + [Item("train", "fp32", steps_per_loop=many, recipe_cost=True),
               Item("train", "fp16", steps_per_loop=many),
               Item("train", "fp16", xla=True, input="real", steps_per_loop=many),
               Item("official_train", "fp16", xla=True, steps_per_loop=many),
               Item("keras_fit", "fp16", xla=True),
               Item("inference", "fp16", xla=True),
               Item("savedmodel_jpeg", "fp32")])
  precisions = ("fp32", "bf16")
  ceilings = [Item(kind, p) for kind in ("conv_ceiling", "matmul_ceiling") for p in precisions]
  others = ([Item("keras_fit", p) for p in precisions]
            + [Item("inference", p) for p in precisions]
            + [Item("savedmodel_jpeg", "fp32")])
  if preset == "full":
    ceilings += [Item(kind, p, xla=True) for kind in ("conv_ceiling", "matmul_ceiling")
                 for p in precisions]
    train = [Item("train", p, xla, source, spl)
             for source in INPUTS for p in precisions for xla in (False, True)
             for spl in (1, many)]
    train += [Item("official_train", p, xla, steps_per_loop=spl)
              for p in precisions for xla in (False, True) for spl in (1, many)]
    others += [Item(kind, p, xla=True) for kind in ("keras_fit", "inference") for p in precisions]
  else:
    # One axis at a time from fp32/synthetic/no XLA/many steps per call. XLA
    # items take one step per call: XLA's CPU convolutions are several times
    # slower than oneDNN's, and a 10-step call would take minutes.
    train = [Item("train", "fp32", steps_per_loop=1),
             Item("train", "fp32", steps_per_loop=many),
             Item("train", "fp32", steps_per_loop=many, recipe_cost=True),
             Item("train", "fp32", steps_per_loop=many, variant="v1"),
             Item("train", "fp32", steps_per_loop=many, fused_batch_norm=False),
             Item("train", "fp32", xla=True, steps_per_loop=1),
             Item("train", "bf16", steps_per_loop=many),
             Item("train", "bf16", steps_per_loop=many, fused_batch_norm=False),
             Item("train", "bf16", xla=True, steps_per_loop=1),
             Item("train", "fp32", input="real", steps_per_loop=many),
             Item("train", "bf16", input="real", steps_per_loop=many),
             Item("official_train", "fp32", steps_per_loop=1),
             Item("official_train", "fp32", steps_per_loop=many),
             Item("official_train", "bf16", steps_per_loop=many)]
  return ceilings + train + others


def select_items(items, patterns: str | None) -> list[Item]:
  """Items whose name matches one of the comma-separated glob `patterns` (all when None)."""
  if not patterns:
    return list(items)
  globs = [p.strip() for p in patterns.split(",") if p.strip()]
  chosen = [item for item in items if any(fnmatch.fnmatchcase(item.name, g) for g in globs)]
  if not chosen:
    raise ValueError(f"`items` matched no item; names are {[i.name for i in items]}. "
                     f"Received: items={patterns!r}")
  return chosen


# --------------------------------------------------------------------------- parent side


def run_benchmark(config: BenchmarkConfig, items, output_path: str | None = None) -> dict:
  """Runs each item in a subprocess, returns the report and writes it as JSON to `output_path`."""
  validate(config, items)
  os.makedirs(config.work_dir, exist_ok=True)
  machine = machine_info()
  if machine["load_average_1m"] > 0.5:
    logging.warning("Load average %.2f before the run: other processes share the CPU, "
                    "so these figures are not clean.", machine["load_average_1m"])
  data_dir = None
  if any(item.input == "real" or item.kind == "savedmodel_jpeg" for item in items):
    data_dir = config.data_dir or _generate_real_data(config)
  started = datetime.datetime.now(datetime.timezone.utc)
  passes = {item.name: [] for item in items}
  for round_index in range(config.rounds):
    for item in items:
      logging.info("Benchmark item %s (round %d/%d)", item.name, round_index + 1, config.rounds)
      passes[item.name].append(_run_in_subprocess(item, config, data_dir))
      logging.info("%s: %s", item.name, _describe(passes[item.name][-1]))
  results = [merge_rounds(passes[item.name]) for item in items]
  _add_ceiling_fractions(results)
  report = {
      "version": _RESULT_VERSION,
      "argv": sys.argv[1:],
      "started_utc": started.isoformat(timespec="seconds"),
      "wall_seconds": round((datetime.datetime.now(datetime.timezone.utc) - started)
                            .total_seconds(), 1),
      "machine": machine,
      "config": dataclasses.asdict(config),
      "real_data_dir": data_dir,
      "flop_convention": ("2 FLOPs per multiply-add of every Conv2D/Dense kernel, counted "
                          "from the model that ran; training = 3 x forward"),
      "items": results,
      "summary": summarize(results),
  }
  if output_path:
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    with open(output_path, "w") as f:
      json.dump(report, f, indent=2)
    logging.info("Wrote %s", output_path)
  return report


def machine_info() -> dict:
  """What the figures depend on: CPU model and vector extensions, cores, versions, load."""
  cpu_model, flags = platform.processor(), set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
          cpu_model = value.strip()
        elif key.strip() == "flags":
          flags = set(value.split())
  except OSError:
    pass
  gpus = []
  if shutil.which("nvidia-smi"):
    query = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                           capture_output=True, text=True, check=False)
    gpus = [line.strip() for line in query.stdout.splitlines() if line.strip()]
  try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False, cwd=os.path.dirname(__file__)).stdout.strip()
  except OSError:
    commit = ""
  versions = {}
  for package in ("tensorflow", "keras"):
    try:
      versions[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      versions[package] = None
  return {
      "cpu": cpu_model,
      "cpu_count": os.cpu_count(),
      "cpu_flags": sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2", "fma"))),
      "gpus": gpus,
      "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
      "python": platform.python_version(),
      **versions,
      "git_commit": commit or None,
      "load_average_1m": round(os.getloadavg()[0], 2),
  }


def _generate_real_data(config):
  """Photo-like JPEG TFRecords from benchmarks.pipeline's generator, kept across runs."""
  from benchmarks import pipeline as pipeline_benchmark  # pylint: disable=import-outside-toplevel
  data_dir = os.path.join(config.work_dir, f"photos_{config.num_real_images}")
  pipeline_benchmark.ensure_data(data_dir, config.num_real_images, num_shards=REAL_DATA_SHARDS,
                                 processes=os.cpu_count())
  return data_dir


def _run_in_subprocess(item, config, data_dir):
  spec_dir = tempfile.mkdtemp(prefix="item_", dir=config.work_dir)
  spec_path = os.path.join(spec_dir, "spec.json")
  result_path = os.path.join(spec_dir, "result.json")
  log_path = os.path.join(spec_dir, "log.txt")
  with open(spec_path, "w") as f:
    json.dump({"item": dataclasses.asdict(item), "config": dataclasses.asdict(config),
               "data_dir": data_dir, "result_path": result_path}, f)
  # The repository root first on the path: `-m benchmarks.train_step` imports from any cwd.
  python_path = os.pathsep.join(p for p in (_REPO_ROOT, os.environ.get("PYTHONPATH")) if p)
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
         "PYTHONPATH": python_path, **dict(config.env)}
  record = {"name": item.name, **dataclasses.asdict(item),
            "load_average_before": round(os.getloadavg()[0], 2)}
  start = time.perf_counter()
  with open(log_path, "w") as log:
    try:
      process = subprocess.run(
          [sys.executable, "-m", "benchmarks.train_step", "--run_item", spec_path],
          stdout=log, stderr=subprocess.STDOUT, env=env, timeout=config.item_timeout_s,
          check=False)
      returncode = process.returncode
    except subprocess.TimeoutExpired:
      returncode = None
  record["wall_seconds"] = round(time.perf_counter() - start, 1)
  if returncode == 0 and os.path.exists(result_path):
    with open(result_path) as f:
      record.update(json.load(f))
    shutil.rmtree(spec_dir)
  else:
    with open(log_path) as f:
      tail = f.read()[-2000:]
    record.update(status="failed", reason=f"exit status {returncode}; log {log_path}",
                  log_tail=tail)
  return record


def _figure(record):
  return record.get("images_per_second", record.get("gflops_per_second"))


def merge_rounds(records):
  """One item's records from every round -> the median round's record, with every round's figure.

  The median round (the lower one of an even count) is a whole measurement, so its
  fields stay consistent with each other; the windows of all rounds give the spread.
  A failed round fails the item.
  """
  failed = [r for r in records if r.get("status") != "ok"]
  if failed or len(records) == 1:
    return failed[0] if failed else records[0]
  merged = dict(sorted(records, key=_figure)[(len(records) - 1) // 2])
  merged["round_figures"] = [_figure(r) for r in records]
  for windows in ("window_images_per_second", "real_over_synthetic_windows"):
    if windows in merged:
      merged[windows] = [value for r in records for value in r[windows]]
  merged["peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in records)
  merged["wall_seconds"] = round(sum(r["wall_seconds"] for r in records), 1)
  return merged


def _conv_ceilings(results):
  """precision -> the fastest conv_ceiling item (with or without XLA): the machine's ceiling."""
  best = {}
  for r in results:
    if r["kind"] == "conv_ceiling" and r.get("status") == "ok":
      if r["gflops_per_second"] > best.get(r["precision"], {}).get("gflops_per_second", 0):
        best[r["precision"]] = r
  return best


def _add_ceiling_fractions(results):
  """Each train item's GFLOP/s over the conv (training mix) ceiling of its precision."""
  ceilings = _conv_ceilings(results)
  for r in results:
    if r.get("status") == "ok" and r["kind"] in ("train", "official_train", "keras_fit") \
        and r["precision"] in ceilings:
      r["fraction_of_conv_ceiling"] = round(
          r["gflops_per_second"] / ceilings[r["precision"]]["gflops_per_second"], 3)


def summarize(results) -> dict:
  """The target ratios from the items that ran; each names the items it used."""
  ok = [r for r in results if r.get("status") == "ok"]

  def best(**fields):
    matching = [r for r in ok if all(r[k] == v for k, v in fields.items())]
    return max(matching, key=lambda r: r["images_per_second"], default=None)

  def ratio(name, numerator, denominator, value_key="images_per_second"):
    if numerator is None or denominator is None:
      return None
    return _checked_ratio(name, numerator[value_key] / denominator[value_key],
                          numerator["name"], denominator["name"])

  # Our trainer as it runs by default: v1.5 with the fused batch norm; the v1, stock_bn
  # and recipe-cost items are comparisons, not the step the targets are about.
  fp32 = best(kind="train", input="synthetic", precision="fp32", variant="v1.5",
              fused_batch_norm=True, recipe_cost=False)
  bf16 = best(kind="train", input="synthetic", precision="bf16", variant="v1.5",
              fused_batch_norm=True, recipe_cost=False)
  keras_fit = best(kind="keras_fit", input="synthetic", precision="fp32")
  conv = _conv_ceilings(results).get("fp32")
  summary = {
      "fp32_over_keras_fit": ratio("fp32_over_keras_fit", fp32, keras_fit),
      # The same network as keras.applications.ResNet50, so only the trainer differs.
      "fp32_v1_over_keras_fit": ratio(
          "fp32_over_keras_fit",
          best(kind="train", input="synthetic", precision="fp32", variant="v1"), keras_fit),
      "fp32_fraction_of_conv_ceiling": ratio("fp32_fraction_of_conv_ceiling", fp32, conv,
                                             value_key="gflops_per_second"),
      "bf16_over_fp32": ratio("bf16_over_fp32", bf16, fp32),
  }
  for real in (r for r in ok if r["kind"] == "train" and r["input"] == "real"):
    # The median over the item's window pairs (real, then the synthetic batches in turn).
    summary[f"real_over_synthetic/{real['precision']}"] = _checked_ratio(
        "real_over_synthetic", statistics.median(real["real_over_synthetic_windows"]),
        real["name"], f"{real['name']}, synthetic windows in turn")
  for theirs in (r for r in ok if r["kind"] == "official_train"):
    # Our step on the same batch size, precision, XLA and steps per call; only where the
    # networks match (224 px ResNet-50 v1.5: the official model is fixed there).
    ours = best(kind="train", input="synthetic", precision=theirs["precision"],
                xla=theirs["xla"], steps_per_loop=theirs["steps_per_loop"], variant="v1.5",
                fused_batch_norm=True, recipe_cost=False)
    if ours and math.isclose(ours["forward_flops_per_image"],
                             theirs["forward_flops_per_image"], rel_tol=0.01):
      settings = theirs["name"].split("/", 2)[2]
      summary[f"train_over_official/{settings}"] = ratio("train_over_official", ours, theirs)
      # CPU seconds per image, theirs over ours: steadier where other work shares the cores.
      summary[f"train_over_official_cpu/{settings}"] = _checked_ratio(
          "train_over_official",
          theirs["cpu_seconds_per_image"] / ours["cpu_seconds_per_image"],
          f"{ours['name']} (CPU s/image)", f"{theirs['name']} (CPU s/image)")
  for recipe in (r for r in ok if r["kind"] == "train" and r["recipe_cost"]):
    # The median over the item's window turns of each variant's images/s over the plain step's.
    for variant, ratios in recipe["over_plain_windows"].items():
      summary[f"{variant}_over_plain/{recipe['precision']}"] = _checked_ratio(
          "recipe_over_plain", statistics.median(ratios), f"{recipe['name']}: {variant}",
          f"{recipe['name']}: plain, in turn")
    # The plain step with the added work timed alone added to it: the same ratio, modelled.
    step = recipe["plain_step_seconds"]
    for variant, seconds in recipe["added_seconds_per_step"].items():
      summary[f"{variant}_added_over_plain/{recipe['precision']}"] = _checked_ratio(
          "recipe_over_plain", step / (step + seconds), f"{recipe['name']}: {variant} alone",
          f"{recipe['name']}: plain, in turn")
  return {k: v for k, v in summary.items() if v is not None}


def _checked_ratio(target_name, value, numerator_name, denominator_name):
  target = TARGETS[target_name]
  return {"value": round(value, 3), "target": target, "met": value >= target,
          "numerator": numerator_name, "denominator": denominator_name}


def _describe(r):
  if r.get("status") != "ok":
    return f"{r.get('status')}: {r.get('reason')}"
  if "images_per_second" in r:
    return f"{r['images_per_second']:.2f} images/s"
  return f"{r['gflops_per_second']:.1f} GFLOP/s"


def format_table(report: dict) -> str:
  """The report as a fixed-width table plus the acceptance lines."""
  header = ("item", "images/s", "min-max", "GFLOP/s", "of conv", "cores", "CPU s/image",
            "RSS MiB", "note")
  rows = [header]
  for r in report["items"]:
    if r.get("status") != "ok":
      rows.append((r["name"], "-", "-", "-", "-", "-", "-", "-",
                   f"{r.get('status')}: {r.get('reason')}"))
      continue
    rates = r.get("window_images_per_second")
    note = ""
    if r["kind"] == "conv_ceiling":
      note = f"fwd+dgrad+wgrad; fwd only {r['forward_gflops_per_second']:.1f}"
    elif r["kind"] == "savedmodel_jpeg":
      note = "JPEG decode + eval crop + model"
    elif r["kind"] in ("train", "official_train", "keras_fit", "inference"):
      note = f"{r['forward_flops_per_image'] / 1e9:.3g} GFLOP/image forward"
      if r["kind"] == "official_train":
        note += f"; official ResNet-50 at {r['image_size']} px"
      if "synthetic_in_turn" in r:
        note += f"; synthetic in turn {r['synthetic_in_turn']['images_per_second']:.2f}"
      if "variants_in_turn" in r:
        note += "; in turn: " + ", ".join(
            f"{name} {variant['images_per_second']:.2f}"
            for name, variant in r["variants_in_turn"].items())
        note += "; alone: " + ", ".join(
            f"{name} {seconds * 1000:.1f} ms" for name, seconds in r["added_seconds_per_step"].items())
    rows.append((
        r["name"],
        f"{r['images_per_second']:.2f}" if rates else "-",
        f"{min(rates):.2f}-{max(rates):.2f}" if rates else "-",
        f"{r['gflops_per_second']:.1f}" if "gflops_per_second" in r else "-",
        f"{r['fraction_of_conv_ceiling']:.2f}" if "fraction_of_conv_ceiling" in r else "-",
        f"{r['cores_busy']:.2f}",
        f"{r['cpu_seconds_per_image']:.4g}" if rates else "-",
        f"{r['peak_rss_bytes'] / 2**20:.0f}",
        note))
  widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
  lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
  for name, s in report["summary"].items():
    lines.append(f"{name}: {s['value']:.3f} (target >= {s['target']}, "
                 f"{'met' if s['met'] else 'NOT met'}; {s['numerator']} / {s['denominator']})")
  return "\n".join(lines)


# --------------------------------------------------------------------------- child side


def forward_flops_per_image(model, layer_types=None) -> int:
  """2 x the multiply-adds of every Conv2D and Dense kernel (or of `layer_types`) for one image.

  Counted from the layers' kernel and output shapes rather than quoted, so
  the figure matches the exact model (v1 vs v1.5, width, image size).
  """
  import keras  # pylint: disable=import-outside-toplevel
  layer_types = layer_types or (keras.layers.Conv2D, keras.layers.Dense)
  multiply_adds = 0
  for layer in _nested_layers(model):
    if isinstance(layer, layer_types):
      # Per output position a kernel does prod(kernel.shape) multiply-adds
      # (kh * kw * C_in/groups * C_out for a convolution).
      positions = layer.output.shape[1:-1]
      if getattr(layer, "data_format", None) == "channels_first":
        positions = layer.output.shape[2:]
      multiply_adds += math.prod(layer.kernel.shape) * math.prod(positions)
  return 2 * multiply_adds


def _nested_layers(layer):
  for sub in getattr(layer, "layers", ()):
    yield sub
    yield from _nested_layers(sub)


def _cpu_seconds():
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def _window_stats(window_seconds, window_cpu_seconds, images_per_window):
  rates = [images_per_window / seconds for seconds in window_seconds]
  return {"images_per_second": statistics.median(rates),
          "window_images_per_second": [round(rate, 3) for rate in rates],
          "images_per_window": images_per_window,
          "cores_busy": sum(window_cpu_seconds) / sum(window_seconds),
          # Less sensitive than images/s to other processes taking turns on the cores.
          "cpu_seconds_per_image":
              sum(window_cpu_seconds) / (len(window_seconds) * images_per_window)}


def _measure(call, config, images_per_call, warmup_calls):
  """Warm-up calls, then `num_windows` timed windows of whole calls."""
  return _measure_in_turn({"": call}, config, images_per_call, warmup_calls)[""]


def _measure_in_turn(calls, config, images_per_call, warmup_calls):
  """name -> stats for each of `calls` (name -> call), their timed windows taking turns.

  `call()` returns a tensor whose numpy() waits for the call's work. A window
  holds as many calls as fill about `window_seconds`, judged from the first
  call's last warm-up call, so fast and slow items take similar time and every
  window is long against timer and host jitter. Taking turns window by window
  lets the machine's drift hit every call alike.
  """
  last_warmup_seconds = {}
  for name, call in calls.items():
    for _ in range(max(1, warmup_calls)):
      start = time.perf_counter()
      call().numpy()
      last_warmup_seconds[name] = time.perf_counter() - start
  first_call_seconds = next(iter(last_warmup_seconds.values()))
  calls_per_window = max(1, math.ceil(config.window_seconds / first_call_seconds))
  seconds, cpu = {name: [] for name in calls}, {name: [] for name in calls}
  for _ in range(config.num_windows):
    for name, call in calls.items():
      start, cpu_start = time.perf_counter(), _cpu_seconds()
      for _ in range(calls_per_window):
        output = call()
      output.numpy()
      seconds[name].append(time.perf_counter() - start)
      cpu[name].append(_cpu_seconds() - cpu_start)
  return {name: _window_stats(seconds[name], cpu[name], calls_per_window * images_per_call)
          for name in calls}


def _with_flops(stats, forward_flops, flops_per_image_factor):
  return {**stats, "forward_flops_per_image": forward_flops,
          "gflops_per_second":
              stats["images_per_second"] * flops_per_image_factor * forward_flops / 1e9}


def _model_config(item, config):
  from official_resnet.models import ModelConfig  # pylint: disable=import-outside-toplevel
  return ModelConfig(architecture=config.architecture, image_size=config.image_size,
                     base_width=config.base_width, dtype_policy=PRECISIONS[item.precision][0],
                     fused_batch_norm=item.fused_batch_norm, variant=item.variant)


def _data_config(item, config, data_dir):
  from input_pipeline import DataConfig  # pylint: disable=import-outside-toplevel
  if item.input == "real":
    return DataConfig(source="imagenet", data_dir=data_dir, batch_size=config.batch_size,
                      image_size=config.image_size,
                      train_file_pattern=config.train_file_pattern,
                      private_threads=config.input_private_threads)
  return DataConfig(source="synthetic", batch_size=config.batch_size,
                    image_size=config.image_size)


def train_batches(item, config, data_dir, trainer=None):
  """Training batches; "synthetic" is one batch of the synthetic source held in memory.

  Repeating one batch measures the step alone, as the official
  --use_synthetic_data does (our synthetic source decodes JPEGs per image); like its
  from_tensors(batch).repeat(), it holds the batch alone, not the pipeline that made it.
  With `trainer`, the batches have the dtype its train step takes (uint8 where
  it normalizes them on the device), as Trainer.train feeds it.
  """
  from input_pipeline import build_dataset  # pylint: disable=import-outside-toplevel
  data = _data_config(item, config, data_dir)
  if trainer is not None:
    data = dataclasses.replace(data, output_dtype=trainer.train_input.data_config.output_dtype)
  dataset = build_dataset(data, training=True)
  if item.input == "synthetic":
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    dataset = tf.data.Dataset.from_tensors(dataset.take(1).get_single_element()).repeat()
  return dataset


def _runtime_config(config_lib, item):
  """A GPU through one_device, else the default strategy ("off": no replica bookkeeping)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  gpus = len(tf.config.list_physical_devices("GPU"))
  # one_device's input iterator prefetches batches onto the GPU, hiding the host-to-device copy.
  return config_lib.RuntimeConfig(
      distribution_strategy="one_device" if gpus else "off", num_gpus=min(gpus, 1),
      enable_xla=item.xla)


def build_train_function(item, config, data_dir, **train_overrides):
  """(trainer, train_function): our Trainer for `item` and its step_sums_function.

  `train_overrides`: TrainConfig fields (a RECIPE_VARIANTS entry).
  """
  from official_resnet import config as config_lib  # pylint: disable=import-outside-toplevel
  from official_resnet import trainer as trainer_lib  # pylint: disable=import-outside-toplevel
  experiment = config_lib.ExperimentConfig(
      data=_data_config(item, config, data_dir),
      model=_model_config(item, config),
      # Nothing is written there: the benchmark calls the train function, not Trainer.train.
      train=config_lib.TrainConfig(model_dir=os.path.join(config.work_dir, "model_dir"),
                                   steps_per_loop=item.steps_per_loop, **train_overrides),
      runtime=_runtime_config(config_lib, item))
  trainer = trainer_lib.Trainer(experiment)
  return trainer, step_sums_function(trainer)


def step_sums_function(trainer):
  """(iterator, num_steps) -> the steps' summed loss, from the function Trainer.train calls.

  numpy() on what it returns waits for the steps.
  """
  train_function = trainer.make_train_function()
  return lambda iterator, num_steps: train_function(iterator, num_steps)["loss_sum"]


def steps_on_input(trainer, train_function, item, config, data_dir, num_steps):
  """() -> step sums of `num_steps` steps on `item`'s input; numpy() on them waits for the steps.

  The train function runs on our iterator instead of Trainer.train's epoch bookkeeping.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  batches = train_batches(item, config, data_dir, trainer)
  iterator = iter(trainer.strategy.distribute_datasets_from_function(lambda _: batches))
  steps = tf.constant(num_steps, tf.int32)
  return lambda: train_function(iterator, steps)


def _train(item, config, data_dir):
  """Our trainer's train function on our model, `steps_per_loop` steps per call."""
  if item.recipe_cost:
    return _train_recipe_cost(item, config, data_dir)
  trainer, train_function = build_train_function(item, config, data_dir)
  # Real input is timed in turns with the synthetic batches, in one process,
  # so its ratio to synthetic is free of the machine's drift between items.
  inputs = ("real", "synthetic") if item.input == "real" else (item.input,)
  stats = _measure_in_turn(
      {name: steps_on_input(trainer, train_function, dataclasses.replace(item, input=name),
                            config, data_dir, item.steps_per_loop)
       for name in inputs}, config,
      item.steps_per_loop * config.batch_size,
      warmup_calls=math.ceil(config.warmup_steps / item.steps_per_loop))
  result = _with_flops(stats[item.input], forward_flops_per_image(trainer.model),
                       TRAIN_FLOPS_PER_FORWARD)
  if item.input == "real":
    synthetic = stats["synthetic"]
    result["synthetic_in_turn"] = {key: synthetic[key] for key in (
        "images_per_second", "window_images_per_second", "cpu_seconds_per_image")}
    result["real_over_synthetic_windows"] = [
        round(real / synth, 4) for real, synth in zip(result["window_images_per_second"],
                                                      synthetic["window_images_per_second"])]
  return result


def _train_recipe_cost(item, config, data_dir):
  """The plain step and each RECIPE_VARIANTS step, timed window by window in turn.

  The figures are the step with every variant on (the last); `variants_in_turn` and
  `over_plain_windows` hold each variant's windows and their ratios to the plain step's.
  `added_seconds_per_step` times the added work alone, many calls a window: the mixing
  (draw, images, targets) on the batch, and one update of the weight average. Those
  short calls suffer less from other processes on the machine than whole steps do.
  """
  calls, trainer = {}, None
  for name, overrides in {"plain": {}, **RECIPE_VARIANTS}.items():
    trainer, train_function = build_train_function(item, config, data_dir, **overrides)
    calls[name] = steps_on_input(trainer, train_function, item, config, data_dir,
                                 item.steps_per_loop)
  stats = _measure_in_turn(calls, config, item.steps_per_loop * config.batch_size,
                           warmup_calls=math.ceil(config.warmup_steps / item.steps_per_loop))
  plain = stats["plain"]["window_images_per_second"]
  result = _with_flops(stats["mixup_cutmix_ema"], forward_flops_per_image(trainer.model),
                       TRAIN_FLOPS_PER_FORWARD)
  result["variants_in_turn"] = {variant: {key: stats[variant][key] for key in (
      "images_per_second", "window_images_per_second", "cpu_seconds_per_image")}
      for variant in calls}
  result["over_plain_windows"] = {
      variant: [round(rate / base, 4) for rate, base in zip(
          stats[variant]["window_images_per_second"], plain)]
      for variant in RECIPE_VARIANTS}
  added = {name: 1.0 / _measure(call, config, 1, warmup_calls=2)["images_per_second"]
           for name, call in _added_work(trainer, item, config, data_dir).items()}
  added["mixup_cutmix_ema"] = added["mixup_cutmix"] + added["ema"]
  plain_step_seconds = config.batch_size / stats["plain"]["images_per_second"]
  result["added_seconds_per_step"] = added
  result["plain_step_seconds"] = plain_step_seconds
  return result


def _added_work(trainer, item, config, data_dir):
  """name -> call: the work a RECIPE_VARIANTS step adds to the plain one, on its own."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from input_pipeline import preprocessing  # pylint: disable=import-outside-toplevel
  from official_resnet import mixing  # pylint: disable=import-outside-toplevel
  images, labels = next(iter(train_batches(item, config, data_dir, trainer)))
  images = preprocessing.normalize(images, trainer.train_input.data_config.normalization)
  size, num_classes = config.image_size, trainer.config.model.num_classes

  @tf.function
  def mix():
    lam, use_cutmix, box = mixing.sample(tf.constant([1, 2]), config.batch_size, size, size,
                                         trainer.mix_settings)
    mixed = mixing.mix_images(images, lam, use_cutmix, box)
    targets = mixing.mix_targets(labels, num_classes, lam)
    return tf.reduce_sum(mixed) + tf.reduce_sum(targets)

  @tf.function
  def average():
    trainer.ema.update()
    return trainer.ema.state.num_updates.read_value()

  return {"mixup_cutmix": mix, "ema": average}


def _keras_fit(item, config, data_dir):
  """keras.applications.ResNet50(weights=None), compile + fit, on the synthetic batches."""
  import keras  # pylint: disable=import-outside-toplevel
  keras.mixed_precision.set_global_policy(PRECISIONS[item.precision][0])
  model = keras.applications.ResNet50(
      weights=None, input_shape=(config.image_size, config.image_size, 3))
  model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
                loss="sparse_categorical_crossentropy", jit_compile=item.xla)
  dataset = train_batches(item, config, data_dir)
  marks = []

  class Windows(keras.callbacks.Callback):
    """Marks window ends, sized like _measure's from the last warm-up batch, then stops fit.

    Reading the loss waits for the step; fit checks stop_training after every batch.
    """

    def __init__(self):
      super().__init__()
      self.batches, self.batch_began, self.window_batches = 0, 0.0, None

    def on_train_batch_begin(self, batch, logs=None):
      self.batch_began = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
      float(logs["loss"])
      now = time.perf_counter()
      self.batches += 1
      if self.batches == config.warmup_steps:
        self.window_batches = max(1, math.ceil(config.window_seconds / (now - self.batch_began)))
      if self.window_batches and (self.batches - config.warmup_steps) % self.window_batches == 0:
        marks.append((now, _cpu_seconds()))
        self.model.stop_training = len(marks) > config.num_windows

  windows = Windows()
  # An upper bound on the steps: the callback stops fit after the last window.
  model.fit(dataset, epochs=1, steps_per_epoch=10**9, verbose=0, callbacks=[windows])
  stats = _window_stats([b[0] - a[0] for a, b in zip(marks, marks[1:])],
                        [b[1] - a[1] for a, b in zip(marks, marks[1:])],
                        windows.window_batches * config.batch_size)
  return _with_flops(stats, forward_flops_per_image(model), TRAIN_FLOPS_PER_FORWARD)


def _inference(item, config, data_dir):
  """Our model's forward pass in inference mode on one synthetic batch."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from input_pipeline import build_dataset  # pylint: disable=import-outside-toplevel
  from official_resnet.models import build_model  # pylint: disable=import-outside-toplevel
  model = build_model(_model_config(item, config))
  images, _ = next(iter(build_dataset(_data_config(item, config, data_dir), training=True)))
  predict = tf.function(lambda x: model(x, training=False), jit_compile=item.xla)
  stats = _measure(lambda: predict(images), config, config.batch_size,
                   warmup_calls=config.warmup_steps)
  return _with_flops(stats, forward_flops_per_image(model), 1)


def _savedmodel_jpeg(item, config, data_dir):
  """The exported SavedModel's serving_default on a batch of JPEG bytes (decode, crop, model)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from input_pipeline import constants  # pylint: disable=import-outside-toplevel
  from official_resnet import export  # pylint: disable=import-outside-toplevel
  from official_resnet.models import build_model  # pylint: disable=import-outside-toplevel
  model_config = _model_config(item, config)
  model = build_model(model_config)
  export_dir = tempfile.mkdtemp(dir=config.work_dir)
  version_dir = export.export_model(
      model, model_config, _data_config(item, config, data_dir),
      [str(i) for i in range(model_config.num_classes)], export_dir, formats=("saved_model",))
  serve = tf.saved_model.load(version_dir).signatures[export.SERVING_DEFAULT]
  files = tf.io.gfile.glob(os.path.join(data_dir, config.train_file_pattern))
  jpegs = next(iter(tf.data.TFRecordDataset(files).map(
      lambda record: tf.io.parse_single_example(
          record, {constants.KEY_ENCODED: tf.io.FixedLenFeature([], tf.string)})
      [constants.KEY_ENCODED]).batch(config.batch_size)))
  stats = _measure(lambda: serve(images=jpegs)["probabilities"], config, int(jpegs.shape[0]),
                   warmup_calls=config.warmup_steps)
  shutil.rmtree(export_dir)
  return _with_flops(stats, forward_flops_per_image(model), 1)


def _conv_ceiling(item, config, data_dir):
  """A large 3x3 convolution: forward, input gradient and filter gradient, timed apart."""
  del data_dir
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  n, h, w, c_in, c_out = config.conv_shape
  dtype = PRECISIONS[item.precision][1]
  images = tf.cast(tf.random.normal([n, h, w, c_in]), dtype)
  kernel = tf.cast(tf.random.normal([3, 3, c_in, c_out], stddev=0.05), dtype)
  output_grad = tf.cast(tf.random.normal([n, h, w, c_out]), dtype)
  strides = [1, 1, 1, 1]

  @tf.function(jit_compile=item.xla)
  def forward():
    return tf.nn.conv2d(images, kernel, strides, "SAME")[0, 0, 0, 0]

  @tf.function(jit_compile=item.xla)
  def backward():
    input_grad = tf.raw_ops.Conv2DBackpropInput(
        input_sizes=tf.shape(images), filter=kernel, out_backprop=output_grad,
        strides=strides, padding="SAME")
    filter_grad = tf.raw_ops.Conv2DBackpropFilter(
        input=images, filter_sizes=tf.shape(kernel), out_backprop=output_grad,
        strides=strides, padding="SAME")
    return input_grad[0, 0, 0, 0] + filter_grad[0, 0, 0, 0]

  flops = 2 * n * h * w * 9 * c_in * c_out
  # One "image" per call here: images_per_second reads as calls per second.
  forward_stats = _measure(forward, config, 1, warmup_calls=2)
  backward_stats = _measure(backward, config, 1, warmup_calls=2)
  # Training mix: one forward and two backward convolutions per layer.
  seconds = 1 / forward_stats["images_per_second"] + 1 / backward_stats["images_per_second"]
  return {"gflops_per_second": 3 * flops / seconds / 1e9,
          "forward_gflops_per_second": forward_stats["images_per_second"] * flops / 1e9,
          "backward_gflops_per_second": backward_stats["images_per_second"] * 2 * flops / 1e9,
          "forward_flops_per_call": flops, "shape_nhwc_cout": list(config.conv_shape),
          "cores_busy": (forward_stats["cores_busy"] + backward_stats["cores_busy"]) / 2}


def _matmul_ceiling(item, config, data_dir):
  """A square matmul of `matmul_size`."""
  del data_dir
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  size, dtype = config.matmul_size, PRECISIONS[item.precision][1]
  a = tf.cast(tf.random.normal([size, size]), dtype)
  b = tf.cast(tf.random.normal([size, size]), dtype)
  matmul = tf.function(lambda: tf.matmul(a, b)[0, 0], jit_compile=item.xla)
  stats = _measure(matmul, config, 1, warmup_calls=2)
  return {"gflops_per_second": stats["images_per_second"] * 2 * size ** 3 / 1e9,
          "flops_per_call": 2 * size ** 3, "cores_busy": stats["cores_busy"]}


def _official_train(item, config, data_dir):
  """The official trainer's train loop, called as its orbit Controller calls it.

  The setup is resnet_ctl_imagenet_main.run()'s (session config, dtype policy, data
  format, strategy, ResnetRunnable) with the official flags as a user passes them;
  each timed call is the Controller's `trainer.train(steps_per_loop)`. The official
  model is ResNet-50 v1.5 at 224 px with 1001 classes whatever the config says, and
  its synthetic input is one batch of random tensors, repeated (ours: one cached batch).
  """
  del data_dir
  ctl_main, reason = official.import_module(f"{official.RESNET}.resnet_ctl_imagenet_main",
                                           config.official_dir)
  if ctl_main is None:
    return {"status": "unavailable", "reason": reason}
  # pylint: disable=import-outside-toplevel
  import tensorflow as tf
  import tf_keras
  from absl import flags
  from official.common import distribute_utils
  from official.legacy.image_classification.resnet import common
  from official.legacy.image_classification.resnet import imagenet_preprocessing
  from official.legacy.image_classification.resnet import resnet_runnable
  from official.modeling import performance
  from official.utils.flags import core as flags_core
  from official.utils.misc import keras_utils
  # pylint: enable=import-outside-toplevel
  common.define_keras_flags()
  gpus = len(tf.config.list_physical_devices("GPU"))
  flags_obj = flags.FLAGS
  flags_obj(["resnet_ctl_imagenet_main", "--use_synthetic_data", "--skip_eval",
             f"--batch_size={config.batch_size}", f"--dtype={item.precision}",
             f"--enable_xla={item.xla}", f"--steps_per_loop={item.steps_per_loop}",
             f"--distribution_strategy={'one_device' if gpus else 'off'}",
             f"--num_gpus={min(gpus, 1)}", f"--model_dir={tempfile.mkdtemp(dir=config.work_dir)}"])
  keras_utils.set_session_config()
  performance.set_mixed_precision_policy(flags_core.get_tf_dtype(flags_obj))
  if gpus:
    common.set_cudnn_batchnorm_mode()
  tf_keras.backend.set_image_data_format(
      flags_obj.data_format or ("channels_first" if gpus else "channels_last"))
  strategy = distribute_utils.get_distribution_strategy(
      distribution_strategy=flags_obj.distribution_strategy, num_gpus=flags_obj.num_gpus)
  time_callback = keras_utils.TimeHistory(config.batch_size, flags_obj.log_steps)
  per_epoch_steps, _, _ = ctl_main.get_num_train_iterations(flags_obj)
  with distribute_utils.get_strategy_scope(strategy):
    runnable = resnet_runnable.ResnetRunnable(flags_obj, time_callback, per_epoch_steps)
  time_callback.on_train_begin()
  num_steps = tf.convert_to_tensor(item.steps_per_loop, dtype=tf.int32)
  stats = _measure(lambda: runnable.train(num_steps)["train_loss"], config,
                   item.steps_per_loop * config.batch_size,
                   warmup_calls=math.ceil(config.warmup_steps / item.steps_per_loop))
  result = _with_flops(stats, forward_flops_per_image(
      runnable.model, (tf_keras.layers.Conv2D, tf_keras.layers.Dense)), TRAIN_FLOPS_PER_FORWARD)
  result["image_size"] = imagenet_preprocessing.DEFAULT_IMAGE_SIZE
  result["data_format"] = tf_keras.backend.image_data_format()
  return result


_RUNNERS = {"conv_ceiling": _conv_ceiling, "matmul_ceiling": _matmul_ceiling, "train": _train,
            "official_train": _official_train,
            "keras_fit": _keras_fit, "inference": _inference, "savedmodel_jpeg": _savedmodel_jpeg}


def measure(item: Item, config: BenchmarkConfig, data_dir) -> dict:
  """One item's figures, measured in this process (run_benchmark gives each its own)."""
  return _RUNNERS[item.kind](item, config, data_dir)


def configure_threads(config: BenchmarkConfig) -> None:
  """Applies the config's thread counts; call before any op runs (the pools are fixed then)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  if config.inter_op_threads is not None:
    tf.config.threading.set_inter_op_parallelism_threads(config.inter_op_threads)
  if config.intra_op_threads is not None:
    tf.config.threading.set_intra_op_parallelism_threads(config.intra_op_threads)


def _run_item(spec_path):
  """Subprocess entry: configure threads, run one item, write its result JSON."""
  with open(spec_path) as f:
    spec = json.load(f)
  config_fields = spec["config"]
  config = BenchmarkConfig(**{**config_fields,
                              "conv_shape": tuple(config_fields["conv_shape"]),
                              "env": tuple(tuple(kv) for kv in config_fields["env"])})
  item = Item(**spec["item"])
  configure_threads(config)
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  result = {"status": "ok", **measure(item, config, spec["data_dir"])}
  from official_resnet import memory  # pylint: disable=import-outside-toplevel
  result["peak_rss_bytes"] = memory.peak_resident_bytes()
  result["device"] = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
  with open(spec["result_path"], "w") as f:
    json.dump(result, f)


def _parse_env(pairs):
  env = []
  for pair in pairs:
    key, sep, value = pair.partition("=")
    if not sep or not key:
      raise ValueError(f"`--env` must be KEY=VALUE. Received: --env={pair!r}")
    env.append((key, value))
  return tuple(env)


def main(argv=None):
  parser = argparse.ArgumentParser(
      prog="python -m benchmarks.train_step", description=__doc__.split("\n")[0])
  parser.add_argument("--preset", default="cpu", choices=PRESETS,
                      help="cpu: one axis at a time; full: every train combination; "
                           "gpu: mixed precision + XLA")
  parser.add_argument("--items", help="comma-separated glob patterns over item names")
  parser.add_argument("--quick", action="store_true", help="tiny sizes, for tests")
  parser.add_argument("--list", action="store_true", help="print the item names and exit")
  parser.add_argument("--output", help="JSON report path")
  for field in dataclasses.fields(BenchmarkConfig):
    if field.name not in ("conv_shape", "env"):
      kind = int if field.type in (int, int | None) else float if field.type is float else str
      parser.add_argument(f"--{field.name}", type=kind, help=f"default {field.default}")
  parser.add_argument("--conv_shape", help="N,H,W,C_in,C_out of the ceiling convolution")
  parser.add_argument("--env", action="append", default=[],
                      help="KEY=VALUE set in every item's environment (repeatable)")
  parser.add_argument("--run_item", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.run_item:
    _run_item(args.run_item)
    return
  logging.set_verbosity(logging.INFO)
  overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(BenchmarkConfig)
               if f.name not in ("conv_shape", "env") and getattr(args, f.name) is not None}
  if args.conv_shape:
    overrides["conv_shape"] = tuple(int(v) for v in args.conv_shape.split(","))
  if args.env:
    overrides["env"] = _parse_env(args.env)
  config = dataclasses.replace(QUICK_CONFIG if args.quick else BenchmarkConfig(), **overrides)
  items = select_items(preset_items(args.preset, config), args.items)
  if args.list:
    print("\n".join(item.name for item in items))
    return
  print(format_table(run_benchmark(config, items, args.output)))


if __name__ == "__main__":
  main()

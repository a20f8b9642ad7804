"""Where CPU users wait: small images, the time to the first step, the step's peak memory.

    python -m benchmarks.short_runs --rounds=3 --output=benchmarks/results_short_runs.json

Three items, each side in a process of its own, the two sides alternating in every round;
the figures are medians over the rounds (benchmarks/README.md, "Short runs"):

- small_images: our command line (`python -m official_resnet.main`, the README's digits
  command) on a folder of generated 32 px JPEGs, training with an evaluation every epoch,
  against a plain Keras `model.fit` (same model builder, same optimizer settings) on the
  same images decoded once and held in memory, validating every epoch. Figure: training
  images over the whole process' wall time, start-up and evaluations included; and the
  share of our run spent outside train steps (stats.json's steady examples/s against the
  wall time).
- first_step: seconds from the command to the end of the first train step, read from each
  trainer's own log line (ours: "step 1/N", orbit's: "train | step: 1"): the smoke recipe
  on the official trainer's network (ResNet-50 v1.5, 32 px, batch 32, synthetic data, 4
  classes) against `resnet_ctl_imagenet_main.run` at the same sizes, and the smoke recipe
  itself (ResNet-18, width 8) for reference.
- peak_memory: peak resident memory (VmHWM) of the ResNet-50 v1.5 fp32 train step at 224 px,
  batch 32, ours against the official trainer's: benchmarks.train_step's
  `train/synthetic/fp32/spl1` and `official_train/synthetic/fp32/spl1` items.
"""
import argparse
import dataclasses
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from benchmarks import official

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ITEMS = ("small_images", "first_step", "peak_memory")
# The log line that ends each trainer's first step (steps_per_loop=1, log_steps=1).
OURS_FIRST_STEP = re.compile(r"\] step 1/\d+:")
OFFICIAL_FIRST_STEP = re.compile(r"train \| step:\s+1 \|")


@dataclasses.dataclass(frozen=True)
class Config:
  rounds: int = 3
  work_dir: str = os.path.join(tempfile.gettempdir(), "official_resnet_short_runs")
  official_dir: str = official.DEFAULT_DIR
  # small_images: classes x images per class, 32 px, ResNet-18, batch 32.
  classes: int = 10
  train_per_class: int = 100
  eval_per_class: int = 25
  image_size: int = 32
  epochs: int = 5
  batch_size: int = 32
  # peak_memory: the ResNet-50 step at 224 px (benchmarks.train_step's items).
  memory_image_size: int = 224
  timeout_s: float = 1800.0


# Tiny sizes, for tests/test_short_runs.py and a look at the plumbing.
QUICK_CONFIG = Config(rounds=1, classes=2, train_per_class=32, eval_per_class=8, epochs=2,
                      memory_image_size=32)


def median(values):
  """The median of the figures in `values` that are not None; None when there are none."""
  figures = [value for value in values if value is not None]
  return statistics.median(figures) if figures else None


def median_ratio(ours, theirs):
  """(median of ours, median of theirs, their ratio), None where a side has no figure."""
  mine, other = median(ours), median(theirs)
  if mine is None or other is None:
    return None, None, None
  return mine, other, mine / other


def write_image_folder(root, classes, per_class, size, seed):
  """JPEGs of `classes` classes in root/<class>/: a colour gradient per class (the same for
  every seed, so the splits agree) plus noise drawn from `seed`."""
  rng = np.random.default_rng(seed)
  ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
  for label in range(classes):
    directory = os.path.join(root, f"class_{label:02d}")
    os.makedirs(directory, exist_ok=True)
    colour = np.random.default_rng(label).uniform(0.2, 1.0, 3).astype(np.float32)
    horizontal = label % 2 == 0
    gradient = (ramp[np.newaxis, :] if horizontal else ramp[:, np.newaxis]) * np.ones(
        (size, size), np.float32)
    for index in range(per_class):
      noise = rng.normal(0.0, 25.0, (size, size, 3))
      pixels = 30.0 + 200.0 * gradient[..., np.newaxis] * colour + noise
      Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
          os.path.join(directory, f"{index:04d}.jpg"), quality=90)


def ensure_images(config):
  """root with train/ and validation/ image folders of config's sizes, generated once."""
  root = os.path.join(config.work_dir, f"images_v2_{config.classes}x{config.train_per_class}_"
                                       f"{config.eval_per_class}_{config.image_size}px")
  if not os.path.isdir(os.path.join(root, "validation")):
    write_image_folder(os.path.join(root, "train"), config.classes, config.train_per_class,
                       config.image_size, seed=0)
    write_image_folder(os.path.join(root, "validation"), config.classes,
                       config.eval_per_class, config.image_size, seed=1)
  return root


def _env():
  python_path = os.pathsep.join(p for p in (_REPO_ROOT, os.environ.get("PYTHONPATH")) if p)
  return {**os.environ, "PYTHONPATH": python_path,
          "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}


def run_process(argv, timeout_s, until=None, marks=None):
  """Runs `argv`; {"seconds": to its exit, or to its first output line matching `until`
  (then it is killed), "status", "log_tail", "marks": [(seconds, name)] of the lines that
  match a pattern of `marks` ({name: regex})}."""
  began = time.perf_counter()
  process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=_env(), cwd=_REPO_ROOT)
  lines, seconds, seen = [], None, []
  for line in process.stdout:
    lines = (lines + [line])[-40:]
    seen += [(time.perf_counter() - began, name) for name, pattern in (marks or {}).items()
             if pattern.search(line)]
    if until is not None and until.search(line):
      seconds = time.perf_counter() - began
      process.kill()
      break
    if time.perf_counter() - began > timeout_s:
      process.kill()
      break
  process.wait()
  if until is None and process.returncode == 0:
    seconds = time.perf_counter() - began
  return {"seconds": seconds, "status": "ok" if seconds is not None else "failed",
          "log_tail": None if seconds is not None else "".join(lines)[-3000:],
          **({"marks": seen} if marks else {})}


def _module(name, *arguments):
  return [sys.executable, "-m", name, *arguments]


# ---------------------------------------------------------------------------- small images


# Our log lines that time the parts of a run (the time each line reached the benchmark).
OUR_MARKS = {"training": re.compile(r"\] Phase '"), "saved": re.compile(r"\] Saved .*ckpt-"),
             "evaluated": re.compile(r"\] eval at step \d+: loss"),
             "stats": re.compile(r"\] Run stats: ")}


def breakdown(marks, total):
  """Seconds of a run's parts from its marks (run_process'): start-up (to the first phase),
  the first epoch (first call's tracing, its steps, its checkpoint), evaluations (each from
  its checkpoint line to its result line), the later epochs, and the exit after the stats."""
  times = {}
  for seconds, name in marks:
    times.setdefault(name, []).append(seconds)
  if not all(name in times for name in OUR_MARKS):
    return None
  evaluations = [evaluated - max(s for s in times["saved"] if s <= evaluated)
                 for evaluated in times["evaluated"]]
  parts = {"startup": times["training"][0],
           "first_epoch": min(times["saved"]) - times["training"][0],
           "evaluations": sum(evaluations), "exit": total - times["stats"][-1]}
  parts["later_epochs"] = total - sum(parts.values())
  return {name: round(value, 2) for name, value in parts.items()}


def small_images_ours(config, data_root):
  """Our command line on the image folder; images/s of the whole process, the share of it
  outside train steps, and its parts (breakdown)."""
  model_dir = tempfile.mkdtemp(prefix="ours_", dir=config.work_dir)
  result = run_process(_module(
      "official_resnet.main", f"--data_dir={data_root}", f"--image_size={config.image_size}",
      "--architecture=resnet18", f"--model_dir={model_dir}", f"--train_epochs={config.epochs}",
      f"--batch_size={config.batch_size}"), config.timeout_s, marks=OUR_MARKS)
  if result["status"] != "ok":
    return result
  result["parts"] = breakdown(result.pop("marks"), result["seconds"])
  with open(os.path.join(model_dir, "stats.json")) as f:
    stats = json.load(f)
  trained = stats["step"] * stats["global_batch_size"]
  train_seconds = trained / stats["examples_per_second"]
  return {**result, "images_per_second": trained / result["seconds"], "images": trained,
          "train_step_seconds": train_seconds,
          "outside_train_steps": 1.0 - train_seconds / result["seconds"],
          "eval_top_1": stats.get("eval_top_1_accuracy")}


def small_images_fit(config, data_root):
  """The plain Keras fit child (fit_main) on the same folder; images/s of the whole process."""
  result = run_process(_module("benchmarks.short_runs", "--child=fit",
                               f"--child_args={json.dumps(dataclasses.asdict(config))}",
                               f"--data_root={data_root}"), config.timeout_s)
  steps_per_epoch = config.classes * config.train_per_class // config.batch_size
  trained = steps_per_epoch * config.batch_size * config.epochs
  if result["status"] == "ok":
    result.update(images_per_second=trained / result["seconds"], images=trained)
  return result


def _load_folder(root):
  """(uint8 images [N, S, S, 3], int labels [N]) of root/<class>/*.jpg, classes sorted."""
  images, labels = [], []
  for label, name in enumerate(sorted(os.listdir(root))):
    for file_name in sorted(os.listdir(os.path.join(root, name))):
      with Image.open(os.path.join(root, name, file_name)) as image:
        images.append(np.asarray(image.convert("RGB")))
      labels.append(label)
  return np.stack(images), np.asarray(labels)


def fit_main(config, data_root):
  """What a user writes in 20 lines: decode the folder into arrays, build, compile, fit."""
  # pylint: disable=import-outside-toplevel
  import keras
  from input_pipeline import constants
  from official_resnet import models
  # pylint: enable=import-outside-toplevel
  means = np.asarray(constants.RGB_MEANS, np.float32)
  x_train, y_train = _load_folder(os.path.join(data_root, "train"))
  x_eval, y_eval = _load_folder(os.path.join(data_root, "validation"))
  model = models.build_model(models.ModelConfig(
      architecture="resnet18", num_classes=config.classes, image_size=config.image_size))
  model.compile(optimizer=keras.optimizers.SGD(0.1 * config.batch_size / 256, momentum=0.9),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
  steps = len(x_train) // config.batch_size * config.batch_size
  model.fit(x_train[:steps] - means, y_train[:steps], batch_size=config.batch_size,
            epochs=config.epochs, validation_data=(x_eval - means, y_eval), verbose=0)


# ------------------------------------------------------------------------------ first step

# The smoke recipe on the official trainer's network; and as it is.
SMOKE_AS_OFFICIAL = ("--architecture=resnet50", "--base_width=64")


def first_step_ours(config, flags=()):
  model_dir = tempfile.mkdtemp(prefix="first_", dir=config.work_dir)
  return run_process(_module("official_resnet.main", "--flagfile=configs/smoke.cfg",
                             f"--model_dir={model_dir}", "--steps_per_loop=1", "--log_steps=1",
                             *flags), config.timeout_s, until=OURS_FIRST_STEP)


def first_step_official(config):
  return run_process(_module("benchmarks.short_runs", "--child=official",
                             f"--child_args={json.dumps(dataclasses.asdict(config))}"),
                     config.timeout_s, until=OFFICIAL_FIRST_STEP)


def official_main(config):
  """resnet_ctl_imagenet_main.run with the smoke recipe's sizes: 32 px, 4 classes, batch 32,
  synthetic data, one step per loop. Its resnet50() fixes a 224 px input: its Input layer is
  given 32 px instead, in this process only."""
  # pylint: disable=import-outside-toplevel
  ctl_main, reason = official.import_module(f"{official.RESNET}.resnet_ctl_imagenet_main",
                                           config.official_dir)
  if ctl_main is None:
    raise SystemExit(reason)
  from absl import flags
  from absl import logging
  from official.legacy.image_classification.resnet import common
  from official.legacy.image_classification.resnet import imagenet_preprocessing
  from official.legacy.image_classification.resnet import resnet_model
  # pylint: enable=import-outside-toplevel
  imagenet_preprocessing.DEFAULT_IMAGE_SIZE = 32
  imagenet_preprocessing.NUM_CLASSES = 4
  layers_input = resnet_model.layers.Input
  resnet_model.layers.Input = lambda shape, **kwargs: layers_input(shape=(32, 32, 3), **kwargs)
  common.define_keras_flags()
  flags.FLAGS(["resnet_ctl_imagenet_main", "--use_synthetic_data", "--batch_size=32",
               "--train_steps=16", "--steps_per_loop=1", "--log_steps=1",
               "--distribution_strategy=off", "--num_gpus=0",
               f"--model_dir={tempfile.mkdtemp(prefix='official_', dir=config.work_dir)}"])
  logging.set_verbosity(logging.INFO)
  ctl_main.run(flags.FLAGS)


# ----------------------------------------------------------------------------- peak memory


def peak_memory(config, kind):
  """Peak RSS of benchmarks.train_step's ResNet-50 fp32 item of `kind` (train or
  official_train), in its own process."""
  from benchmarks import train_step  # pylint: disable=import-outside-toplevel
  item = train_step.Item(kind, "fp32", steps_per_loop=1)
  bench_config = train_step.BenchmarkConfig(
      batch_size=32, image_size=config.memory_image_size, warmup_steps=1, num_windows=1,
      window_seconds=0.1, work_dir=config.work_dir, official_dir=config.official_dir)
  record = train_step.run_benchmark(bench_config, [item])["items"][0]
  return {"status": record["status"], "seconds": record.get("wall_seconds"),
          "peak_rss_mib": record["peak_rss_bytes"] / 2**20 if "peak_rss_bytes" in record
                          else None, "reason": record.get("reason")}


# ------------------------------------------------------------------------------ the report

# item -> (side name, runner(config, data_root)), the sides in the order they alternate.
SIDES = {
    "small_images": (("ours", small_images_ours), ("keras_fit", small_images_fit)),
    "first_step": (
        ("ours", lambda config, _: first_step_ours(config, SMOKE_AS_OFFICIAL)),
        ("official", lambda config, _: first_step_official(config)),
        ("ours_smoke_recipe", lambda config, _: first_step_ours(config))),
    "peak_memory": (("ours", lambda config, _: peak_memory(config, "train")),
                    ("official", lambda config, _: peak_memory(config, "official_train"))),
}
# item -> (the figure compared, the side ours is divided by).
FIGURES = {"small_images": ("images_per_second", "keras_fit"),
           "first_step": ("seconds", "official"), "peak_memory": ("peak_rss_mib", "official")}
TARGETS = {"small_images": ">= 1.0", "first_step": "<= 1.0", "peak_memory": "<= 1.0"}


def summarize(rounds):
  """{item: {side: median figure, "ratio": ours / theirs, "target"}} over the rounds."""
  summary = {}
  for item, (figure, theirs) in FIGURES.items():
    runs = [record[item] for record in rounds if item in record]
    if not runs:
      continue
    values = {side: [run[side].get(figure) for run in runs] for side in runs[0]}
    mine, other, ratio = median_ratio(values["ours"], values[theirs])
    entry = {"figure": figure, "ours": mine, theirs: other, "ratio": ratio,
             "target": TARGETS[item]}
    for side, side_values in values.items():
      if side not in ("ours", theirs):
        entry[side] = median(side_values)
    if item == "small_images":
      entry["ours_outside_train_steps"] = median(
          run["ours"].get("outside_train_steps") for run in runs)
      parts = [run["ours"]["parts"] for run in runs if run["ours"].get("parts")]
      if parts:
        entry["ours_parts_seconds"] = {name: statistics.median(p[name] for p in parts)
                                       for name in parts[0]}
    summary[item] = entry
  return summary


def run(config, items):
  os.makedirs(config.work_dir, exist_ok=True)
  data_root = ensure_images(config) if "small_images" in items else None
  started = datetime.datetime.now(datetime.timezone.utc)
  load_before = _uptime()
  rounds = []
  for round_index in range(config.rounds):
    record = {}
    for item in items:
      record[item] = {}
      for side, runner in SIDES[item]:
        load = os.getloadavg()[0]
        record[item][side] = {**runner(config, data_root), "load_before": round(load, 2)}
        print(f"round {round_index + 1}/{config.rounds} {item} {side}: "
              f"{ {k: v for k, v in record[item][side].items() if k != 'log_tail'} }",
              flush=True)
    rounds.append(record)
  return {"argv": sys.argv[1:], "started_utc": started.isoformat(timespec="seconds"),
          "wall_seconds": round((datetime.datetime.now(datetime.timezone.utc) - started)
                                .total_seconds(), 1),
          "uptime_before": load_before, "config": dataclasses.asdict(config),
          "commit": _commit(), "rounds": rounds, "summary": summarize(rounds)}


def _uptime():
  return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _commit():
  return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                        check=False, cwd=_REPO_ROOT).stdout.strip() or None


def format_summary(summary):
  lines = []
  for item, entry in summary.items():
    ratio = "n/a" if entry["ratio"] is None else f"{entry['ratio']:.3f}"
    sides = ", ".join(f"{side} {value:.4g}" for side, value in entry.items()
                      if isinstance(value, float) and side != "ratio")
    lines.append(f"{item} ({entry['figure']}): {sides}; ours/theirs {ratio} "
                 f"(target {entry['target']})")
    if "ours_parts_seconds" in entry:
      lines.append("  our run's parts, seconds: " + ", ".join(
          f"{name} {value:.1f}" for name, value in entry["ours_parts_seconds"].items()))
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m benchmarks.short_runs",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--rounds", type=int, default=Config.rounds)
  parser.add_argument("--items", default=",".join(ITEMS),
                      help="comma-separated: " + ", ".join(ITEMS))
  parser.add_argument("--quick", action="store_true", help="tiny sizes, one round")
  parser.add_argument("--work_dir", default=Config.work_dir)
  parser.add_argument("--output", help="JSON report path")
  parser.add_argument("--child", choices=("fit", "official"), help=argparse.SUPPRESS)
  parser.add_argument("--child_args", help=argparse.SUPPRESS)
  parser.add_argument("--data_root", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    config = Config(**json.loads(args.child_args))
    if args.child == "fit":
      fit_main(config, args.data_root)
    else:
      official_main(config)
    return
  items = [item for item in args.items.split(",") if item]
  unknown = sorted(set(items) - set(ITEMS))
  if unknown:
    raise SystemExit(f"--items must name some of {ITEMS}. Received: {unknown}")
  config = dataclasses.replace(QUICK_CONFIG if args.quick else Config(), work_dir=args.work_dir,
                               **({} if args.quick else {"rounds": args.rounds}))
  report = run(config, items)
  if args.output:
    with open(args.output, "w") as f:
      json.dump(report, f, indent=2)
  print(format_summary(report["summary"]))


if __name__ == "__main__":
  main()

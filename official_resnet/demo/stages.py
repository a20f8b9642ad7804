"""`./run.sh demo`: pre-train, transfer with a frozen backbone, export, predict in a new process.

    python -m official_resnet.demo [--out_dir=demo_out] [--quick]

Nothing is downloaded. The demo writes its own images (official_resnet.demo.data):
six shape and texture classes in class subfolders for pre-training, and a
two-class cat/dog set in the Kaggle cats-vs-dogs naming (cat.N.jpg, dog.N.jpg)
for the transfer, plus held-out cat/dog JPEGs for prediction. Then, each step
through official_resnet.main's own flags and modes:

  1. pre-train a small ResNet on the shapes;
  2. transfer it: --init_checkpoint=<pre-training>, --trainable=head (backbone
     frozen), a new two-class head; export a SavedModel at the end;
  3. train the same model from scratch for the same steps, for comparison;
  4. classify the held-out JPEGs through the SavedModel in a fresh process
     (python -m official_resnet.main --mode=predict).

Everything goes under --out_dir: data/ and runs/<settings>/, a folder named by
the settings' fingerprint, so a rerun with the same settings reuses the data
and the finished runs (and says so), an interrupted run resumes, and other
settings start fresh runs beside the old ones.
"""
import argparse
import contextlib
import copy
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time

from absl import logging

from official_resnet import export
from official_resnet import main as main_lib
from official_resnet import progress
from official_resnet import run_state
from official_resnet.demo import data as demo_data

DEFAULT_OUT_DIR = "demo_out"
# The demo's stages: what each does, and the short name its log lines and bar carry.
STAGES = (("writing the generated images", "images"),
          (f"pre-training on {len(demo_data.PRETRAIN_CLASSES)} shape classes", "pre-training"),
          ("transfer to cat/dog with a frozen backbone, then export", "transfer"),
          ("the same model from scratch, for comparison", "from scratch"),
          ("predicting held-out JPEGs through the SavedModel in a new process", "predict"))


@dataclasses.dataclass(frozen=True)
class DemoConfig:
  image_size: int = 64
  architecture: str = "resnet18"
  base_width: int = 16
  pretrain_images_per_class: int = 400
  transfer_images_per_class: int = 300
  heldout_images_per_class: int = 50
  pretrain_epochs: float = 12.0
  # Transfer and from-scratch runs train this many steps each.
  transfer_steps: int = 300
  batch_size: int = 32
  seed: int = 0


# The same code path at a size a test can afford (at 32 px the shapes are too small to transfer).
QUICK_CONFIG = DemoConfig(image_size=48, base_width=8, pretrain_images_per_class=200,
                          transfer_images_per_class=100, heldout_images_per_class=10,
                          pretrain_epochs=10.0, transfer_steps=80, batch_size=16)


@dataclasses.dataclass(frozen=True)
class StepResult:
  model_dir: str
  seconds: float
  reused: bool
  stats: dict


def fingerprint(config: DemoConfig) -> str:
  text = json.dumps(dataclasses.asdict(config), sort_keys=True)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


@contextlib.contextmanager
def stage(number, detail=""):
  """Logs "Demo stage i/5: <what>" and names the stage in the lines and bars inside."""
  what, name = STAGES[number - 1]
  logging.info("Demo stage %d/%d: %s%s", number, len(STAGES), what, detail)
  with progress.stage(f"demo {number}/{len(STAGES)} {name}"):
    yield


def write_data(config: DemoConfig, data_dir: str):
  """The three image sets, in folders named by what decides their content."""
  size, seed = config.image_size, config.seed
  tag = f"{size}px_seed{seed}"
  pretrain = demo_data.write_dataset(
      os.path.join(data_dir, f"shapes_{tag}_{config.pretrain_images_per_class}"),
      demo_data.PRETRAIN_CLASSES, config.pretrain_images_per_class, size, "subfolders", seed)
  transfer = demo_data.write_dataset(
      os.path.join(data_dir, f"catsdogs_{tag}_{config.transfer_images_per_class}"),
      demo_data.TRANSFER_CLASSES, config.transfer_images_per_class, size, "kaggle", seed)
  # Numbered after the transfer set's files: other draws, never seen in training.
  heldout = demo_data.write_dataset(
      os.path.join(data_dir, f"heldout_{tag}_{config.heldout_images_per_class}"),
      demo_data.TRANSFER_CLASSES, config.heldout_images_per_class, size, "kaggle", seed,
      start_index=config.transfer_images_per_class)
  return pretrain, transfer, heldout


def run_main(args):
  """official_resnet.main's run() on its own copy of the flags: the stats the command returns."""
  flag_values = copy.deepcopy(main_lib.FLAGS)
  flag_values.unparse_flags()
  flag_values(["official_resnet.main", *args])
  return main_lib.run(flag_values)


def _finished_stats(model_dir):
  """stats.json of a run that trained to its end, else None (absent, or interrupted)."""
  if not os.path.exists(os.path.join(model_dir, run_state.STATS_FILE)):
    return None
  stats = run_state.read_stats(model_dir)
  return stats if stats.get("step") == stats.get("total_steps") else None


def train_step(name, model_dir, args, export_dir=None):
  """Trains with `args` (resuming when interrupted) unless model_dir holds a finished run."""
  began = time.perf_counter()
  stats = _finished_stats(model_dir)
  if stats is not None and (export_dir is None or export.latest_version_dir(export_dir)):
    logging.info("Demo: reusing the finished %s run in %s.", name, model_dir)
    return StepResult(model_dir, time.perf_counter() - began, True, stats)
  args = [*args, f"--model_dir={model_dir}",
          *([f"--export_dir={export_dir}"] if export_dir else [])]
  stats = run_main(args)
  return StepResult(model_dir, time.perf_counter() - began, False, stats)


def common_flags(config: DemoConfig, data_dir, num_classes):
  return [
      "--mode=train_and_eval", "--distribution_strategy=off", "--num_gpus=0",
      "--source=folder", f"--data_dir={data_dir}", "--validation_fraction=0.15",
      f"--num_classes={num_classes}", f"--image_size={config.image_size}",
      f"--architecture={config.architecture}", f"--base_width={config.base_width}",
      f"--batch_size={config.batch_size}", f"--seed={config.seed}",
      "--optimizer=sgd", "--momentum=0.9", "--lr_schedule=cosine", "--warmup_epochs=0.5",
      "--lr_base_batch_size=0", "--log_steps=20",
      # The flags' copy sets absl's level when parsed: INFO, or piped output shows no progress.
      "--verbosity=0"]


def predict_step(export_dir, heldout_dir):
  """Classifies the held-out files through the SavedModel in a new process.

  Returns (accuracy, number of images, seconds).
  """
  began = time.perf_counter()
  command = [sys.executable, "-m", "official_resnet.main", "--mode=predict",
             f"--export_dir={export_dir}", f"--images={heldout_dir}", "--top_k=1",
             "--output=json"]
  # From the repository root, so the package imports without installation too.
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=repo)
  if result.returncode != 0:
    raise RuntimeError(f"{' '.join(command)} failed with exit status {result.returncode}:\n"
                       f"{result.stderr[-3000:]}")
  predictions = json.loads(result.stdout)
  # The true class is the file name's prefix (cat.N.jpg).
  correct = sum(os.path.basename(p["image"]).split(".")[0] == p["top_k"][0]["name"]
                for p in predictions)
  return correct / len(predictions), len(predictions), time.perf_counter() - began


def run_demo(out_dir=DEFAULT_OUT_DIR, config=DemoConfig()):
  """Runs every step and returns the summary as a dict (also written to <run dir>/summary.json)."""
  # Absolute: the predict process runs from the repository root.
  out_dir = os.path.abspath(out_dir)
  began = time.perf_counter()
  with stage(1, f" under {os.path.join(out_dir, 'data')}"):
    pretrain_data, transfer_data, heldout_data = write_data(config, os.path.join(out_dir, "data"))
  data_seconds = time.perf_counter() - began
  run_dir = os.path.join(out_dir, "runs", f"{config.architecture}_{config.image_size}px_"
                                          f"{fingerprint(config)}")
  pretrain_dir, export_dir = os.path.join(run_dir, "pretrain"), os.path.join(run_dir, "export")

  with stage(2, f" ({config.architecture}, {config.pretrain_epochs:g} epochs)"):
    pretrain = train_step("pre-training", pretrain_dir, [
        *common_flags(config, pretrain_data.root, len(pretrain_data.class_names)),
        f"--train_epochs={config.pretrain_epochs}",
        f"--epochs_between_evals={config.pretrain_epochs}", "--base_learning_rate=0.1"])
  transfer_flags = [*common_flags(config, transfer_data.root, len(transfer_data.class_names)),
                    f"--train_steps={config.transfer_steps}", "--epochs_between_evals=1000",
                    "--base_learning_rate=0.05"]
  # The normalization comes from the pre-training run's config.json (see --normalization).
  with stage(3, f" ({config.transfer_steps} steps)"):
    transfer = train_step("transfer", os.path.join(run_dir, "transfer"), [
        *transfer_flags, f"--init_checkpoint={pretrain_dir}", "--trainable=head",
        "--export_format=saved_model"],
        export_dir=export_dir)
  with stage(4, f" ({config.transfer_steps} steps)"):
    scratch = train_step("from scratch", os.path.join(run_dir, "scratch"), transfer_flags)
  with stage(5):
    accuracy, num_images, predict_seconds = predict_step(export_dir, heldout_data.root)
  summary = {
      "settings": dataclasses.asdict(config),
      "data": {"pretrain": pretrain_data.root, "transfer": transfer_data.root,
               "heldout": heldout_data.root, "seconds": data_seconds},
      **{key: {"model_dir": step.model_dir,
               "eval_top_1_accuracy": step.stats["eval_top_1_accuracy"],
               "eval_examples": step.stats["eval_examples"], "steps": step.stats["step"],
               "seconds": step.seconds, "trained_seconds": step.stats["wall_time_s"],
               "reused": step.reused}
         for key, step in (("pretrain", pretrain), ("transfer", transfer), ("scratch", scratch))},
      "export": export.latest_version_dir(export_dir),
      "predict": {"accuracy": accuracy, "images": num_images, "seconds": predict_seconds},
      "total_seconds": time.perf_counter() - began,
  }
  run_state.write_stats(run_dir, summary, name="summary.json")
  return summary


def format_summary(summary) -> str:
  def line(label, key, what):
    step = summary[key]
    took = f"reused (trained in {step['trained_seconds']:.0f} s)" if step["reused"] else (
        f"{step['seconds']:.0f} s")
    return (f"  {label:<13} {what}, {step['steps']} steps: eval top-1 "
            f"{step['eval_top_1_accuracy']:.3f} on "
            f"{step['eval_examples']} held-out images, {took}\n"
            f"  {'':<13} {step['model_dir']}")

  settings, predict = summary["settings"], summary["predict"]
  model = (f"{settings['architecture']} (base_width {settings['base_width']}, "
           f"{settings['image_size']} px)")
  run_dir = os.path.dirname(summary["pretrain"]["model_dir"])
  reused = [summary[key]["reused"] for key in ("pretrain", "transfer", "scratch")]
  return "\n".join([
      f"Demo done in {summary['total_seconds']:.0f} s.",
      *([f"  Finished runs with these settings reused from {run_dir}; delete it to train again."]
        if any(reused) else []),
      f"  {'data':<13} generated in {summary['data']['seconds']:.0f} s under "
      f"{os.path.dirname(summary['data']['pretrain'])}",
      line("pre-training", "pretrain", f"{model}, {len(demo_data.PRETRAIN_CLASSES)} shape classes"),
      line("transfer", "transfer", "frozen backbone, new cat/dog head"),
      line("from scratch", "scratch", "same model, no pre-training"),
      f"  {'SavedModel':<13} {summary['export']}",
      f"  {'predict':<13} {predict['images']} new JPEGs through the SavedModel in a fresh process: "
      f"accuracy {predict['accuracy']:.3f}, {predict['seconds']:.0f} s",
      f"  {'':<13} ./run.sh main --mode=predict --export_dir="
      f"{os.path.dirname(summary['export'])} --images={summary['data']['heldout']}",
  ])


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m official_resnet.demo",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--out_dir", default=DEFAULT_OUT_DIR, help="where data and runs go")
  parser.add_argument("--quick", action="store_true", help="tiny sizes, for tests")
  args = parser.parse_args(argv)
  # The command's log format (app.run installs it for main; the demo parses its own flags).
  logging.use_absl_handler()
  logging.set_verbosity(logging.INFO)
  summary = run_demo(args.out_dir, QUICK_CONFIG if args.quick else DemoConfig())
  print(format_summary(summary), flush=True)

"""--mode=predict: the top-k classes of image files, as a table or JSON.

The model comes from an exported SavedModel (a version directory, or an
export_dir whose latest version is used) or from a trainer's model_dir, whose
latest checkpoint is restored and run through the same serving function the
export saves, so both give the same numbers. A file that cannot be read or
decoded gets its error in place of classes, and the others are still predicted.
"""
import dataclasses
import json
import os
from collections.abc import Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from input_pipeline import checks
from input_pipeline import constants
from input_pipeline import folder
from official_resnet import config as config_lib
from official_resnet import export

OUTPUT_FORMATS = ("table", "json")
DEFAULT_BATCH_SIZE = 32
# What the eval preprocessing decodes, and the bytes each format's files open with.
IMAGE_FORMATS = "JPEG, PNG, GIF, BMP or WebP"
IMAGE_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"),
                    (b"GIF89a", "GIF"), (b"BM", "BMP"))
JPEG_START_OF_SCAN, JPEG_END_OF_IMAGE = b"\xff\xda", b"\xff\xd9"


@dataclasses.dataclass(frozen=True)
class ClassScore:
  class_id: int
  name: str
  probability: float


@dataclasses.dataclass(frozen=True)
class Prediction:
  image: str
  top_k: tuple[ClassScore, ...]
  # Why the image could not be classified (top_k is then empty); None when it was.
  error: str | None = None


def image_paths(images: Sequence[str]) -> list[str]:
  """Files as given; folders expanded, recursively and sorted, to their image files
  (input_pipeline.folder's listing: hidden files and folders left out). The other files
  of the folders are counted in one log line."""
  if isinstance(images, str) or not images:
    raise ValueError("`images` must be a non-empty list of files or folders. "
                     f"Received: images={images!r}")
  paths, others = [], []
  for path in images:
    if tf.io.gfile.isdir(path):
      files = [os.path.join(path, name) for name in folder.files_under(path)]
      found = [file for file in files if folder.is_image(os.path.basename(file))]
      if not found:
        raise ValueError(f"Folder {path!r} holds no {'/'.join(constants.IMAGE_EXTENSIONS)} "
                         f"files. Received: images={list(images)!r}")
      paths.extend(found)
      others.extend(file for file in files if file not in found)
    elif tf.io.gfile.exists(path):
      paths.append(path)
    else:
      raise ValueError(f"`images` must name existing files or folders. Received: {path!r}")
  if others:
    logging.info("Skipped %d file%s without an image extension (%s) in the folders: %s%s.",
                 len(others), "s" if len(others) > 1 else "", "/".join(constants.IMAGE_EXTENSIONS),
                 ", ".join(others[:3]), ", ..." if len(others) > 3 else "")
  return paths


def image_format(content: bytes) -> str | None:
  """The format name of encoded image bytes by their signature; None for none of IMAGE_FORMATS."""
  if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
    return "WebP"
  return next((name for signature, name in IMAGE_SIGNATURES if content.startswith(signature)),
              None)


def content_problem(content: bytes) -> str | None:
  """Why `content` is no image to classify, from its bytes alone; None when it may be one.

  A JPEG's end-of-image marker follows its last scan (the scan's data never holds it), a
  PNG ends with its IEND chunk: a file cut short lacks them. Catching that here says
  "truncated" instead of the decoder's words, and keeps the decoder's warnings off stderr.
  """
  if not content:
    return "an empty file"
  name = image_format(content)
  if name is None:
    return f"not a {IMAGE_FORMATS} image"
  if name == "JPEG":
    last_scan = content.rfind(JPEG_START_OF_SCAN)
    if last_scan < 0 or JPEG_END_OF_IMAGE not in content[last_scan:]:
      return "a truncated JPEG: the file ends before the image does"
  if name == "PNG" and b"IEND" not in content:
    return "a truncated PNG: the file ends before the image does"
  return None


def _read_labels(saved_model_dir):
  with tf.io.gfile.GFile(os.path.join(saved_model_dir, "assets", constants.LABELS_FILE)) as labels:
    return tuple(line.rstrip("\n") for line in labels)


def load_classifier(source: str):
  """(probabilities function: string [N] encoded images -> [N, C], class names) for `source`.

  `source`: a SavedModel written by export, an export_dir (its latest version),
  or a model_dir with trainer checkpoints.
  """
  saved_model_dir = source if tf.saved_model.contains_saved_model(source) else (
      export.latest_version_dir(source))
  if saved_model_dir is not None and tf.saved_model.contains_saved_model(saved_model_dir):
    loaded = tf.saved_model.load(saved_model_dir)

    def classify(images):
      # Holding `loaded` here keeps it alive: the restored variables die with it.
      return loaded.signatures[export.SERVING_DEFAULT](images=images)["probabilities"]

    return classify, _read_labels(saved_model_dir)
  if tf.io.gfile.isdir(source) and tf.train.latest_checkpoint(source):
    model, run_config = export.restore_model_dir(source)
    module, _ = export.build_serving_module(
        model, run_config.class_names,
        normalization=export.serving_normalization(run_config.model, run_config.data),
        eval_resize_size=run_config.data.eval_shorter_side,
        eval_resize_method=run_config.data.eval_resize_method)
    return lambda images: module.serve_encoded(images)["probabilities"], run_config.class_names
  raise ValueError("`source` must be an exported SavedModel, an export_dir with numbered "
                   f"versions, or a model_dir with checkpoints. Received: source={source!r}")


def _op_message(error):
  """The failing op's own words: a graph error adds stack lines before and node names after."""
  lines = [line.strip() for line in error.message.splitlines() if line.strip()]
  node_lines = [index for index, line in enumerate(lines) if line.startswith("[[")]
  return lines[node_lines[0] - 1] if node_lines and node_lines[0] > 0 else lines[-1]


def _read(path):
  """(bytes, None), or (None, the reason) for a file that cannot be read or is no image."""
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      content = f.read()
  except (OSError, tf.errors.OpError) as error:
    return None, f"cannot be read ({getattr(error, 'message', None) or error})"
  problem = content_problem(content)
  return (None, problem) if problem else (content, None)


def _probabilities(classify, contents):
  """[N, C] probabilities, or per image (probabilities [C] or the reason it failed)."""
  try:
    return list(classify(tf.constant(contents)).numpy())
  except tf.errors.InvalidArgumentError:
    # The batch failed as a whole; classify one by one to tell the bad files from the good.
    results = []
    for content in contents:
      try:
        results.append(classify(tf.constant([content])).numpy()[0])
      except tf.errors.InvalidArgumentError as error:
        results.append(f"a {image_format(content)} image that does not decode "
                       f"({_op_message(error)})")
    return results


def predict(source: str, images: Sequence[str], top_k: int = config_lib.DEFAULT_TOP_K, *,
            batch_size: int = DEFAULT_BATCH_SIZE) -> list[Prediction]:
  """The top_k classes of every image in `images` (files or folders), in path order.

  A file that cannot be read or decoded gets a Prediction with `error` set (the
  reason, said once, in the table or JSON); the others are classified as usual.
  """
  config_lib.check_top_k(top_k)
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"`batch_size` must be an integer >= 1. Received: batch_size={batch_size!r}")
  paths = image_paths(images)
  classify, class_names = load_classifier(source)
  k = min(top_k, len(class_names))
  predictions = []
  for start in range(0, len(paths), batch_size):
    batch = [(path, *_read(path)) for path in paths[start:start + batch_size]]
    results = {path: error for path, _, error in batch if error}
    readable = [(path, content) for path, content, error in batch if not error]
    if readable:
      results.update(zip([path for path, _ in readable],
                         _probabilities(classify, [content for _, content in readable])))
    predictions.extend(_prediction(path, results[path], class_names, k) for path, _, _ in batch)
  return predictions


def _prediction(path, result, class_names, k):
  """The Prediction of `path` from its probabilities, or from the reason it failed (a str)."""
  if isinstance(result, str):
    return Prediction(path, (), error=result)
  # Stable sort: ties keep the lower class id first, as tf.math.top_k does.
  best = np.argsort(-result, kind="stable")[:k]
  return Prediction(path, tuple(
      ClassScore(int(i), class_names[i], float(result[i])) for i in best))


def format_table(predictions: Sequence[Prediction]) -> str:
  rows = [("image", "rank", "class", "name", "probability")]
  for prediction in predictions:
    if prediction.error:
      rows.append((prediction.image, "-", "-", "error:", prediction.error))
    for rank, score in enumerate(prediction.top_k, start=1):
      rows.append((prediction.image if rank == 1 else "", str(rank), str(score.class_id),
                   score.name, f"{score.probability:.4f}"))
  widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
  return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                   for row in rows)


def format_json(predictions: Sequence[Prediction]) -> str:
  return json.dumps([dataclasses.asdict(prediction) for prediction in predictions], indent=2)


def format_predictions(predictions: Sequence[Prediction], output_format: str = "table") -> str:
  checks.check_choice("output_format", output_format, OUTPUT_FORMATS)
  return format_table(predictions) if output_format == "table" else format_json(predictions)

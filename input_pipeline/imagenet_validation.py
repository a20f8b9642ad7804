"""Sort ImageNet's flat validation images into one folder per synset, as the train images are.

    python -m input_pipeline.imagenet_validation --image_dir imagenet/validation \\
        --labels imagenet_2012_validation_synset_labels.txt

ILSVRC2012_img_val.tar unpacks to 50,000 files ILSVRC2012_val_00000001.JPEG
... in one folder, and their classes come in a separate file. Two forms of it
are read: one synset per line, line i for image i (the
imagenet_2012_validation_synset_labels.txt of tensorflow/models,
research/slim/datasets/), or Kaggle's LOC_val_solution.csv (ImageId,PredictionString; the
first word of the prediction is the synset). Each image is then moved (a
rename, no copy) to <image_dir>/<synset>/, so build_tfrecords and
source="folder" read the validation split with the train split's class order.
Everything is checked before the first file moves; running it again moves
only what is still at the top level.
"""
import argparse
import csv
import os
import re
import sys

import tensorflow as tf
from absl import logging

IMAGE_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG")
SYNSET = re.compile(r"n\d{8}")


def read_labels(path: str) -> dict[int, str]:
  """Image number (1-based, as in the file names) -> synset, from either labels file form."""
  if not tf.io.gfile.exists(path):
    raise ValueError(f"labels must be an existing file of validation synsets. Received: {path!r}")
  with tf.io.gfile.GFile(path) as f:
    text = f.read()
  if text.startswith("ImageId,"):
    labels = {}
    for row in csv.DictReader(text.splitlines()):
      match = IMAGE_NAME.fullmatch(row["ImageId"] + ".JPEG")
      if not match:
        raise ValueError(f"labels {path}: ImageId must look like ILSVRC2012_val_00000001. "
                         f"Received: {row['ImageId']!r}")
      labels[int(match.group(1))] = (row.get("PredictionString") or "").split(" ")[0]
  else:
    labels = {number: line.strip()
              for number, line in enumerate(text.splitlines(), start=1) if line.strip()}
  for number, synset in labels.items():
    if not SYNSET.fullmatch(synset):
      raise ValueError(f"labels {path}: image {number}'s synset must look like n01440764. "
                       f"Received: {synset!r}")
  return labels


def plan_moves(image_dir: str, labels: dict[int, str]) -> list[tuple[str, str]]:
  """(source, destination) for every validation image still at the top of image_dir."""
  if not tf.io.gfile.isdir(image_dir):
    raise ValueError(f"image_dir must be an existing folder. Received: {image_dir!r}")
  moves = []
  for name in sorted(tf.io.gfile.listdir(image_dir)):
    path = os.path.join(image_dir, name)
    if name.startswith(".") or tf.io.gfile.isdir(path):
      continue
    match = IMAGE_NAME.fullmatch(name)
    if not match:
      raise ValueError(f"Files at the top of {image_dir} must be ImageNet validation images "
                       f"named ILSVRC2012_val_<8 digits>.JPEG. Received: {name!r}")
    number = int(match.group(1))
    if number not in labels:
      raise ValueError(f"The labels file has no synset for {name} (it covers {len(labels)} "
                       "images); is it the ILSVRC2012 validation labels file?")
    destination = os.path.join(image_dir, labels[number], name)
    if tf.io.gfile.exists(destination):
      raise ValueError(f"{name} is both at the top of {image_dir} and in its synset folder "
                       f"{labels[number]}/; remove one copy. Received: {path!r}")
    moves.append((path, destination))
  return moves


def sort_into_synset_folders(image_dir: str, labels_path: str) -> int:
  """Moves every top-level validation image into its synset's folder; returns how many moved."""
  moves = plan_moves(image_dir, read_labels(labels_path))
  logging.info("Moving %d validation images of %s into synset folders", len(moves), image_dir)
  for done, (source, destination) in enumerate(moves, start=1):
    tf.io.gfile.makedirs(os.path.dirname(destination))
    tf.io.gfile.rename(source, destination, overwrite=False)
    if done % 5000 == 0 or done == len(moves):
      logging.info("[%d/%d] moved", done, len(moves))
  return len(moves)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m input_pipeline.imagenet_validation",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--image_dir", required=True,
                      help="the folder ILSVRC2012_img_val.tar was unpacked into")
  parser.add_argument("--labels", required=True,
                      help="imagenet_2012_validation_synset_labels.txt or LOC_val_solution.csv")
  args = parser.parse_args(argv)
  logging.use_absl_handler()
  logging.set_verbosity(logging.INFO)
  try:
    moved = sort_into_synset_folders(args.image_dir, args.labels)
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  print(f"{moved} images moved into synset folders under {args.image_dir}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

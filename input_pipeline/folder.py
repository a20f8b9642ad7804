"""Listing a folder of images: which files, which classes, which split.

Two layouts are understood:
  class subfolders   root/cat/001.jpg, root/dog/xyz.png, ...
  flat Kaggle names  root/cat.123.jpg, root/dog.456.jpg (class = text before the first dot)
Either may be split into root/<train_split>/ and root/<eval_split>/; without
those folders a file belongs to validation when a hash of its path relative
to root falls below `validation_fraction`, so the split never changes between
runs, machines or Python versions.
"""
import dataclasses
import hashlib
import os

import tensorflow as tf

from input_pipeline import constants


@dataclasses.dataclass(frozen=True)
class ImageFolder:
  class_names: tuple[str, ...]
  paths: tuple[str, ...]
  labels: tuple[int, ...]


def is_image(name: str) -> bool:
  return not name.startswith(".") and name.lower().endswith(constants.IMAGE_EXTENSIONS)


def files_under(directory: str) -> list[str]:
  """File paths below `directory` (recursively), relative to it, sorted.

  Hidden files and folders (a leading dot: .git, macOS' ._ files) are left out.
  """
  found = []
  for parent, subdirs, files in tf.io.gfile.walk(directory):
    subdirs[:] = [d for d in subdirs if not d.startswith(".")]
    relative_parent = os.path.relpath(parent, directory)
    found.extend(os.path.normpath(os.path.join(relative_parent, f)) for f in files
                 if not f.startswith("."))
  return sorted(found)


def images_under(directory: str) -> list[str]:
  """The image files of files_under(directory)."""
  return [path for path in files_under(directory) if is_image(os.path.basename(path))]


def _flat_class(name: str, root: str) -> str:
  parts = name.split(".")
  if len(parts) < 3 or not parts[0]:
    raise ValueError(
        f"Images directly in {root} must be named <class>.<id>.<ext> (e.g. cat.123.jpg), "
        f"or be placed in one subfolder per class. Received: {name!r}")
  return parts[0]


def _list_layout(root: str) -> list[tuple[str, str]]:
  """(path relative to root, class name) for every image under root, in either layout."""
  entries = [e for e in sorted(tf.io.gfile.listdir(root)) if not e.startswith(".")]
  flat = [e for e in entries if is_image(e) and not tf.io.gfile.isdir(os.path.join(root, e))]
  subfolders = [e.rstrip("/") for e in entries if tf.io.gfile.isdir(os.path.join(root, e))]
  by_class = [(os.path.join(d, p), d) for d in subfolders
              for p in images_under(os.path.join(root, d))]
  if flat and by_class:
    raise ValueError(
        f"Image folder {root} mixes images at the top level with class subfolders; expected one "
        f"layout. Received: {len(flat)} top-level images and subfolders "
        f"{sorted({c for _, c in by_class})}")
  return [(name, _flat_class(name, root)) for name in flat] if flat else by_class


def _in_validation(relative_path: str, validation_fraction: float) -> bool:
  digest = hashlib.sha256(relative_path.replace(os.sep, "/").encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64 < validation_fraction


def has_split_folders(root: str, train_split: str, eval_split: str) -> bool:
  return all(tf.io.gfile.isdir(os.path.join(root, s)) for s in (train_split, eval_split))


def list_image_folder(root: str, training: bool, validation_fraction: float,
                      train_split: str = "train", eval_split: str = "validation") -> ImageFolder:
  """The files of one split of an image folder, labelled by sorted class index."""
  if not root or not tf.io.gfile.isdir(root):
    raise ValueError(f"data_dir must be an existing folder of images. Received: {root!r}")
  if has_split_folders(root, train_split, eval_split):
    # Classes come from the train folder in both splits, so labels agree.
    class_root = os.path.join(root, train_split)
    split_root = class_root if training else os.path.join(root, eval_split)
    classes = sorted({c for _, c in _list_layout(class_root)})
    entries = _list_layout(split_root)
  else:
    if not 0.0 <= validation_fraction < 1.0:
      raise ValueError(
          f"validation_fraction must be in [0, 1). Received: {validation_fraction}")
    split_root = root
    all_entries = _list_layout(root)
    classes = sorted({c for _, c in all_entries})
    entries = [(p, c) for p, c in all_entries
               if _in_validation(p, validation_fraction) != training]
  if not classes:
    raise ValueError(
        f"Image folder {root} holds no images with extensions {constants.IMAGE_EXTENSIONS}. "
        f"Received: {root!r}")
  if len(classes) < 2:
    raise ValueError(
        f"Image folder {root} must hold images of at least 2 classes (subfolders, or "
        f"<class>.<id>.<ext> names). Received: {len(classes)} class(es) {classes}")
  unknown = sorted({c for _, c in entries} - set(classes))
  if unknown:
    raise ValueError(
        f"Classes in {split_root} must also appear in {os.path.join(root, train_split)}. "
        f"Received unknown classes: {unknown}")
  if not entries:
    split = train_split if training else eval_split
    raise ValueError(
        f"The {split!r} split of image folder {root} is empty; add images or change "
        f"validation_fraction. Received: validation_fraction={validation_fraction}")
  index = {c: i for i, c in enumerate(classes)}
  return ImageFolder(
      class_names=tuple(classes),
      paths=tuple(os.path.join(split_root, p) for p, _ in entries),
      labels=tuple(index[c] for _, c in entries))

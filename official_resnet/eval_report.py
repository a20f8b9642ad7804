"""The evaluation report: per-class precision, recall and F1, and the confusion matrix.

The trainer sums the confusion matrix (rows: true class, columns: predicted class) on
the device; this module turns it into figures, CSV files and a picture a person can
open. The picture draws the whole matrix up to MAX_MATRIX_CLASSES classes and lists
the most confused pairs above that, where a matrix would be unreadable.
"""
import csv
import io
import os

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont
from PIL import PngImagePlugin

from official_resnet import atomic_write

# Where the report goes, under model_dir (also the eval TensorBoard folder).
REPORT_DIR = "eval"
MATRIX_CSV = "confusion_matrix.csv"
PER_CLASS_CSV = "per_class.csv"
PICTURE = "confusion_matrix.png"
MAX_MATRIX_CLASSES = 50
# Pairs the picture lists above MAX_MATRIX_CLASSES.
PICTURE_PAIRS = 25
# Class names longer than this are cut in the picture (not in the CSV files).
MAX_NAME_CHARS = 24
PER_CLASS_FIELDS = ("class", "precision", "recall", "f1", "support")

_WHITE, _BLACK, _GRID = (255, 255, 255), (0, 0, 0), (200, 200, 200)
_CORRECT, _CONFUSED = (31, 119, 180), (214, 39, 40)
_MARGIN = 10


def per_class(confusion, class_names):
  """[{class, precision, recall, f1, support}] in class order.

  A class never predicted has precision 0, one without images recall 0, and F1 is 0
  where precision and recall are both 0 (scikit-learn's zero_division=0).
  """
  confusion = np.asarray(confusion, dtype=np.int64)
  true_positives = np.diag(confusion).astype(np.float64)
  predicted, support = confusion.sum(axis=0), confusion.sum(axis=1)

  def ratio(numerator, denominator):
    return np.divide(numerator, denominator, out=np.zeros(len(numerator)), where=denominator > 0)

  precision, recall = ratio(true_positives, predicted), ratio(true_positives, support)
  f1 = ratio(2 * precision * recall, precision + recall)
  return [{"class": name, "precision": float(p), "recall": float(r), "f1": float(f),
           "support": int(s)}
          for name, p, r, f, s in zip(class_names, precision, recall, f1, support)]


def most_confused(confusion, limit=None):
  """[(true index, predicted index, count)] of the off-diagonal cells above 0, most first.

  Ties keep row-major order, so the list is the same on every run.
  """
  confusion = np.asarray(confusion, dtype=np.int64)
  off_diagonal = confusion * (1 - np.eye(len(confusion), dtype=np.int64))
  flat = off_diagonal.ravel()
  order = np.argsort(-flat, kind="stable")
  order = order[flat[order] > 0][:limit]
  size = len(confusion)
  return [(int(index // size), int(index % size), int(flat[index])) for index in order]


def _font(size):
  return ImageFont.load_default(size=size)


def _short(name):
  return name if len(name) <= MAX_NAME_CHARS else name[:MAX_NAME_CHARS - 3] + "..."


def _width(font, text):
  return int(np.ceil(font.getlength(text)))


def _line_height(font):
  return font.getbbox("Ag")[3] + 4


def _shade(colour, fraction):
  """`colour` at `fraction` (0: white, 1: the colour)."""
  return tuple(round(255 + (c - 255) * fraction) for c in colour)


def _vertical_text(image, x, y, text, font, upward):
  """`text` turned a quarter, read upward (ending at y) or downward (starting at y); left edge x."""
  label = Image.new("L", (_width(font, text) + 2, _line_height(font)), 0)
  ImageDraw.Draw(label).text((1, 0), text, font=font, fill=255)
  label = label.rotate(90 if upward else -90, expand=True)
  top = y - label.size[1] if upward else y
  image.paste(Image.new("RGB", label.size, _BLACK), (x, top), label)


def _matrix_picture(confusion, class_names, heading):
  font = _font(12)
  count = len(class_names)
  cell = 40 if count <= 10 else 28 if count <= 20 else 18
  cell_font = _font(12 if cell >= 28 else 9)
  names = [f"{index} {_short(name)}" for index, name in enumerate(class_names)]
  name_width = max(_width(font, name) for name in names) + 8
  line = _line_height(font)
  rows = per_class(confusion, class_names)
  recalls = [f"recall {row['recall']:.3f}" for row in rows]
  precisions = [f"precision {row['precision']:.3f}" for row in rows]
  left = _MARGIN + name_width
  top = _MARGIN + line * (len(heading) + 1) + name_width
  bottom = top + count * cell
  width = max(left + count * cell + max(_width(font, text) for text in recalls) + 8 + _MARGIN,
              _MARGIN * 2 + max(_width(font, text) for text in heading))
  height = bottom + max(_width(font, text) for text in precisions) + 8 + _MARGIN
  image = Image.new("RGB", (width, height), _WHITE)
  draw = ImageDraw.Draw(image)
  for number, text in enumerate(heading):
    draw.text((_MARGIN, _MARGIN + number * line), text, font=font, fill=_BLACK)
  support = confusion.sum(axis=1)
  for row in range(count):
    y = top + row * cell
    draw.text((_MARGIN, y + (cell - line) // 2 + 2), names[row], font=font, fill=_BLACK)
    _vertical_text(image, left + row * cell + (cell - line) // 2, top - 4, names[row], font,
                   upward=True)
    for column in range(count):
      x = left + column * cell
      value = int(confusion[row, column])
      fraction = value / support[row] if support[row] else 0.0
      colour = _shade(_CORRECT if row == column else _CONFUSED, fraction)
      draw.rectangle([x, y, x + cell, y + cell], fill=colour, outline=_GRID)
      text = str(value)
      if value and _width(cell_font, text) <= cell - 2:
        text_x = x + (cell - _width(cell_font, text)) // 2
        text_y = y + (cell - _line_height(cell_font)) // 2 + 2
        draw.text((text_x, text_y), text, font=cell_font,
                  fill=_WHITE if fraction > 0.5 else _BLACK)
    draw.text((left + count * cell + 6, y + (cell - line) // 2 + 2), recalls[row], font=font,
              fill=_BLACK)
  for column in range(count):
    _vertical_text(image, left + column * cell + (cell - line) // 2, bottom + 4,
                   precisions[column], font, upward=False)
  return image


def _pairs_picture(confusion, class_names, heading, pairs):
  font = _font(12)
  line = _line_height(font)
  row_height = line + 6
  support = confusion.sum(axis=1)
  labels = [f"{_short(class_names[true])} -> {_short(class_names[predicted])}"
            for true, predicted, _ in pairs]
  label_width = max([_width(font, label) for label in labels] + [0]) + 12
  bar_width = 320
  figures = [f"{value} ({value / support[true]:.1%} of {support[true]})"
             for true, _, value in pairs]
  figure_width = max([_width(font, text) for text in figures] + [0]) + 12
  top = _MARGIN + line * (len(heading) + 1)
  width = max(_MARGIN * 2 + label_width + bar_width + figure_width,
              _MARGIN * 2 + max(_width(font, text) for text in heading))
  height = top + max(len(pairs), 1) * row_height + _MARGIN
  image = Image.new("RGB", (width, height), _WHITE)
  draw = ImageDraw.Draw(image)
  for number, text in enumerate(heading):
    draw.text((_MARGIN, _MARGIN + number * line), text, font=font, fill=_BLACK)
  if not pairs:
    draw.text((_MARGIN, top), "No image was given another class.", font=font, fill=_BLACK)
  largest = pairs[0][2] if pairs else 1
  for number, ((_, _, value), label, figure) in enumerate(zip(pairs, labels, figures)):
    y = top + number * row_height
    draw.text((_MARGIN, y + 3), label, font=font, fill=_BLACK)
    x = _MARGIN + label_width
    draw.rectangle([x, y + 2, x + max(1, round(bar_width * value / largest)), y + row_height - 2],
                   fill=_CONFUSED)
    draw.text((x + bar_width + 8, y + 3), figure, font=font, fill=_BLACK)
  return image


def picture(step, metrics):
  """PNG bytes of the report of `metrics` (what Trainer.evaluate returns) at `step`.

  Its PNG text chunks hold the heading (Title) and the numbers drawn (Description),
  for readers that cannot see the picture.
  """
  class_names = [row["class"] for row in metrics["per_class"]]
  confusion = np.asarray(metrics["confusion_matrix"], dtype=np.int64)
  summary = (f"step {step}: top-1 {metrics['top_1_accuracy']:.4f} over {metrics['examples']} "
             f"images, {len(class_names)} classes")
  if len(class_names) <= MAX_MATRIX_CLASSES:
    heading = [f"Confusion matrix at {summary}",
               "Rows: true class; columns: predicted class. Shade: share of the row's images "
               "(blue: right, red: confused)."]
    image = _matrix_picture(confusion, class_names, heading)
    description = _csv_text(_matrix_rows(confusion, class_names))
  else:
    pairs = most_confused(confusion, PICTURE_PAIRS)
    heading = [f"Most confused pairs at {summary}",
               f"The {len(pairs)} largest counts of images of one class predicted as another "
               "(true -> predicted)."]
    image = _pairs_picture(confusion, class_names, heading, pairs)
    description = _csv_text([("true", "predicted", "count")] + [
        (class_names[true], class_names[predicted], value) for true, predicted, value in pairs])
  info = PngImagePlugin.PngInfo()
  info.add_text("Title", heading[0])
  info.add_text("Description", description)
  buffer = io.BytesIO()
  image.save(buffer, format="PNG", pnginfo=info)
  return buffer.getvalue()


def _matrix_rows(confusion, class_names):
  return [("true \\ predicted", *class_names)] + [
      (name, *(int(value) for value in row)) for name, row in zip(class_names, confusion)]


def _csv_text(rows):
  buffer = io.StringIO()
  csv.writer(buffer, lineterminator="\n").writerows(rows)
  return buffer.getvalue()


def write(directory, metrics, png):
  """Writes MATRIX_CSV, PER_CLASS_CSV and PICTURE (`png`, from picture()) into `directory`.

  Each file is written whole under a temporary name and renamed, so a reader never
  opens half a report.
  """
  class_names = [row["class"] for row in metrics["per_class"]]
  matrix = _csv_text(_matrix_rows(metrics["confusion_matrix"], class_names))
  figures = _csv_text([PER_CLASS_FIELDS] + [tuple(row[field] for field in PER_CLASS_FIELDS)
                                            for row in metrics["per_class"]])
  for name, contents in ((MATRIX_CSV, matrix), (PER_CLASS_CSV, figures), (PICTURE, png)):
    atomic_write.write_atomically(os.path.join(directory, name), contents)

"""The input benchmark: ImageNet-like generated records, and a report consistent with its passes."""
import json
import multiprocessing
import os
import pathlib
import statistics

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import pipeline
from input_pipeline import sources


NUM_IMAGES, NUM_SHARDS = 8, 2


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """Generated once: the records test reads these files, the report test times them."""
  directory = str(tmp_path_factory.mktemp("data"))
  pipeline.ensure_data(directory, NUM_IMAGES, NUM_SHARDS, processes=2)
  return directory


def test_generated_records_are_photo_sized_jpegs(data_dir):
  files = pipeline.ensure_data(data_dir, NUM_IMAGES, NUM_SHARDS, processes=2)
  assert [os.path.basename(f) for f in files] == ["train-00000-of-00002", "train-00001-of-00002"]
  examples = [sources.parse_imagenet_record(r, label_offset=1)
              for r in tf.data.TFRecordDataset(files)]
  assert len(examples) == NUM_IMAGES
  for example in examples:
    encoded = example["image"].numpy()
    assert tf.io.is_jpeg(encoded)
    shape = tuple(tf.image.extract_jpeg_shape(encoded).numpy()[:2])
    assert shape in pipeline.IMAGE_SHAPES
    # Photo-like, not flat: real detail compresses to tens of KB, flat colour to a few.
    assert len(encoded) > 25_000
    pixels = tf.io.decode_jpeg(encoded).numpy().astype(np.float32)
    assert pixels.std() > 20
  # A second call (the fixture's was the first) reuses the files instead of generating again.
  mtimes = [os.path.getmtime(f) for f in files]
  assert pipeline.ensure_data(data_dir, NUM_IMAGES, NUM_SHARDS, processes=2) == files
  assert [os.path.getmtime(f) for f in files] == mtimes


@pytest.mark.slow
def test_worker_processes_write_the_records_the_calling_process_writes(data_dir, tmp_path,
                                                                       monkeypatch):
  # Large sets are encoded by spawned workers; this small one too, with the threshold lowered.
  monkeypatch.setattr(pipeline, "MIN_IMAGES_FOR_WORKERS", NUM_IMAGES)
  contexts = []
  get_context = multiprocessing.get_context
  monkeypatch.setattr(multiprocessing, "get_context",
                      lambda method: contexts.append(method) or get_context(method))
  files = pipeline.ensure_data(str(tmp_path), NUM_IMAGES, NUM_SHARDS, processes=2)
  assert contexts == ["spawn"]  # The pool ran.
  in_process = pipeline.ensure_data(data_dir, NUM_IMAGES, NUM_SHARDS, processes=2)
  assert [os.path.basename(f) for f in files] == [os.path.basename(f) for f in in_process]
  for pooled, local in zip(files, in_process):
    assert pathlib.Path(pooled).read_bytes() == pathlib.Path(local).read_bytes()


@pytest.mark.slow
def test_report_rows_agree_with_their_passes(data_dir, tmp_path):
  out = tmp_path / "report.json"
  pipeline.main(["--data_dir", data_dir, "--num_images", str(NUM_IMAGES),
                 "--num_shards", str(NUM_SHARDS),
                 "--image_size", "32", "--batch_size", "4", "--passes", "2",
                 "--train_batches", "2", "--threads", "2", "--output_dtypes", "float32,uint8",
                 "--augmentations", "randaugment+erasing", "--json", str(out)])
  report = json.loads(out.read_text())
  rows = {row["pipeline"]: row for row in report["results"]}
  assert set(rows) == {"train ceiling", "train float32", "train uint8",
                       "train uint8 randaugment+erasing",
                       "eval ceiling", "eval float32", "eval uint8"}
  augmented = rows["train uint8 randaugment+erasing"]
  assert augmented["of_plain"] == pytest.approx(
      augmented["images_per_second"] / rows["train uint8"]["images_per_second"])
  assert report["settings"]["augmentations"] == {
      "randaugment+erasing": pipeline.AUGMENTATIONS["randaugment+erasing"]}
  for name, row in rows.items():
    assert len(row["passes"]) == 2
    assert row["images_per_second"] == pytest.approx(statistics.median(row["passes"]))
    assert row["peak_rss_mb"] > 0 and row["cpu_ms_per_image"] > 0
    if "ceiling" not in name:
      ceiling = rows[f"{name.split()[0]} ceiling"]["images_per_second"]
      assert row["ratio"] == pytest.approx(row["images_per_second"] / ceiling)
  assert report["settings"]["warmup_passes"] == 1
  # The official input_fn only makes 224 px images: no official rows to divide by at 32.
  assert report["official"] == {"status": "skipped",
                                "reason": "the official input_fn outputs 224 px. "
                                          "Received: image_size=32"}
  assert report["settings"]["num_images"] == 8 and report["settings"]["data_bytes"] > 8 * 25_000

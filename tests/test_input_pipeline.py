"""build_dataset and dataset_info: batches, sharding, exact eval, label offset, bad files,
errors."""
import dataclasses
import logging
import os

import numpy as np
import pytest
import tensorflow as tf

import image_fixtures
from input_pipeline import DataConfig
from input_pipeline import bad_data
from input_pipeline import build_dataset
from input_pipeline import build_train_stream
from input_pipeline import constants
from input_pipeline import dataset_info
from input_pipeline import per_replica_batch_size
from input_pipeline import preprocessing
from input_pipeline import sources
from official_resnet.demo import photos

SIZE = 32
NUM_RECORDS = 13  # not a multiple of any batch size used here


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
  """13 JPEG records over 4 shards; stored label = index + 1 as in the official files."""
  directory = str(tmp_path_factory.mktemp("records"))
  image_fixtures.make_record_shards(directory, NUM_RECORDS, num_shards=4)
  image_fixtures.make_record_shards(os.path.join(directory, "one"), NUM_RECORDS, num_shards=1)
  return directory


def _records_config(directory, pattern="train-*", **overrides):
  settings = dict(source="imagenet", data_dir=directory, train_file_pattern=pattern,
                  eval_file_pattern=pattern, image_size=SIZE, batch_size=4,
                  num_classes=NUM_RECORDS, shuffle_buffer_size=64)
  return DataConfig(**{**settings, **overrides})


def _labels(dataset) -> list[int]:
  return [int(label) for _, labels in dataset for label in labels.numpy()]


def _context(index, pipelines=2):
  return tf.distribute.InputContext(num_input_pipelines=pipelines, input_pipeline_id=index,
                                    num_replicas_in_sync=pipelines)


def test_synthetic_batches_have_exact_shapes_and_dtypes():
  config = DataConfig(image_size=SIZE, num_classes=3, batch_size=4, synthetic_num_examples=10)
  train = build_dataset(config, training=True)
  assert train.element_spec[0].shape.as_list() == [4, SIZE, SIZE, 3]
  assert train.element_spec[0].dtype == tf.float32
  assert train.element_spec[1].shape.as_list() == [4] and train.element_spec[1].dtype == tf.int32
  # Training repeats forever: more batches than 10 examples make.
  assert len(_labels(train.take(5))) == 20
  evaluation = build_dataset(config, training=False)
  assert evaluation.element_spec[0].shape.as_list() == [None, SIZE, SIZE, 3]
  assert sorted(_labels(evaluation)) == sorted(i % 3 for i in range(10))


def test_synthetic_classes_differ_in_colour():
  config = DataConfig(image_size=SIZE, num_classes=2, batch_size=8, synthetic_num_examples=8,
                      normalization="unit")
  images, labels = next(iter(build_dataset(config, training=False)))
  means = [images.numpy()[labels.numpy() == c].mean(axis=(0, 1, 2)) for c in (0, 1)]
  assert np.abs(means[0] - means[1]).max() > 0.2
  assert images.numpy().min() >= -1.0 and images.numpy().max() <= 1.0


def test_synthetic_jpegs_reach_the_map_function_as_a_capture_not_a_constant():
  # A constant in the function would be copied into every rewrite of the dataset's graph:
  # hundreds of MiB at ImageNet's 1000 classes. (Tracing copies eager tensors of up to 128
  # elements in as constants: small ones stay small.)
  num_classes = 200
  source = sources.make_source(DataConfig(image_size=SIZE, num_classes=num_classes), True)
  function = tf.function(source.to_example).get_concrete_function(tf.TensorSpec([], tf.int64))
  constants_bytes = [op.get_attr("value").ByteSize()
                     for op in function.graph.get_operations() if op.type == "Const"]
  assert max(constants_bytes) < 1024
  jpegs = [t for t in function.captured_inputs if t.dtype == tf.string]
  assert [t.shape.as_list() for t in jpegs] == [[num_classes]]
  assert tf.io.decode_jpeg(jpegs[0][7]).shape[2] == 3


def test_uint8_output_is_the_unnormalized_float_output(records_dir):
  floats = build_dataset(_records_config(records_dir, seed=1), training=False)
  raw = build_dataset(_records_config(records_dir, seed=1, output_dtype="uint8"), training=False)
  assert raw.element_spec[0].dtype == tf.uint8
  for (float_images, float_labels), (raw_images, raw_labels) in zip(floats, raw):
    np.testing.assert_array_equal(float_labels, raw_labels)
    restored = float_images.numpy() + np.array(constants.RGB_MEANS, np.float32)
    np.testing.assert_allclose(raw_images.numpy(), restored, atol=0.51)


def test_eval_sees_every_example_once_with_a_partial_last_batch(records_dir):
  dataset = build_dataset(_records_config(records_dir), training=False)
  sizes = [int(labels.shape[0]) for _, labels in dataset]
  assert sorted(sizes, reverse=True) == [4, 4, 4, 1]
  assert sorted(_labels(dataset)) == list(range(NUM_RECORDS))


@pytest.mark.parametrize("label_offset,expected_first", [(1, 0), (0, 1)])
def test_label_offset(records_dir, label_offset, expected_first):
  config = _records_config(records_dir, label_offset=label_offset)
  labels = sorted(_labels(build_dataset(config, training=False)))
  assert labels == list(range(expected_first, expected_first + NUM_RECORDS))


@pytest.mark.parametrize("pattern", ["train-*", "one/train-*"], ids=["by_file", "by_record"])
def test_two_input_contexts_see_disjoint_shards_covering_the_set(records_dir, pattern):
  config = _records_config(records_dir, pattern)
  seen = [_labels(build_dataset(config, False, _context(i))) for i in range(2)]
  assert not set(seen[0]) & set(seen[1])
  assert sorted(seen[0] + seen[1]) == list(range(NUM_RECORDS))
  # Training draws each pipeline's examples from its own shard only.
  train = build_dataset(config, True, _context(0))
  assert set(_labels(train.take(6))) <= set(seen[0])


def test_synthetic_contexts_are_disjoint():
  config = DataConfig(image_size=SIZE, num_classes=9, batch_size=2, synthetic_num_examples=9)
  seen = [_labels(build_dataset(config, False, _context(i))) for i in range(2)]
  assert sorted(seen[0] + seen[1]) == list(range(9)) and not set(seen[0]) & set(seen[1])


def test_batch_is_divided_between_replicas():
  config = DataConfig(image_size=SIZE, num_classes=2, batch_size=8, synthetic_num_examples=8)
  context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                       num_replicas_in_sync=2)
  assert build_dataset(config, True, context).element_spec[0].shape[0] == 4
  with pytest.raises(ValueError, match=r"divisible by the 3 replicas.*Received: batch_size=8"):
    build_dataset(config, True, tf.distribute.InputContext(1, 0, 3))
  assert per_replica_batch_size(64, 2) == 32
  with pytest.raises(ValueError, match=r"^batch_size \(the global batch\) must be divisible by "
                     r"the 2 replicas in sync\. Received: batch_size=63$"):
    per_replica_batch_size(63, 2)


def test_corrupt_images_are_skipped_counted_and_logged(tmp_path, caplog):
  root = str(tmp_path)
  image_fixtures.make_image_folder(root, per_class=3)
  with open(os.path.join(root, "cat", "cat_0.jpg"), "rb") as f:
    truncated = f.read()[:300]
  with open(os.path.join(root, "cat", "truncated.jpg"), "wb") as f:
    f.write(truncated)
  with open(os.path.join(root, "dog", "notes.jpg"), "w") as f:
    f.write("not an image")
  config = DataConfig(source="folder", data_dir=root, image_size=SIZE, batch_size=4,
                      validation_fraction=0.0)
  assert dataset_info(config, True).num_examples == 8
  bad_data.SKIPPED_IMAGES.reset()
  with caplog.at_level(logging.WARNING):
    labels = _labels(build_dataset(dataclasses.replace(config, seed=0), training=True).take(4))
  assert len(labels) == 16  # training went on past the bad files
  skipped = bad_data.SKIPPED_IMAGES.by_name
  assert skipped[os.path.join(root, "cat", "truncated.jpg")] >= 1
  assert skipped[os.path.join(root, "dog", "notes.jpg")] >= 1
  assert {name for name in skipped if name.startswith(root)} == {
      os.path.join(root, "cat", "truncated.jpg"), os.path.join(root, "dog", "notes.jpg")}
  assert any("Skipped 2 unreadable image(s)" in r.getMessage() and
             ("truncated.jpg" in r.getMessage() or "notes.jpg" in r.getMessage())
             for r in caplog.records)


def test_good_images_are_never_counted_as_skipped():
  # Unseeded, so tf.data may reorder whatever is not pinned in order; the
  # accounting must still see every batch's numbers ascending.
  config = DataConfig(image_size=SIZE, num_classes=2, batch_size=2, synthetic_num_examples=6)
  bad_data.SKIPPED_IMAGES.reset()
  assert len(_labels(build_dataset(config, training=True).take(200))) == 400
  assert bad_data.SKIPPED_IMAGES.count == 0


def test_corrupt_record_is_skipped_in_eval(tmp_path):
  good = [photos.encode(image_fixtures.image(i)) for i in range(3)]
  path = image_fixtures.write_records(str(tmp_path / "validation-00000-of-00001"),
                                      good[:2] + [b"\xff\xd8\xff garbage"] + good[2:], [1, 2, 3, 4])
  config = _records_config(str(tmp_path), "validation-*")
  assert sorted(_labels(build_dataset(config, training=False))) == [0, 1, 3]
  assert bad_data.SKIPPED_IMAGES.by_name[path] == 1


@pytest.mark.parametrize("num_good", [3, 0])
def test_corrupt_records_after_the_last_good_one_are_counted_in_eval(tmp_path, num_good):
  # No later good image leaves a gap after them: the end of the pass must report them.
  good = [photos.encode(image_fixtures.image(i)) for i in range(num_good)]
  bad = [b"\xff\xd8\xff garbage", b"not an image"]
  path = image_fixtures.write_records(str(tmp_path / "validation-00000-of-00001"), good + bad,
                                      list(range(1, num_good + len(bad) + 1)))
  config = _records_config(str(tmp_path), "validation-*", batch_size=2)
  bad_data.SKIPPED_IMAGES.reset()
  dataset = build_dataset(config, training=False)
  for passes in (1, 2):
    assert sorted(_labels(dataset)) == list(range(num_good))
    assert bad_data.SKIPPED_IMAGES.count == 2 * passes
    assert bad_data.SKIPPED_IMAGES.by_name[path] == 2 * passes


def test_record_bounding_boxes_are_parsed_in_sample_order(tmp_path):
  path = image_fixtures.write_records(
      str(tmp_path / "train-0"), [photos.encode(image_fixtures.image(0))], [5],
      bboxes=[[(0.1, 0.2, 0.6, 0.7), (0.3, 0.0, 0.9, 0.5)]])
  record = next(iter(tf.data.TFRecordDataset(path)))
  example = sources.parse_imagenet_record(record, label_offset=1)
  assert int(example["label"]) == 4 and example["label"].dtype == tf.int32
  np.testing.assert_allclose(example["bbox"], [[[0.1, 0.2, 0.6, 0.7], [0.3, 0.0, 0.9, 0.5]]],
                             rtol=1e-6)


AUGMENTED = dict(color_jitter=0.4, randaugment_layers=2, randaugment_magnitude=9.0,
                 randaugment_magnitude_std=0.5, random_erasing_probability=0.5)


def _pixels(dataset, batches):
  return np.concatenate([images.numpy() for images, _ in dataset.take(batches)])


def test_the_train_stream_resumes_at_any_step_and_each_epoch_has_its_own_order(records_dir):
  config = _records_config(records_dir, seed=5, output_dtype="uint8", **AUGMENTED)
  # 13 records, batches of 4: 3 steps an epoch; three epochs.
  stream = _pixels(build_train_stream(config, steps_per_epoch=3), 9)
  for step in (2, 3, 4):  # mid-epoch, at an epoch's start, one step into the next
    resumed = _pixels(build_train_stream(config, steps_per_epoch=3, start_step=step), 9 - step)
    np.testing.assert_array_equal(resumed, stream[4 * step:], err_msg=f"step {step}")
  epochs = np.split(stream, 3)
  assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
  with pytest.raises(ValueError, match=r"steps_per_epoch must be >= 1\. Received: 0"):
    build_train_stream(config, steps_per_epoch=0)


@pytest.mark.parametrize("augmentation", [{}, AUGMENTED], ids=["crop_and_flip", "augmented"])
def test_seeded_training_batches_repeat_and_resume_by_skipping(records_dir, augmentation):
  config = _records_config(records_dir, seed=5, output_dtype="uint8", **augmentation)
  first = _pixels(build_dataset(config, training=True), 6)
  # A rebuilt pipeline that skips the batches read before gives the rest.
  resumed = _pixels(build_dataset(config, training=True).skip(4), 2)
  np.testing.assert_array_equal(resumed, first[16:])
  other_seed = _pixels(build_dataset(dataclasses.replace(config, seed=6), training=True), 6)
  assert not np.array_equal(other_seed, first)


def test_augmentation_changes_the_crops_it_is_given_and_nothing_else(records_dir):
  plain = _records_config(records_dir, seed=5, output_dtype="uint8")
  augmented = dataclasses.replace(plain, **AUGMENTED)
  plain_images, plain_labels = next(iter(build_dataset(plain, training=True)))
  images, labels = next(iter(build_dataset(augmented, training=True)))
  np.testing.assert_array_equal(labels, plain_labels)  # same order, same examples
  assert images.dtype == tf.uint8 and images.shape == plain_images.shape
  assert not np.array_equal(images, plain_images)
  # Turning augmentation off leaves the crops as they were with it off: their seeds are apart.
  np.testing.assert_array_equal(
      _pixels(build_dataset(dataclasses.replace(augmented, color_jitter=0.0, randaugment_layers=0,
                                                random_erasing_probability=0.0), True), 1),
      plain_images)


def test_float32_output_is_the_augmented_uint8_normalized(records_dir):
  raw = _records_config(records_dir, seed=5, output_dtype="uint8", color_jitter=0.4,
                        random_erasing_probability=1.0)
  floats = dataclasses.replace(raw, output_dtype="float32")
  np.testing.assert_allclose(
      _pixels(build_dataset(floats, training=True), 2),
      _pixels(build_dataset(raw, training=True), 2).astype(np.float32)
      - np.array(constants.RGB_MEANS, np.float32), atol=1e-4)


def test_eval_batches_come_at_the_eval_size_and_crop_fraction(records_dir):
  config = _records_config(records_dir, eval_image_size=48, eval_crop_fraction=1.0,
                           output_dtype="uint8")
  assert build_dataset(config, training=True).element_spec[0].shape.as_list() == [4, SIZE, SIZE, 3]
  evaluation = build_dataset(config, training=False)
  assert evaluation.element_spec[0].shape.as_list() == [None, 48, 48, 3]
  pairs = [(image, label) for images, labels in evaluation
           for image, label in zip(images.numpy(), labels.numpy())]
  assert len(pairs) == NUM_RECORDS
  for image, label in pairs:
    expected = preprocessing.to_uint8(preprocessing.preprocess_for_eval(
        photos.encode(image_fixtures.image(label)), 48, resize_size=48))
    np.testing.assert_array_equal(image, expected)


def test_train_crop_ranges_and_the_flip_switch_reach_the_crops(records_dir):
  # The whole image (40x56, aspect 1.4) is the only crop of area 1 and aspect 1.3-1.5: every
  # training image is the image, flipped or not, resized; never flipped with random_flip off.
  config = _records_config(records_dir, seed=1, output_dtype="uint8",
                           train_crop_area_range=(1.0, 1.0), train_crop_aspect_range=(1.3, 1.5))
  flips = {True: [], False: []}
  for random_flip in flips:
    images, labels = next(iter(build_dataset(dataclasses.replace(config, random_flip=random_flip),
                                             training=True)))
    for image, label in zip(images.numpy(), labels.numpy()):
      decoded = preprocessing.decode_image(photos.encode(image_fixtures.image(int(label))))
      as_is, mirrored = [preprocessing.to_uint8(preprocessing.resize(whole, SIZE, SIZE)).numpy()
                         for whole in (decoded, decoded[:, ::-1])]
      assert np.array_equal(image, as_is) or np.array_equal(image, mirrored)
      flips[random_flip].append(not np.array_equal(image, as_is))
  assert any(flips[True]) and not any(flips[False])


def test_cache_keeps_records_after_the_files_are_gone(tmp_path):
  directory = str(tmp_path)
  files = image_fixtures.make_record_shards(directory, 6, num_shards=2)
  config = _records_config(directory, cache=True, batch_size=2, num_classes=6)
  iterator = iter(build_dataset(config, training=True))
  next(iterator)  # the shuffle buffer (64) has now read, and so cached, the whole set
  for path in files:
    os.remove(path)
  assert len([next(iterator) for _ in range(10)]) == 10  # three more epochs, from memory


def test_private_thread_pool_and_determinism_options():
  config = DataConfig(image_size=SIZE, num_classes=2, batch_size=2, synthetic_num_examples=4,
                      private_threads=3, seed=7)
  options = build_dataset(config, training=True).options()
  assert options.threading.private_threadpool_size == 3 and options.deterministic
  assert not build_dataset(DataConfig(image_size=SIZE, num_classes=2), True).options().deterministic


def test_dataset_info_reads_labels_file_and_counts_records(records_dir, tmp_path):
  info = dataset_info(_records_config(records_dir), training=True)
  assert info.num_examples == NUM_RECORDS and info.class_names == tuple(map(str, range(13)))
  (tmp_path / "labels.txt").write_text("tench\ngoldfish\n")
  image_fixtures.make_record_shards(str(tmp_path), 3, num_shards=1)
  info = dataset_info(_records_config(str(tmp_path)), training=True)
  assert info.class_names == ("tench", "goldfish") and info.num_examples == 3


def test_dataset_info_knows_the_official_imagenet_sizes(tmp_path):
  for i in range(constants.IMAGENET_NUM_EVAL_SHARDS):
    (tmp_path / f"validation-{i:05d}-of-00128").touch()  # empty files: never read
  config = DataConfig(source="imagenet", data_dir=str(tmp_path))
  info = dataset_info(config, training=False)
  assert info.num_examples == constants.IMAGENET_NUM_EVAL_IMAGES == 50_000
  assert len(info.class_names) == 1000


def test_pattern_matching_nothing_is_a_clear_error(tmp_path):
  config = _records_config(str(tmp_path), "train-*-of-01024")
  with pytest.raises(ValueError, match=r"train_file_pattern matches no TFRecord files. "
                                       r"Received: '.*train-\*-of-01024'"):
    build_dataset(config, training=True)
  with pytest.raises(ValueError, match=r"needs data_dir.*Received: data_dir=None"):
    dataset_info(DataConfig(source="imagenet"), training=False)


@pytest.mark.parametrize("field,value,message", [
    ("source", "csv", r"source must be one of \('imagenet', 'folder', 'tfds', 'synthetic'\)\. "
                      r"Received: 'csv'"),
    ("normalization", "bgr", r"normalization must be one of .*Received: 'bgr'"),
    ("output_dtype", "float16", r"output_dtype must be one of .*Received: 'float16'"),
    ("image_size", 8, r"image_size must be >= 32\. Received: 8"),
    ("validation_fraction", 1.0, r"validation_fraction must be in \[0, 1\)\. Received: 1.0"),
    ("batch_size", 0, r"batch_size must be >= 1\. Received: 0"),
    ("eval_image_size", 16, r"eval_image_size must be None or >= 32\. Received: 16"),
    ("train_crop_area_range", (0.5, 0.2),
     r"train_crop_area_range must be \(low, high\) with 0 < low <= high <= 1\. "
     r"Received: \(0.5, 0.2\)"),
    ("train_crop_area_range", (0.0, 1.0), r"train_crop_area_range must be"),
    ("train_crop_aspect_range", (0.0, 1.0), r"train_crop_aspect_range must be \(low, high\)"),
    ("eval_crop_fraction", 1.2, r"eval_crop_fraction must be in \(0, 1\]\. Received: 1.2"),
    ("color_jitter", -0.4, r"color_jitter must be >= 0\. Received: -0.4"),
    ("autoaugment", "v9", r"autoaugment must be None or one of \('v0',\)\. Received: 'v9'"),
    ("randaugment_layers", -1, r"randaugment_layers must be >= 0"),
    ("randaugment_magnitude", -2.0, r"randaugment_magnitude must be >= 0"),
    ("randaugment_magnitude_std", -0.5, r"randaugment_magnitude_std must be >= 0"),
    ("randaugment_variant", "keras", r"randaugment_variant must be one of \('model_garden', "
                                     r"'timm'\)\. Received: 'keras'"),
    ("random_erasing_probability", 1.5, r"random_erasing_probability must be in \[0, 1\]"),
    ("random_erasing_area_range", (0.2,), r"random_erasing_area_range must be \(low, high\)"),
])
def test_config_rejects_bad_values(field, value, message):
  with pytest.raises(ValueError, match=message):
    DataConfig(**{field: value})


def test_config_refuses_autoaugment_and_randaugment_together():
  with pytest.raises(ValueError, match=r"autoaugment must be None when randaugment_layers > 0 "
                                       r"\(one policy or the other\)\. Received: 'v0'"):
    DataConfig(autoaugment="v0", randaugment_layers=2)


def test_eval_size_defaults_to_the_training_size_and_sets_the_shorter_side():
  assert DataConfig(image_size=160).eval_size == 160
  fixres = DataConfig(image_size=160, eval_image_size=224)
  assert (fixres.eval_size, fixres.eval_shorter_side) == (224, 256)
  assert dataclasses.replace(fixres, eval_crop_fraction=0.95).eval_shorter_side == 236
  # A weights' published protocol sets the shorter side itself.
  assert dataclasses.replace(fixres, eval_resize_size=232).eval_shorter_side == 232
  assert not DataConfig().augments and DataConfig(random_erasing_probability=0.25).augments


def test_eval_resize_size_and_crop_fraction_are_checked_against_the_eval_size():
  with pytest.raises(ValueError, match=r"eval_resize_size must be None or >= the eval size "
                                       r"\(48\)\. Received: 40"):
    DataConfig(image_size=32, eval_image_size=48, eval_resize_size=40)
  with pytest.raises(ValueError, match=r"eval_crop_fraction must be 0.875 \(the default\) when "
                                       r"eval_resize_size \(256\) sets the shorter side itself\. "
                                       r"Received: 0.9"):
    DataConfig(eval_resize_size=256, eval_crop_fraction=0.9)


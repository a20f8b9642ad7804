"""build_dataset: the tf.data chain from a source to batches of (images, labels)."""
import dataclasses
import os

import numpy as np
import tensorflow as tf

from input_pipeline import augment
from input_pipeline import bad_data
from input_pipeline import preprocessing
from input_pipeline import sources
from input_pipeline.config import DataConfig

# Images being decoded or waiting their turn: enough that workers rarely wait
# on a slow head image, few enough to bound memory (~0.6 MB each at 224).
MAP_CALLS_PER_THREAD = 4
MIN_MAP_CALLS = 16


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  num_examples: int
  class_names: tuple[str, ...]


def dataset_info(config: DataConfig, training: bool) -> DatasetInfo:
  """Size and class names of the train (training=True) or eval split."""
  source = sources.make_source(config, training)
  return DatasetInfo(source.count_examples(), source.class_names)


def per_replica_batch_size(batch_size: int, num_replicas_in_sync: int) -> int:
  """Each replica's share of the global batch; ValueError unless it divides evenly."""
  if batch_size % num_replicas_in_sync:
    raise ValueError(
        f"batch_size (the global batch) must be divisible by the {num_replicas_in_sync} "
        f"replicas in sync. Received: batch_size={batch_size}")
  return batch_size // num_replicas_in_sync


def _base_seed(config: DataConfig, input_context) -> tf.Tensor:
  """int64 [2]: the root of this pipeline's per-element seeds.

  Derived from config.seed and the pipeline's id, so a rebuilt pipeline draws the
  same crops and augmentation again and two pipelines draw differently; fresh
  entropy when unseeded.
  """
  pipeline_id = input_context.input_pipeline_id if input_context else 0
  sequence = np.random.SeedSequence(None if config.seed is None else [config.seed, pipeline_id])
  return tf.constant(sequence.generate_state(2).astype(np.int64))


def _augment(config: DataConfig, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """uint8 crop -> uint8: colour jitter, AutoAugment or RandAugment, random erasing, as set.

  Each step has its own seed, so turning one on leaves the others' draws as they were.
  """
  jitter_seed, policy_seed, erasing_seed = augment.split_seed(seed, 3)
  if config.color_jitter:
    image = augment.color_jitter(image, jitter_seed, config.color_jitter)
  if config.autoaugment:
    image = augment.auto_augment(image, policy_seed, config.autoaugment)
  if config.randaugment_layers:
    image = augment.rand_augment(
        image, policy_seed, config.randaugment_layers, config.randaugment_magnitude,
        config.randaugment_magnitude_std, config.randaugment_variant)
  if config.random_erasing_probability:
    image = augment.random_erasing(image, erasing_seed, config.random_erasing_probability,
                                   config.random_erasing_area_range)
  return image


def _preprocess_fn(config: DataConfig, training: bool, base_seed: tf.Tensor):
  """(example dict, element index) -> (image, label): decode, crop/resize (augment), then
  normalize or keep uint8."""
  def preprocess(example, index):
    if training:
      seed = tf.random.experimental.stateless_fold_in(base_seed, index)
      crop_seed, augment_seed = augment.split_seed(seed, 2)
      image = preprocessing.preprocess_for_train(
          example["image"], example["bbox"], config.image_size, crop_seed,
          config.train_crop_area_range, config.train_crop_aspect_range, config.random_flip)
      if config.augments:
        # The ops are defined on integer pixels, as PIL's are.
        image = _augment(config, preprocessing.to_uint8(image), augment_seed)
    else:
      image = preprocessing.preprocess_for_eval(
          example["image"], config.eval_size, resize_size=config.eval_shorter_side,
          method=config.eval_resize_method)
    if config.output_dtype == "float32":
      image = preprocessing.normalize(image, config.normalization)
    elif image.dtype != tf.uint8:
      image = preprocessing.to_uint8(image)
    return image, example["label"]
  return preprocess


def _map_calls(config: DataConfig) -> int:
  threads = config.private_threads or os.cpu_count() or 1
  return max(MIN_MAP_CALLS, MAP_CALLS_PER_THREAD * threads)


def _options(config: DataConfig, training: bool) -> tf.data.Options:
  options = tf.data.Options()
  # Slack lets the final prefetch lag so a step's device work and the copy overlap (TPUs).
  options.experimental_slack = training and config.experimental_slack
  # Order matters only for reproducible runs; otherwise a slow image must not stall the rest.
  options.deterministic = config.seed is not None
  # One thread per op: many images are in flight at once, so threads buy throughput, not latency.
  options.threading.max_intra_op_parallelism = 1
  if config.private_threads:
    # A pool of its own keeps input work from competing with the training step's ops.
    options.threading.private_threadpool_size = config.private_threads
  return options


def _end_of_pass(action, element_spec) -> tf.data.Dataset:
  """A dataset that runs `action` when it is read and yields no element of `element_spec`."""
  def run(_):
    with tf.control_dependencies([action()]):
      return tf.nest.map_structure(
          lambda spec: tf.zeros([0, *spec.shape[1:]], spec.dtype), element_spec)
  return tf.data.Dataset.range(1).map(run).filter(lambda *_: tf.constant(False))


def _read_records(source, config: DataConfig, training: bool, input_context,
                  seed) -> tf.data.Dataset:
  # This pipeline's records: sharded by file when every pipeline gets a file,
  # else by record; file order shuffled by `seed`; files read in parallel (see sources).
  dataset = source.read(sources.Shard.from_context(input_context), training, seed)
  if config.cache if training else config.eval_cache:
    # Keep the encoded records in memory after the first pass: later passes skip storage.
    dataset = dataset.cache()
  return dataset


def _batches(config: DataConfig, training: bool, input_context, source, records, seed,
             base_seed, in_flight) -> tf.data.Dataset:
  """`records` -> accounted per-replica batches; training: shuffled by `seed` and endless,
  crops and augmentation drawn from `base_seed`."""
  batch_size = per_replica_batch_size(
      config.batch_size, input_context.num_replicas_in_sync if input_context else 1)
  preprocess = _preprocess_fn(config, training, base_seed)

  def load(index, element):
    element = element if isinstance(element, tuple) else (element,)
    # The name is parked first, so it is there to report if loading fails.
    with tf.control_dependencies([in_flight.remember(index, source.name(*element))]):
      image, label = preprocess(source.to_example(*element), index)
    return index, image, label

  def account(last_index, batch):
    indices, images, labels = batch
    return in_flight.account(last_index, indices), (images, labels)

  dataset = records
  if training:
    # Mix records across files; the bounded buffer bounds memory however large the data.
    dataset = dataset.shuffle(config.shuffle_buffer_size, seed=seed,
                              reshuffle_each_iteration=True)
    # Endless: the trainer counts steps, and no epoch ends on a partial batch.
    dataset = dataset.repeat()
  # Number the elements, so that failures can be named.
  dataset = dataset.enumerate()
  # Decode and preprocess in parallel: the CPU-heavy step. Order is kept so
  # that a missing number is a failed image; with only one call per core, a
  # slow image at the head would idle the others, so several per core.
  dataset = dataset.map(load, num_parallel_calls=_map_calls(config), deterministic=True)
  # Skip images that failed to decode.
  dataset = dataset.ignore_errors()
  # Per-replica batches; training keeps shapes static, eval keeps the last partial batch.
  # In order, so that the accounting below sees the numbers ascending.
  dataset = dataset.batch(batch_size, drop_remainder=training,
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  # Count and name the skipped images from the gaps in each batch's numbers.
  dataset = dataset.scan(tf.constant(-1, tf.int64), account)
  if not training:
    # ...and those that failed after the last good one, once the pass has ended.
    dataset = dataset.concatenate(_end_of_pass(in_flight.account_rest, dataset.element_spec))
  return dataset


# The chain's tf.data functions are traced as written, without autograph (its control flow
# is tf.cond, tf.where and tf.data's own): converting the source of every function the
# chain calls cost about 0.5 s of CPU per pipeline built (benchmarks/README.md, "Short runs").
@tf.autograph.experimental.do_not_convert
def build_dataset(config: DataConfig, training: bool, input_context=None) -> tf.data.Dataset:
  """Batches of (images [B, S, S, 3], labels int32 [B]) for one input pipeline.

  B = config.batch_size / replicas in sync; S = image_size in training, eval_size in
  evaluation. Training: shuffled, endless, full batches. Eval: one pass, each example
  of this pipeline's shard once, the last batch possibly smaller. Images that fail to
  decode are skipped and counted (bad_data.SKIPPED_IMAGES).
  """
  source = sources.make_source(config, training)
  records = _read_records(source, config, training, input_context, config.seed)
  dataset = _batches(config, training, input_context, source, records, config.seed,
                     _base_seed(config, input_context), bad_data.InFlightNames())
  # Overlap preparing the next batches with the current training step.
  dataset = dataset.prefetch(tf.data.AUTOTUNE)
  return dataset.with_options(_options(config, training))


def epoch_seeds(seed: int, epoch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """int64 scalars (file order, record shuffle): the seeds of epoch `epoch` of a run seeded
  with `seed`. Two, since shuffles of equal sizes with one seed would undo each other."""
  pair = tf.random.experimental.stateless_fold_in(tf.constant([seed, 0], tf.int64),
                                                  tf.cast(epoch, tf.int64))
  return tuple(tf.unstack(
      tf.random.stateless_uniform([2], pair, minval=None, maxval=None, dtype=tf.int64)))


@tf.autograph.experimental.do_not_convert
def build_train_stream(config: DataConfig, steps_per_epoch: int, input_context=None,
                       start_step: int = 0) -> tf.data.Dataset:
  """Training batches for every epoch from global step `start_step` on, as one dataset.

  Epoch e is steps_per_epoch steps' batches of build_dataset's training chain, with the
  file order, shuffle and crops of its own seeds (epoch_seeds(config.seed, e)), so a run
  resumed at any step reads what an uninterrupted one reads from there on: in its first
  epoch it skips the batches of the steps already trained. Without config.seed every
  epoch draws an order of its own, and a resumed epoch starts over in a new order.
  Records cached in memory (config.cache) are read from storage once for every epoch, in
  the file order of config.seed.
  """
  if steps_per_epoch < 1:
    raise ValueError(f"steps_per_epoch must be >= 1. Received: {steps_per_epoch}")
  source = sources.make_source(config, True)
  batches_per_step = 1
  if input_context is not None:
    batches_per_step = input_context.num_replicas_in_sync // input_context.num_input_pipelines
  first_epoch, offset = divmod(start_step, steps_per_epoch)
  first_batches = offset * batches_per_step
  skipped = first_batches if config.seed is not None else 0
  run_seed = (config.seed if config.seed is not None
              else int(np.random.default_rng().integers(2**62)))
  base_seed = _base_seed(config, input_context)
  in_flight = bad_data.InFlightNames()
  cached = (_read_records(source, config, True, input_context, config.seed)
            if config.cache else None)

  def epoch_batches(epoch):
    # Traced in a graph of its own, whose seed set_seed sets: tf.random's op-seed handling
    # compares a global seed of 0 with the op seed by Python `==`, which this tensor refuses.
    # The epoch's seed alone decides its data, whatever the global seed.
    tf.random.set_seed(None)
    file_seed, shuffle_seed = epoch_seeds(run_seed, epoch)
    records = (cached if cached is not None
               else _read_records(source, config, True, input_context, file_seed))
    batches = _batches(config, True, input_context, source, records, shuffle_seed,
                       tf.random.experimental.stateless_fold_in(base_seed, epoch), in_flight)
    is_first = tf.equal(epoch, first_epoch)
    skip = tf.where(is_first, tf.constant(skipped, tf.int64), 0)
    take = steps_per_epoch * batches_per_step - tf.where(
        is_first, tf.constant(first_batches, tf.int64), 0)
    return batches.skip(skip).take(take)

  dataset = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(epoch_batches)
  # Overlap preparing the next batches with the current training step, across epoch ends.
  dataset = dataset.prefetch(tf.data.AUTOTUNE)
  options = _options(config, True)
  # The map's calls are set; tf.data's autotuning model ran on, and the process' exit
  # waited on it: 1.5-2 s of a 32 px folder run (benchmarks/README.md, "Short runs").
  options.autotune.enabled = False
  return dataset.with_options(options)

"""The training input: each epoch's batches, in an order of its own, positioned at a global step.

With a data seed, epoch e reads the training set shuffled with a seed derived from
(seed, e), and a run resumed mid-epoch skips the batches it already trained on, so it sees
what an uninterrupted run would, as far as the input pipeline is deterministic given its
seed.
"""
import dataclasses

from absl import logging
import numpy as np

import input_pipeline


def epoch_seed(seed, epoch):
  """The data seed of one epoch; None (unseeded) stays None."""
  if seed is None:
    return None
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def normalizes_on_device(experiment):
  """Whether the train step normalizes uint8 training batches on its device (TrainConfig).

  Only where the pipeline would otherwise normalize (float32 output; a model that
  normalizes its own input gets uint8 anyway) and in the custom loop (fit feeds
  the model as it is).
  """
  return (experiment.train.normalize_on_device and experiment.train.training_loop == "custom"
          and experiment.data.output_dtype == "float32")


class TrainInput:
  """Training batches of `experiment`'s data under `strategy`, epoch by epoch."""

  def __init__(self, experiment, strategy, steps_per_epoch):
    data = experiment.data
    # The train step normalizes uint8 pixels itself when normalizes_on_device.
    self.data_config = (dataclasses.replace(data, output_dtype="uint8")
                        if normalizes_on_device(experiment) else data)
    self._strategy = strategy
    self._steps_per_epoch = steps_per_epoch
    # input_pipeline_id -> its training records, cached in memory, read once for every epoch.
    self._cached_records = {}
    # (epoch, global step it stands at, distributed iterator) of the last iterator handed out.
    self._position = None

  def _records(self, input_context):
    """The records every epoch's pipeline reads when they are cached (data.cache), else None.

    tf.data keeps the cache with the records' dataset object, so epochs share one. Its file
    order is the run's (data.seed), not an epoch's: a resumed run caches what an
    uninterrupted one cached.
    """
    if not self.data_config.cache:
      return None
    pipeline_id = input_context.input_pipeline_id if input_context is not None else 0
    if pipeline_id not in self._cached_records:
      self._cached_records[pipeline_id] = input_pipeline.read_records(
          self.data_config, training=True, input_context=input_context)
    return self._cached_records[pipeline_id]

  def dataset(self, epoch, offset=0, input_context=None):
    """Epoch `epoch`'s training batches from step `offset` of the epoch on: the same batches
    in every run with a data seed (each epoch its own order)."""
    records = self._records(input_context)
    data = dataclasses.replace(self.data_config, seed=epoch_seed(self.data_config.seed, epoch))
    dataset = input_pipeline.build_dataset(data, training=True, input_context=input_context,
                                           records=records)
    if offset and data.seed is not None:
      batches_per_step = 1
      if input_context is not None:
        batches_per_step = input_context.num_replicas_in_sync // input_context.num_input_pipelines
      dataset = dataset.skip(offset * batches_per_step)
    return dataset

  def iterator(self, step):
    """A distributed iterator over the epoch of global step `step`, positioned at it.

    An iterator ends its use at its epoch's end: each epoch reads its own seeded order
    (dataset), so a run resumed at an epoch boundary reads what an uninterrupted one reads.
    """
    epoch, offset = divmod(step, self._steps_per_epoch)
    if self._position is not None and self._position[:2] == (epoch, step):
      return self._position[2]
    if offset:
      if self.data_config.seed is None:
        logging.info("No data seed: epoch %d restarts its data in a new order.", epoch)
      else:
        logging.info("Skipping %d batches to resume epoch %d where it stopped.", offset, epoch)
    iterator = iter(self._strategy.distribute_datasets_from_function(
        lambda context: self.dataset(epoch, offset, context)))
    self._position = (epoch, step, iterator)
    return iterator

  def advance(self, iterator, step):
    """Records that `iterator`, from iterator(), now stands at global step `step` of its epoch."""
    self._position = (self._position[0], step, iterator)

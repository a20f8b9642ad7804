"""The training input: one stream of batches over every epoch, positioned at a global step.

With a data seed, epoch e reads the training set in an order of its own, derived from
(seed, e), and a run resumed mid-epoch skips the batches it already trained on
(input_pipeline.build_train_stream), so it sees what an uninterrupted run would, as far as
the input pipeline is deterministic given its seed. The stream runs across epoch ends:
the loop never waits for a pipeline to be rebuilt.
"""
import dataclasses

from absl import logging

import input_pipeline


def normalizes_on_device(experiment):
  """Whether the train step normalizes uint8 training batches on its device (TrainConfig).

  Only where the pipeline would otherwise normalize (float32 output; a model that
  normalizes its own input gets uint8 anyway) and in the custom loop (fit feeds
  the model as it is).
  """
  return (experiment.train.normalize_on_device and experiment.train.training_loop == "custom"
          and experiment.data.output_dtype == "float32")


class TrainInput:
  """Training batches of `experiment`'s data under `strategy`."""

  def __init__(self, experiment, strategy, steps_per_epoch):
    data = experiment.data
    # The train step normalizes uint8 pixels itself when normalizes_on_device.
    self.data_config = (dataclasses.replace(data, output_dtype="uint8")
                        if normalizes_on_device(experiment) else data)
    self._strategy = strategy
    self._steps_per_epoch = steps_per_epoch
    # (global step it stands at, distributed iterator) of the last iterator handed out.
    self._position = None

  def dataset(self, start_step=0, input_context=None):
    """The batches of global steps `start_step`, `start_step` + 1, ...: the same in every run
    with a data seed."""
    return input_pipeline.build_train_stream(self.data_config, self._steps_per_epoch,
                                             input_context=input_context, start_step=start_step)

  def iterator(self, step):
    """A distributed iterator over the batches from global step `step` on: the one handed out
    last when it stands there, else a new one."""
    if self._position is not None and self._position[0] == step:
      return self._position[1]
    epoch, offset = divmod(step, self._steps_per_epoch)
    if offset:
      if self.data_config.seed is None:
        logging.info("No data seed: epoch %d restarts its data in a new order.", epoch)
      else:
        logging.info("Skipping %d batches to resume epoch %d where it stopped.", offset, epoch)
    iterator = iter(self._strategy.distribute_datasets_from_function(
        lambda context: self.dataset(step, context)))
    self._position = (step, iterator)
    return iterator

  def advance(self, iterator, step):
    """Records that `iterator`, from iterator(), now stands at global step `step`."""
    self._position = (step, iterator)

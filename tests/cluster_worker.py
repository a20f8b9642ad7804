"""A worker of test_multi_worker.py's cluster: the command (`python -m official_resnet.main`)
reading BATCHES, the NaN at BAD_STEP on the second worker, instead of its training pipeline.

Run as `python tests/cluster_worker.py --flag=value ...`; the exit status is the command's.
"""
from absl import app
from absl import logging

import input_pipeline
from official_resnet import main
import cli_fixtures
import trainer_fixtures as fixtures

STEPS, BAD_STEP = 8, 6
BATCHES = cli_fixtures.global_batches(STEPS, BAD_STEP)

if __name__ == "__main__":
  input_pipeline.build_train_stream = fixtures.train_stream_of(*BATCHES)
  logging.set_verbosity(logging.INFO)
  app.run(main.main, flags_parser=main.parse_flags)

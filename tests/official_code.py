"""The official tensorflow/models code and its tf_keras, which the parity tests run as their
reference. `./run.sh test` installs them into .official (benchmarks/official.py); without
them those tests fail with the install command rather than pass unchecked."""
import pytest

from benchmarks import official


def import_official(name: str):
  """Module `name` of the official code (or tf_keras); fails the test when it is absent."""
  module, reason = official.import_module(name)
  if module is None:
    pytest.fail(reason)
  return module

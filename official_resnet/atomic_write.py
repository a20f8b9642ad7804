"""The one way official_resnet writes a file that others read while a run goes on."""
import os

import tensorflow as tf


def write_atomically(path, contents):
  """Writes `contents` (str or bytes) to `path` under a temporary name, then renames it, so a
  reader or a crash never sees half a file: the previous file stays until the new one is whole."""
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.gfile.GFile(path + ".tmp", "wb" if isinstance(contents, bytes) else "w") as f:
    f.write(contents)
  tf.io.gfile.rename(path + ".tmp", path, overwrite=True)

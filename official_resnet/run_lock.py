"""One trainer per model_dir: `model_dir/.lock` names the holder (host, pid, start time).

The lock is an flock on that file, not an O_EXCL file checked with os.kill: the
kernel drops an flock when its process dies, even by kill -9, so a file a dead
trainer left behind never blocks, and a reused pid cannot pass for the holder.
Remote model_dirs (gs://...) have no flock; they are not locked. The folders the lock
creates are removed with it when nothing else was written in them, so a run refused
after taking the lock (its data, its classes) leaves no folder behind.
"""
import fcntl
import json
import os
import socket
import time

from absl import logging

LOCK_FILE = ".lock"


class RunLockedError(RuntimeError):
  """Another live process trains in this model_dir."""


def lock_path(model_dir):
  return os.path.join(model_dir, LOCK_FILE)


def _holder_text(path):
  try:
    with open(path) as f:
      holder = json.load(f)
    return (f"host {holder['host']}, pid {holder['pid']}, started "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder['start_time']))}")
  except (OSError, ValueError, KeyError):
    # The holder is between taking the lock and writing its name.
    return "a process that has not written its name yet"


def _outermost_missing(path):
  """The outermost folder of `path` that does not exist yet; None when `path` exists."""
  path, missing = os.path.abspath(path), None
  while not os.path.exists(path):
    missing, path = path, os.path.dirname(path)
  return missing


def _remove_empty_folders(path, outermost):
  """Removes `path` and its parents up to `outermost` while they are empty."""
  path = os.path.abspath(path)
  while True:
    try:
      os.rmdir(path)
    except OSError:  # Not empty: the run wrote something.
      return
    if path == outermost:
      return
    path = os.path.dirname(path)


class RunLock:
  """Context manager holding model_dir's lock; RunLockedError when a live process holds it."""

  def __init__(self, model_dir):
    self.model_dir = model_dir
    self.path = lock_path(model_dir)
    self._fd = None
    # The outermost folder acquire() created, removed by release() when left empty.
    self._created = None

  def acquire(self):
    if "://" in self.model_dir:
      logging.info("model_dir %s is remote: not locked against a second trainer.", self.model_dir)
      return self
    self._created = _outermost_missing(self.model_dir)
    os.makedirs(self.model_dir, exist_ok=True)
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        os.close(fd)
        raise RunLockedError(
            f"model_dir {self.model_dir} is in use by another trainer ({_holder_text(self.path)}). "
            "Stop that run or use another --model_dir.") from None
      # A holder that was releasing may have unlinked the file we opened: lock the file the
      # path names now, or two processes could each hold a lock on a different file.
      try:
        same_file = os.fstat(fd).st_ino == os.stat(self.path).st_ino
      except FileNotFoundError:
        same_file = False
      if same_file:
        break
      os.close(fd)
    previous = os.pread(fd, 4096, 0)
    if previous:
      logging.info("Taking over %s left by a process that is gone: %s", self.path,
                   previous.decode(errors="replace").strip())
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "start_time": time.time()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)
    self._fd = fd
    return self

  def release(self):
    if self._fd is None:
      return
    # Unlink while still holding the lock, so nobody locks a file about to disappear.
    os.unlink(self.path)
    os.close(self._fd)
    self._fd = None
    if self._created is not None:
      _remove_empty_folders(self.model_dir, self._created)

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc_info):
    self.release()

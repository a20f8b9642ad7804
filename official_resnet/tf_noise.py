"""TensorFlow's known noise dropped from stderr; its real warnings and errors kept.

TensorFlow's C++ runtime writes its log lines to file descriptor 2 itself, so Python's
logging never sees them. `filter_stderr()`, called before tensorflow is imported, points
fd 2 at a pipe (a pseudo-terminal of the same size when fd 2 is a terminal, so the
progress bar still draws) read by a child process (this file run as a script) that drops
the lines matching KNOWN_NOISE and passes everything else on unchanged, in order. A child, not a
thread: it reads the pipe to its end even when the command dies of a C++ abort or a
signal, so the last lines of a crash still show. OFFICIAL_RESNET_TF_NOISE=1 turns it off.

Standard library only: the child runs it without the package on its path.
"""
import atexit
import fcntl
import glob
import os
import pty
import re
import select
import signal
import subprocess
import sys
import termios
import tty

# =1: TensorFlow's output as TensorFlow prints it (no filter, TF_CPP_MIN_LOG_LEVEL untouched).
SHOW_NOISE_VARIABLE = "OFFICIAL_RESNET_TF_NOISE"
# Lines TensorFlow prints at every start or checkpoint that ask nothing of the user.
KNOWN_NOISE = (
    # C++ lines from before TF sets up its logging, printed whatever TF_CPP_MIN_LOG_LEVEL says.
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    r"port\.cc:\d+\] oneDNN custom operations are on\. ",
    r"cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine, GPU will not be used\.",
    r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized to use available CPU ",
    r"^To enable the following instructions: .*rebuild TensorFlow with the appropriate "
    r"compiler flags\.$",
    # tf.train.Checkpoint's Python code, at every save.
    r"functional_saver\.py:\d+\] Sharding callback duration: \d+ microseconds$",
)
# Expected where no NVIDIA device exists; with one, a failed cuInit is a real error.
NO_GPU_NOISE = (r"\] failed call to cuInit: ",)
# A line left unfinished this long is passed on as it is (a prompt): TF writes each log line
# whole. One holding a carriage return (a progress bar drawn again in place) goes at once.
PARTIAL_LINE_WAIT_S = 0.2
# At exit, how long the command waits for the filter to pass on the last lines.
EXIT_WAIT_S = 10


def noise_patterns(has_gpu=None):
  """KNOWN_NOISE, and NO_GPU_NOISE on a machine without NVIDIA devices (or `has_gpu` False)."""
  if has_gpu is None:
    has_gpu = bool(glob.glob("/dev/nvidia[0-9]*"))
  return KNOWN_NOISE if has_gpu else KNOWN_NOISE + NO_GPU_NOISE


def filter_lines(source_fd, sink, patterns):
  """Copies the lines read from `source_fd` to the binary file `sink` until the end of the
  input, less those matching one of `patterns` (regular expressions)."""
  noise = re.compile("|".join(f"(?:{pattern})" for pattern in patterns).encode())
  pending = b""
  while True:
    if pending and not select.select([source_fd], [], [], PARTIAL_LINE_WAIT_S)[0]:
      sink.write(pending)
      sink.flush()
      pending = b""
      continue
    try:
      chunk = os.read(source_fd, 1 << 16)
    except OSError:  # a pseudo-terminal's end: every writer closed it
      chunk = b""
    if not chunk:
      break
    *lines, pending = (pending + chunk).split(b"\n")
    for line in lines:
      if not noise.search(line):
        sink.write(line + b"\n")
    if b"\r" in pending:
      sink.write(pending)
      pending = b""
    sink.flush()
  sink.write(pending)
  sink.flush()


def _terminal_like(descriptor):
  """(read end, write end) of a pseudo-terminal as wide as the terminal `descriptor`, in raw
  mode, so that bytes pass as written (the terminal behind translates them)."""
  read_end, write_end = pty.openpty()
  tty.setraw(write_end)
  size = fcntl.ioctl(descriptor, termios.TIOCGWINSZ, b"\0" * 8)
  fcntl.ioctl(write_end, termios.TIOCSWINSZ, size)
  return read_end, write_end


def filter_stderr():
  """Routes this process's fd 2 (and its children's) through the filter; returns whether.

  Sets TF_CPP_MIN_LOG_LEVEL=1 (TF's warnings and errors, not its INFO lines) unless set.
  """
  if os.environ.get(SHOW_NOISE_VARIABLE) == "1":
    return False
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  sys.stderr.flush()
  try:
    read_end, write_end = _terminal_like(2) if os.isatty(2) else os.pipe()
  except OSError:  # no pseudo-terminal to be had: no filter
    return False
  original = os.dup(2)
  try:
    child = subprocess.Popen([sys.executable, "-I", os.path.abspath(__file__)], stdin=read_end,
                             stdout=original, stderr=original)
  except OSError:
    # No filter is better than no command: stderr stays as it was.
    for descriptor in (read_end, write_end, original):
      os.close(descriptor)
    return False
  os.dup2(write_end, 2)
  os.close(write_end)
  os.close(read_end)

  def restore():
    # The child ends when every writer has closed the pipe: this process by giving fd 2
    # back, any child of it when it exits.
    sys.stderr.flush()
    os.dup2(original, 2)
    os.close(original)
    try:
      child.wait(timeout=EXIT_WAIT_S)
    except subprocess.TimeoutExpired:
      pass

  atexit.register(restore)
  return True


if __name__ == "__main__":
  # Ctrl-C and SIGTERM are for the command: the filter passes on its last lines, then ends
  # with the pipe.
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  filter_lines(sys.stdin.fileno(), sys.stdout.buffer, noise_patterns())

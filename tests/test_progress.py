"""What a run tells the user while it trains: log lines piped (nohup, CI, Slurm) with the step,
the epoch, the time elapsed and left, and named means; an ETA after a resume from this
process's own rate; a terminal bar that never shares a line with a log line."""
import io
import logging
import math
import os
import pty
import re
import subprocess
import sys

import pytest

from official_resnet import progress
from official_resnet import run_state
import cli_fixtures
import trainer_fixtures as fixtures


class FakeTime:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def _sums(loss, l2, top_1_correct, examples, steps):
  """make_train_function's sums of `steps` steps with these mean losses per step."""
  return {"loss_sum": loss * steps, "l2_sum": l2 * steps, "top_1_correct": top_1_correct,
          "top_k_correct": examples, "examples": examples}


def test_durations_read_as_a_person_writes_them():
  assert [progress.format_duration(s) for s in (0.4, 45, 185, 7380)] == [
      "0s", "45s", "3m05s", "2h03m"]


def test_metric_sums_split_the_loss_and_name_their_steps():
  window = progress.MetricSums()
  window.add(_sums(1.5, 0.5, 6, 8, steps=2), 101, 102, seconds=0.5)
  # Step 104 skipped (nan_policy='skip'): its sums are not in the call's.
  window.add(_sums(1.0, 0.5, 2, 8, steps=1), 103, 104, seconds=0.5, skipped=1)
  result = window.result()
  assert window.span() == "steps 101-104" and window.steps == 3
  assert result["loss"] == pytest.approx(4.0 / 3) and result["l2"] == pytest.approx(0.5)
  assert result["cross_entropy"] == pytest.approx(4.0 / 3 - 0.5)
  assert result["top_1_accuracy"] == pytest.approx(0.5)
  assert result["examples_per_second"] == pytest.approx(16.0)
  window.reset()
  window.add(_sums(1.0, 0.0, 1, 4, steps=1), 7, 7, seconds=1.0)
  assert window.span() == "step 7"


def test_the_eta_of_a_resumed_run_counts_only_the_steps_this_process_ran():
  # 900 of 1000 steps trained by an earlier process; this one takes 0.5 s a step.
  time = FakeTime()
  clock = progress.Clock(1000, now=time)
  assert clock.describe(900) == "elapsed 0s, ETA ?"
  clock.before_call(900)
  time.now += 20.0  # the first call: tracing and compilation
  assert clock.describe(910) == "elapsed 20s, ETA ?"
  time.now += 1.0  # the host's work after it: the first checkpoint
  clock.before_call(910)
  time.now += 5.0
  clock.before_call(920)
  assert clock.remaining(920) == pytest.approx(40.0)
  time.now += 5.0
  assert clock.describe(930) == "elapsed 31s, ETA 35s"


def test_log_and_epoch_lines_say_what_their_figures_are(tmp_path, caplog):
  caplog.set_level(logging.INFO, logger="absl")
  time = FakeTime()
  clock = progress.Clock(500, now=time)
  reporter = progress.Reporter(str(tmp_path), 500, progress_bar=False, steps_per_epoch=100,
                               clock=clock)
  window, epoch = progress.MetricSums(), progress.MetricSums()
  clock.before_call(100)
  time.now += 30.0
  for metric_sums in (window, epoch):
    metric_sums.add(_sums(1.1, 0.95, 1900, 2000, steps=100), 101, 200, seconds=25.0)
  reporter.train(200, window, 0.1)
  with progress.stage("demo 2/5 pre-training"):
    staged = progress.Reporter(str(tmp_path), 500, progress_bar=False, steps_per_epoch=100,
                               clock=clock)
  clock.before_call(200)
  time.now += 10.0
  staged.epoch_end(300, epoch, evaluation={"loss": 0.035, "top_1_accuracy": 0.99,
                                           "top_5_accuracy": 1.0, "examples": 42})
  lines = [record.getMessage() for record in caplog.records]
  assert lines == [
      "step 200/500: loss 1.1000 = cross entropy 0.1500 + L2 0.9500, top-1 0.9500, "
      "top-5 1.0000 (means over steps 101-200), lr 0.1, 80.0 examples/s; epoch 2/5, "
      "elapsed 30s, ETA ?",
      "[demo 2/5 pre-training] epoch 3/5 done at step 300/500: train loss 1.1000 = "
      "cross entropy 0.1500 + L2 0.9500, top-1 0.9500, top-5 1.0000, 80.0 examples/s "
      "(means over steps 101-200); eval loss 0.0350 (cross entropy, no L2 term), top-1 0.9900, "
      "top-5 1.0000 over 42 examples; elapsed 40s, ETA 20s"]


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def _screen(output):
  """The lines a terminal shows for `output`: carriage returns and erase-to-end applied."""
  lines = []
  for raw in output.split("\n"):
    line, column = [], 0
    for part in re.split(r"(\r|\x1b\[K)", raw):
      if part == "\r":
        column = 0
      elif part == "\x1b[K":
        del line[column:]
      else:
        line[column:column + len(part)] = part
        column += len(part)
    lines.append("".join(line))
  return lines


def test_the_bar_is_erased_before_any_log_record_and_names_its_means(tmp_path, monkeypatch,
                                                                      caplog):
  caplog.set_level(logging.INFO, logger="absl")
  terminal = _Terminal()
  monkeypatch.setattr(sys, "stderr", terminal)
  monkeypatch.setenv("COLUMNS", "200")
  handler = logging.StreamHandler(terminal)
  handler.setFormatter(logging.Formatter("LOG %(message)s"))
  logging.getLogger().addHandler(handler)
  try:
    reporter = progress.Reporter(str(tmp_path), 40, steps_per_epoch=10)
    window = progress.MetricSums()
    reporter.show_progress(0, window)
    window.add(_sums(2.0, 0.5, 1, 8, steps=4), 1, 4, seconds=1.0)
    reporter.show_progress(4, window)
    logging.getLogger("absl").warning("a checkpoint was saved")
    window.add(_sums(1.0, 0.5, 1, 8, steps=4), 5, 8, seconds=1.0)
    reporter.train(8, window, 0.1)
    reporter.show_progress(8, progress.MetricSums())
    reporter.close()
  finally:
    logging.getLogger().removeHandler(handler)
  output = terminal.getvalue()
  # The bar was drawn with the mean of the steps so far, as the log line names its own.
  assert ("4/40 [=         ] epoch 1/4, ETA ? | means over steps 1-4: loss 2.0000 = "
          "cross entropy 1.5000 + L2 0.5000") in output
  assert ("8/40 [==        ] epoch 1/4, ETA ? | means over steps 1-8: loss 1.5000 = "
          "cross entropy 1.0000 + L2 0.5000") in output
  assert "step 8/40: loss 1.5000 = cross entropy 1.0000 + L2 0.5000" in output
  assert "(means over steps 1-8)" in output
  shown = [line for line in _screen(output) if line]
  # Each log line alone on its line; the closed bar left nothing behind.
  assert len(shown) == 2 and all(line.startswith("LOG ") for line in shown), shown


def _log_lines(stderr):
  """(seconds of the day, message) of each absl INFO line."""
  found = []
  for match in re.finditer(r"^I\d{4} (\d\d):(\d\d):(\d\d\.\d+) +\d+ \S+\] (.*)$", stderr,
                           re.MULTILINE):
    hours, minutes, seconds, message = match.groups()
    found.append((int(hours) * 3600 + int(minutes) * 60 + float(seconds), message))
  return found


def _seconds(text):
  match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
  hours, minutes, seconds = (int(part or 0) for part in match.groups())
  return hours * 3600 + minutes * 60 + seconds


STEP_LINE = re.compile(
    r"step (\d+)/(\d+): loss ([\d.]+) = cross entropy ([\d.]+) \+ L2 ([\d.]+), top-1 [\d.]+, "
    r"top-5 [\d.]+ \(means over steps (\d+)-(\d+)\), lr [\d.e-]+, [\d.]+ examples/s; "
    r"epoch (\d+)/(\d+), elapsed \w+, ETA (\S+)$")
EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+) done at step (\d+)/\d+: train loss [\d.]+ = "
                        r"cross entropy [\d.]+ \+ L2 [\d.]+, .* \(means over steps (\d+)-(\d+)\)"
                        r"(; eval loss [\d.]+ \(cross entropy, no L2 term\), .*)?; "
                        r"elapsed \w+, ETA (\S+)$")


def _train(data, model_dir, train_steps):
  # 256 images of 48 px, 8 steps of 32 an epoch; an evaluation at the end only.
  flags = cli_fixtures.colour_flags(
      data, model_dir, image_size=48, architecture="resnet18", base_width=16, batch_size=32,
      train_steps=train_steps, log_steps=10, epochs_between_evals=100)
  result = subprocess.run([sys.executable, "-m", "official_resnet.main", *flags],
                          cwd=cli_fixtures.REPO, env=cli_fixtures.subprocess_env(),
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return _log_lines(result.stderr)


@pytest.mark.slow
def test_piped_lines_give_epoch_time_and_named_losses_and_a_resume_gets_a_true_eta(tmp_path):
  data = fixtures.write_colour_folder(str(tmp_path / "colours"), 64, 4, size=48)
  model_dir = str(tmp_path / "run")
  first = _train(data, model_dir, 100)
  # Nothing measured yet at the first line: epoch 1 ends with the first call.
  first_progress = next(message for _, message in first if EPOCH_LINE.search(message))
  assert first_progress.startswith("epoch 1/13 done at step 8/100") and first_progress.endswith(
      "ETA ?")

  lines = _train(data, model_dir, 200)
  steps = [(when, STEP_LINE.search(message)) for when, message in lines]
  steps = [(when, match) for when, match in steps if match]
  epochs = [EPOCH_LINE.search(message) for _, message in lines]
  epochs = [match for match in epochs if match]
  assert [int(match[1]) for _, match in steps] == list(range(110, 201, 10))
  for _, match in steps:
    step, total, loss, cross_entropy, l2, first_step, last_step, epoch, epochs_total = (
        float(value) for value in match.groups()[:9])
    assert total == 200 and (first_step, last_step) == (step - 9, step)
    assert loss == pytest.approx(cross_entropy + l2, abs=2e-4) and l2 > 0
    assert (epoch, epochs_total) == (math.ceil(step / 8), 25)
  # An epoch line at each epoch end; the first after the resume has only the steps run here,
  # and no rate yet; the last carries the evaluation.
  assert [int(match[1]) for match in epochs] == list(range(13, 26))
  assert (int(epochs[0][3]), int(epochs[0][4]), int(epochs[0][5])) == (104, 101, 104)
  assert epochs[0][7] == "?"
  assert epochs[-1][6] and not any(match[6] for match in epochs[:-1])

  # Each line's ETA against the time the last step came, where 2 s or more remained
  # (whole seconds): their median within 50% (other processes share the machine's 2 cores).
  end = steps[-1][0]
  compared = [(_seconds(match[10]), end - when) for when, match in steps if end - when >= 2]
  errors = sorted(abs(eta - remaining) / remaining for eta, remaining in compared)
  assert len(errors) >= 3 and errors[len(errors) // 2] <= 0.5, compared

  stats = run_state.read_stats(model_dir)
  assert stats["train_loss"] == pytest.approx(stats["train_cross_entropy"] + stats["train_l2"])
  assert all({"train_loss", "train_cross_entropy", "train_l2"} <= set(entry)
             for entry in stats["history"])


@pytest.mark.slow
def test_in_a_terminal_the_bar_never_shares_a_line_with_a_log_line(tmp_path):
  data = fixtures.write_colour_folder(str(tmp_path / "colours"), 8, 2)
  flags = cli_fixtures.colour_flags(data, str(tmp_path / "run"), architecture="resnet18",
                                    train_steps=12, log_steps=3, steps_per_loop=1)
  controller, terminal = pty.openpty()
  process = subprocess.Popen([sys.executable, "-m", "official_resnet.main", *flags],
                             cwd=cli_fixtures.REPO, env=cli_fixtures.subprocess_env(),
                             stdin=terminal, stdout=terminal, stderr=terminal)
  os.close(terminal)
  chunks = []
  while True:
    try:
      chunk = os.read(controller, 65536)
    except OSError:  # the child closed its side
      break
    if not chunk:
      break
    chunks.append(chunk)
  os.close(controller)
  assert process.wait(timeout=60) == 0
  output = b"".join(chunks).decode()
  # The bar ran, with the means the log lines name.
  for match in re.finditer(r"step (\d+)/12: (loss [\d.]+) .* \(means over steps (\d+)-\d+\)",
                           output):
    step, loss, first_step = match.groups()
    assert f"{step}/12 [" in output
    assert f"| means over steps {first_step}-{step}: {loss}" in output
  shown = [line for line in _screen(output.replace("\r\n", "\n")) if line]
  logged = [line for line in shown if re.match(r"[IWE]\d{4} ", line)]
  assert len([line for line in logged if re.search(r"\] step \d+/12: loss", line)]) == 4
  # No line shows a bar with a log line, before or after it.
  assert not [line for line in shown if re.search(r"\d+/12 \[", line)], shown

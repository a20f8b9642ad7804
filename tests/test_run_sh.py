"""run.sh: what each command installs, and where relative paths point.

run.sh runs from a copy of the repository whose .venv/bin/python only records how it was
called (its directory and arguments), so nothing is installed and no TensorFlow starts.
"""
import os
import shutil
import stat
import subprocess
import sys

from benchmarks import official
import cli_fixtures

FAKE_PYTHON = """#!/bin/sh
echo "$PWD|$*" >> "{log}"
# Reading a setting from the repository's Python (benchmarks/official.py's INSTALL).
if [ "$1" = "-c" ]; then exec "{python}" "$@"; fi
"""


def _repository(tmp_path):
  """A copy of run.sh, setup.py and benchmarks/official.py with the recording .venv."""
  repo = tmp_path / "repo"
  (repo / "benchmarks").mkdir(parents=True)
  for name in ("run.sh", "setup.py", "benchmarks/__init__.py", "benchmarks/official.py"):
    shutil.copy(os.path.join(cli_fixtures.REPO, name), repo / name)
  python = repo / ".venv" / "bin" / "python"
  python.parent.mkdir(parents=True)
  python.write_text(FAKE_PYTHON.format(log=tmp_path / "calls.log", python=sys.executable))
  python.chmod(python.stat().st_mode | stat.S_IEXEC)
  return repo


def _run(tmp_path, cwd, *args):
  """The calls of .venv/bin/python one run.sh command made: [(directory, arguments)]."""
  log = tmp_path / "calls.log"
  log.unlink(missing_ok=True)
  subprocess.run([str(tmp_path / "repo" / "run.sh"), *args], cwd=cwd, check=True,
                 env=dict(os.environ, PYTHONPATH=""), timeout=60)
  return [tuple(line.split("|", 1)) for line in log.read_text().splitlines()]


def test_demo_and_main_install_what_runs_and_test_adds_the_test_extras(tmp_path):
  repo = _repository(tmp_path)
  home = tmp_path / "work"
  home.mkdir()
  upgrade_pip = (str(home), "-m pip install --quiet --upgrade pip")
  # Relative paths reach the command as given, in the caller's directory.
  assert _run(tmp_path, home, "demo", "--out_dir=demo_out") == [
      upgrade_pip, (str(home), f"-m pip install --quiet -e {repo}"),
      (str(home), "-m official_resnet.demo --out_dir=demo_out")]
  assert _run(tmp_path, home, "main", "--data_dir=data/digits") == [
      (str(home), "-m official_resnet.main --data_dir=data/digits")]

  # The test extras and the official code (benchmarks/official.py's command) come with test.
  calls = _run(tmp_path, home, "test", "-x")
  official_install = official.INSTALL.split(" ", 1)[1]
  read_install = (str(repo), "-c from benchmarks import official; print(official.INSTALL)")
  assert calls[:2] == [upgrade_pip, (str(home), f"-m pip install --quiet -e {repo}[test]")]
  assert calls[-3:] == [read_install, (str(repo), official_install), (str(repo), "-m pytest -x")]
  assert _run(tmp_path, home, "test")[-1][1].startswith("-m pytest -n ")
  # The fast tier: the whole suite's processes, without the tests marked slow.
  fast = _run(tmp_path, home, "test", "fast")[-1][1]
  assert fast.startswith("-m pytest -m not slow -n ")
  assert fast.endswith(" --dist loadfile --no-loadscope-reorder --durations=15")
  assert _run(tmp_path, home, "test", "fast", "-x")[-1] == (str(repo), "-m pytest -m not slow -x")
  assert _run(tmp_path, home, "test", "-x") == [read_install, (str(repo), "-m pytest -x")]
  # Another official install command (a package added to it) installs the official code again.
  with open(repo / "benchmarks" / "official.py", "a") as module:
    module.write('INSTALL += " six==1.16.0"\n')
  assert _run(tmp_path, home, "test", "-x") == [
      read_install, (str(repo), official_install + " six==1.16.0"), (str(repo), "-m pytest -x")]
  assert _run(tmp_path, home, "main") == [(str(home), "-m official_resnet.main")]

  # A changed setup.py installs again, once, and only what the command needs.
  with open(repo / "setup.py", "a") as setup:
    setup.write("# changed\n")
  assert _run(tmp_path, home, "main")[1] == (str(home), f"-m pip install --quiet -e {repo}")
  assert _run(tmp_path, home, "main") == [(str(home), "-m official_resnet.main")]
  stamps = sorted(name for name in os.listdir(repo / ".venv") if name.startswith(".installed-"))
  assert len(stamps) == 1 and stamps[0].startswith(".installed-run-")

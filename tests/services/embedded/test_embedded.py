"""The README's run command for real: `python -m services.embedded` starts every service as its own process on
embedded defaults (SQLite, the on-disk session store, the SQLite Celery broker, no Redis), runs the guided demo of
the three user journeys against them, keeps serving, and stops everything on Ctrl-C."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from realparts import ROOT, child_env


def run_readme_journeys(endpoints: dict[str, str]) -> subprocess.CompletedProcess:
    """The README's "Three journeys" code blocks, in order, as one program against these endpoints."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Three journeys"):]
    section = section[:section.index("\n## ", 1)]
    code = "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))
    for readme_address, name in (("127.0.0.1:50071", "agent service"), ("127.0.0.1:50061", "jobs"),
                                 ("http://127.0.0.1:8000/v1", "gateway")):
        assert readme_address in code
        code = code.replace(readme_address, endpoints[name])
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=child_env(), capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_the_platform_runs_the_demo_and_stops_cleanly_on_ctrl_c(tmp_path):
    data = tmp_path / "data"
    ports = ["--worker-port", "0", "--jobs-port", "0", "--agent-port", "0", "--gateway-port", "0"]
    log = tmp_path / "embedded.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "services.embedded", "--data-dir", str(data), *ports],
                                   cwd=ROOT, env=child_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 420
        while "serving until Ctrl-C" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        output = log.read_text()
        endpoints = dict(re.findall(r"^  (model worker|jobs|agent service|gateway) \([^)]+\)\s+(\S+)$", output, re.M))
        assert set(endpoints) == {"model worker", "jobs", "agent service", "gateway"}, output

        # 1. a real tool call, its real result
        assert re.search(r'tool call: clock\(\{"zone": "[A-Za-z/]+"\}\)', output), output
        assert re.search(r"tool result: '\d{4}-\d\d-\d\d \d\d:\d\d:\d\d in ", output), output
        # 2. after the worker restart, the history came from the session store: only the new message prefilled
        reused, prefilled = map(int, re.search(r"resumed from the session store: (\d+) tokens of history reused, "
                                               r"(\d+) new tokens prefilled", output).groups())
        assert reused > 300 and 0 < prefilled <= 16, output
        # 3. the Think Max batch ran on the Celery worker to the end
        # (how many of the 48 are reasoning is the random weights' choice: one may close its thinking early)
        assert "3/3 done" in output and len(re.findall(r"q\d: completed, 48 tokens \(\d+ reasoning\)", output)) == 3
        assert (data / "sessions").is_dir() and (data / "agent.db").is_file() and (data / "broker.db").is_file()

        readme = run_readme_journeys(endpoints)
        assert readme.returncode == 0, readme.stdout[-3000:]
        reused, prefilled = map(int, re.search(r"(\d+) tokens of history reused, (\d+) prefilled",
                                               readme.stdout).groups())
        assert reused > 100 and prefilled <= 32, readme.stdout

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=90) == 0
        assert log.read_text().rstrip().endswith("stopped")
        for address in endpoints.values():  # nothing left listening
            host, port = address.removeprefix("http://").removesuffix("/v1").rsplit(":", 1)
            with socket.socket() as probe:
                assert probe.connect_ex((host, int(port))) != 0, address
    finally:
        if process.poll() is None:  # failed midway: stop it as Ctrl-C would, so no service outlives the test
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

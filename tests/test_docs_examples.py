"""The examples in docs/online-inference.md run, as written, against a live server."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.live

DOC = Path(__file__).resolve().parent.parent / "docs" / "online-inference.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_every_curl_example_succeeds(transactional_db, live_gunicorn, api_key, iris, diabetes):
    env = {**os.environ, "MM_URL": live_gunicorn.url, "MM_KEY": api_key}
    blocks = _blocks("bash")
    assert len(blocks) >= 4
    for block in blocks:
        for command in re.split(r"\n(?=curl)", block.strip()):
            command = "\n".join(line for line in command.splitlines() if not line.startswith("#"))
            result = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, (command, result.stderr)
            for line in result.stdout.splitlines():
                assert "error" not in json.loads(line), line


def test_the_tritonclient_example_runs(transactional_db, live_gunicorn, api_key, iris):
    (example,) = _blocks("python")
    env = {**os.environ, "MM_URL": live_gunicorn.url, "MM_KEY": api_key}
    result = subprocess.run([sys.executable, "-c", example], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "[b'setosa' b'virginica']" in result.stdout

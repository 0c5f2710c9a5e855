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


def _rounded(value: object) -> object:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    return value


def _documented(comment_lines: list[str]) -> object | None:
    """The answer a `# {...}` comment shows, when it is whole JSON (not abridged with `...`)."""
    try:
        return json.loads(" ".join(line.removeprefix("#").strip() for line in comment_lines))
    except ValueError:
        return None


def test_every_curl_example_succeeds_and_answers_as_shown(transactional_db, live_gunicorn, api_key, iris, diabetes):
    env = {**os.environ, "MM_URL": live_gunicorn.url, "MM_KEY": api_key}
    blocks = _blocks("bash")
    assert len(blocks) >= 4
    compared = 0
    for block in blocks:
        for example in re.split(r"\n(?=curl)", block.strip()):
            lines = example.splitlines()
            command = "\n".join(line for line in lines if not line.startswith("#"))
            result = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, (command, result.stderr)
            for line in result.stdout.splitlines():
                assert "error" not in json.loads(line), line
            shown = _documented([line for line in lines if line.startswith("#")])
            if shown is not None:
                assert _rounded(json.loads(result.stdout)) == _rounded(shown), command
                compared += 1
    assert compared >= 1


def test_the_tritonclient_example_runs(transactional_db, live_gunicorn, api_key, iris):
    (example,) = _blocks("python")
    env = {**os.environ, "MM_URL": live_gunicorn.url, "MM_KEY": api_key}
    result = subprocess.run([sys.executable, "-c", example], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "[b'setosa' b'virginica']" in result.stdout

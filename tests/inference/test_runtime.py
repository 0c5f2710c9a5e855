"""How this process runs a model's ONNX Runtime session: its turns."""

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference import runtime, services

ROOT = Path(__file__).resolve().parents[2]


class CountingSession:
    """ONNX Runtime's session, watched: how many of its runs are under way at once."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0

    def run(self, output_names: list[str], feeds: dict[str, np.ndarray]) -> Any:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.02)  # a slow model: the other callers arrive while this run is under way
            return self.session.run(output_names, feeds)
        finally:
            with self.lock:
                self.running -= 1


@pytest.mark.parametrize("runs", [1, 2])
def test_a_model_runs_at_most_its_configured_number_of_calls_at_once(settings, iris, runs):
    settings.ORT_CONCURRENT_RUNS = runs
    servable = services.servable_from_version(iris)
    feeds = {"input": np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)}
    expected = services.predict(servable=servable, feeds=feeds)
    loaded = runtime.loaded_model(key=servable.version_id, path=servable.path, signature=servable.signature)
    watched = CountingSession(loaded.session)
    loaded.session = watched  # type: ignore[assignment]

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda _: services.predict(servable=servable, feeds=feeds), range(12)))

    assert watched.most == runs  # never more, and every turn was used
    for answer in answers:
        assert answer.keys() == expected.keys()
        for name, value in expected.items():
            np.testing.assert_array_equal(answer[name], value)


def test_by_default_a_model_runs_one_call_per_cpu_the_process_may_use(settings):
    assert runtime.concurrent_runs(setting=3, intra_op_threads=1) == 3
    pinned = subprocess.run(
        [
            "taskset",
            "-c",
            "0",
            sys.executable,
            "-c",
            "from inference.runtime import concurrent_runs as c; "
            "print(c(setting=0, intra_op_threads=1), c(setting=0, intra_op_threads=4))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert pinned.stdout.split() == ["1", "1"]  # one CPU: one run at a time, whatever its threads
    two = subprocess.run(
        [
            "taskset",
            "-c",
            "0,1",
            sys.executable,
            "-c",
            "from inference.runtime import concurrent_runs as c; "
            "print(c(setting=0, intra_op_threads=1), c(setting=0, intra_op_threads=2))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert two.stdout.split() == ["2", "1"]

"""Run a model once on generated inputs, in a child process with time and memory limits.

Used by model validation: a model that crashes, hangs or eats memory while loading or running is
caught here, not in a web worker. `python -m inference.sandbox MODEL.onnx SIGNATURE.json`.
"""

import json
import resource
import subprocess
import sys
from pathlib import Path

# Marks the last stderr line of a child that failed in a way it could explain (see `main`).
REASON = "sandbox-reason: "


class SandboxFailure(Exception):
    pass


def run_in_sandbox(path: Path, signature: dict, *, timeout_s: int, memory_bytes: int) -> None:
    def limit() -> None:  # runs in the child before exec
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    try:
        completed = subprocess.run(
            [sys.executable, "-m", "inference.sandbox", str(path), json.dumps(signature)],
            capture_output=True,
            timeout=timeout_s,
            preexec_fn=limit,
            cwd=str(Path(__file__).resolve().parent.parent),
            text=True,
        )
    except subprocess.TimeoutExpired:
        raise SandboxFailure(f"Loading and running the model took longer than {timeout_s} s.") from None
    if completed.returncode != 0:
        lines = [line for line in completed.stderr.strip().splitlines() if line.strip()]
        if lines and lines[-1].startswith(REASON):  # the child's own words: the whole reason
            raise SandboxFailure(lines[-1].removeprefix(REASON)[:1000])
        detail = lines[-1] if lines else f"exit status {completed.returncode}"
        if completed.returncode < 0:
            detail = f"the process was killed by signal {-completed.returncode} (memory limit?)"
        raise SandboxFailure(f"ONNX Runtime could not run the model on a sample input: {detail[:500]}")


def main() -> None:
    from .runtime import SmokeTestFailed, smoke_test

    try:
        smoke_test(sys.argv[1], json.loads(sys.argv[2]))
    except SmokeTestFailed as exc:
        print(f"{REASON}{exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

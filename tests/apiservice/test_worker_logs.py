"""A real Celery worker logs JSON lines, as the web processes do (README: "Logs are JSON lines")."""

import json
import re
from pathlib import Path

from tests import live

CELERY_TEXT_FORMAT = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+: (DEBUG|INFO|WARNING|ERROR|CRITICAL)/")


def test_a_worker_logs_json_lines(tmp_path: Path, django_db_setup, django_db_blocker) -> None:
    with django_db_blocker.unblock(), live.celery_worker(tmp_path, name="logs") as worker:
        lines = worker.log.read_text().splitlines()
    assert not [line for line in lines if CELERY_TEXT_FORMAT.match(line)]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(record["message"].endswith("ready.") for record in records)
    assert {"time", "level", "logger", "message", "request_id"} <= set(records[0])

""".env.example is what a newcomer copies to .env: it lists every variable, and a copy changes nothing."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from apiservice.settings import BASE_DIR

READERS = ["apiservice/settings.py", "apiservice/gunicorn.conf.py", "apiservice/management/commands/seed_demo.py"]
READ = re.compile(r'(?:env\.\w+|os\.environ\.get|os\.environ\[)\(?\s*"([A-Z][A-Z0-9_]+)"')
DUMP = (
    "import json, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'apiservice.settings'\n"
    "from django.conf import settings\n"
    "print(json.dumps({name: repr(getattr(settings, name)) for name in dir(settings) if name.isupper()}))"
)


def _example() -> dict[str, str]:
    text = (BASE_DIR / ".env.example").read_text()
    return dict(re.findall(r"^([A-Z][A-Z0-9_]+)=(.*)$", text, flags=re.M))


def _settings(environment: dict[str, str]) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", DUMP], cwd=BASE_DIR, env=environment, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout))


def test_it_lists_every_variable_the_settings_read() -> None:
    read = {name for path in READERS for name in READ.findall((BASE_DIR / path).read_text())}
    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (BASE_DIR / ".env.example").read_text(), flags=re.M))
    assert sorted(read - listed) == []


def test_a_copy_of_it_configures_exactly_the_defaults(tmp_path: Path) -> None:
    bare = {"PATH": os.environ["PATH"], "MODELMETER_VAR_DIR": str(tmp_path), "DJANGO_DEBUG": "true"}
    defaults = _settings(bare)
    copied = _settings({**bare, **_example()})
    assert {
        name: (defaults.get(name), copied.get(name)) for name in defaults if defaults[name] != copied.get(name)
    } == {}


def test_an_empty_folder_variable_means_its_default_not_the_current_directory(tmp_path: Path) -> None:
    bare = {"PATH": os.environ["PATH"], "DJANGO_DEBUG": "true", "HOME": str(tmp_path)}
    empty = _settings({**bare, "MODELMETER_VAR_DIR": "", "MEDIA_ROOT": "", "MODEL_CACHE_DIR": ""})
    assert empty["VAR_DIR"] == repr(BASE_DIR / "var")
    assert empty["MEDIA_ROOT"] == repr(BASE_DIR / "var" / "media")
    assert empty["MODEL_CACHE_DIR"] == repr(BASE_DIR / "var" / "model-cache")

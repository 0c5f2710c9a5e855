"""`manage.py check --deploy` with the production settings names the secrets a production host must set."""

import os
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from apiservice.settings import BASE_DIR


def _check_deploy(tmp_path: Path, **env: str) -> str:
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "apiservice.settings",
        "DJANGO_DEBUG": "false",
        "MODELMETER_VAR_DIR": str(tmp_path),
        "DJANGO_SECRET_KEY": "",
        "EDGE_SIGNING_KEY": "",
        "EDGE_SIGNING_KEY_FILE": "",
        **env,
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout + done.stderr


def test_it_warns_when_production_runs_on_keys_generated_in_var(tmp_path: Path) -> None:
    output = _check_deploy(tmp_path)
    assert "apiservice.W006" in output
    assert "edge.W001" in output


def test_it_is_quiet_about_keys_once_production_sets_them(tmp_path: Path) -> None:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    output = _check_deploy(tmp_path, DJANGO_SECRET_KEY="x" * 64, EDGE_SIGNING_KEY=pem.decode())
    assert "apiservice.W006" not in output
    assert "edge.W001" not in output
    assert "System check identified" in output

"""The production gunicorn configuration (`apiservice/gunicorn.conf.py`), as gunicorn itself loads it."""

import runpy
from pathlib import Path

from gunicorn.config import Config
from gunicorn.http.message import _check_fast_parser

CONF = Path(__file__).resolve().parents[2] / "apiservice" / "gunicorn.conf.py"


def production_config(monkeypatch, **env: str) -> Config:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    namespace = runpy.run_path(str(CONF))  # the module `gunicorn -c` loads
    cfg = Config()
    for name, value in namespace.items():
        if name in cfg.settings:
            cfg.set(name, value)
    return cfg


def test_http_is_parsed_by_gunicorns_c_parser(monkeypatch):
    cfg = production_config(monkeypatch)
    assert cfg.http_parser == "auto"
    assert _check_fast_parser(cfg) is True  # gunicorn_h1c installed and compatible with our settings


def test_the_python_parser_can_be_chosen(monkeypatch):
    cfg = production_config(monkeypatch, GUNICORN_HTTP_PARSER="python")
    assert _check_fast_parser(cfg) is False


def test_threads_and_workers_come_from_the_environment(monkeypatch):
    cfg = production_config(monkeypatch, GUNICORN_WORKERS="3", GUNICORN_THREADS="4")
    assert (cfg.workers, cfg.threads, cfg.worker_class_str) == (3, 4, "gthread")


def test_the_control_socket_is_off_unless_given_a_path_of_its_own(monkeypatch, tmp_path):
    assert production_config(monkeypatch).control_socket_disable is True
    own = str(tmp_path / "gunicorn.ctl")
    cfg = production_config(monkeypatch, GUNICORN_CONTROL_SOCKET=own)
    assert (cfg.control_socket_disable, cfg.control_socket) == (False, own)

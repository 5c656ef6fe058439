"""``rymi-gateway serve`` refuses settings it cannot run with, naming what is wrong."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from gateway.cli import main


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``serve`` configures logging; put the root logger back afterwards."""
    for name in ("RYMI_REDIS_URL", "RYMI_DATABASE_URL", "RYMI_LOG_FORMAT", "RYMI_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("gateway").level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.getLogger("gateway").setLevel(saved[2])


def test_several_workers_on_the_embedded_defaults_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "RYMI_REDIS_URL" in err
    assert "RYMI_DATABASE_URL" in err


def test_several_workers_with_redis_but_sqlite_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--workers", "3", "--redis-url", "redis://127.0.0.1:1/0"]) == 2
    err = capsys.readouterr().err
    assert "RYMI_DATABASE_URL" in err
    assert "RYMI_REDIS_URL" not in err


def test_a_worker_count_out_of_range_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--workers", "0"]) == 2
    assert "--workers: expected 1-64, got 0" in capsys.readouterr().err


def test_a_bad_log_format_is_refused_before_anything_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RYMI_LOG_FORMAT", "xml")
    assert main(["serve"]) == 2
    assert "RYMI_LOG_FORMAT" in capsys.readouterr().err

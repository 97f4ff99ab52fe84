"""A database password is never printed, logged, rendered or stored by autopeft."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml

from autopeft import api
from autopeft.core.errors import ConfigError
from autopeft.core.secrets import has_password, masked, masked_config

SECRET = "s3cret-pw"
CLI = [sys.executable, "-m", "autopeft.cli"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+psycopg2://alice:s3cret@db:5432/x",
            "postgresql+psycopg2://alice:PASSWORD@db:5432/x",
        ),
        ("postgresql://alice:p@ss@db/x", "postgresql://alice:PASSWORD@db/x"),
        (
            "postgresql://db/x?user=a&password=s3cret&x=1",
            "postgresql://db/x?user=a&password=PASSWORD&x=1",
        ),
        ("postgresql+psycopg2://alice@db/x", "postgresql+psycopg2://alice@db/x"),
        ("sqlite:///studies/x/study.db", "sqlite:///studies/x/study.db"),
    ],
)
def test_urls_are_shown_without_their_password(url, shown):
    assert masked(url) == shown
    assert has_password(url) == (url != shown)
    assert masked(f"but got '{url}'. Hint: x") == f"but got '{shown}'. Hint: x"
    assert masked_config({"storage": url, "name": "x"}) == {"storage": shown, "name": "x"}


def test_an_error_paragraph_never_shows_the_password():
    with pytest.raises(ConfigError) as err:  # an unknown database: the URL is echoed
        api.check_storage(f"nosuchdb://alice:{SECRET}@127.0.0.1/db", "--storage")
    text = str(err.value)
    assert "--storage" in text and "nosuchdb://alice:PASSWORD@127.0.0.1/db" in text
    assert SECRET not in text


def write_study(folder: Path, name: str, storage: str | None = None) -> Path:
    raw = {
        "name": name,
        "model": "tiny-bert",
        "task": {"name": "sms_spam", "max_length": 32},
        "search_space": {"modules": {"lora": {"rank": [2, 4]}}, "layers": {"top": 1}},
        "training": {"steps": 4, "batch_size": 8, "eval_every": 4, "eval_examples": 16},
        "sampler": {"name": "random"},
        "n_trials": 2,
        **({"storage": storage} if storage else {}),
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_an_unreachable_database_error_hides_the_password(tmp_path):
    study = write_study(tmp_path, "unreachable")
    url = f"postgresql+psycopg2://alice:{SECRET}@127.0.0.1:1/db"
    for args in (
        ["run", str(study), "--storage", url],
        ["report", "unreachable", "--storage", url],
    ):
        out = cli(*args, cwd=tmp_path)
        assert out.returncode == 2, out.stderr
        assert SECRET not in out.stdout + out.stderr and "PASSWORD" in out.stderr
        assert "Traceback" not in out.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def with_password(url: str) -> str:
    """The test server's URL with a password (its trust authentication ignores it)."""
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user or 'postgres'}:{SECRET}@{host}"))


@pytest.mark.slow
def test_a_study_in_a_database_with_a_password_never_shows_or_keeps_it(postgres_url, tmp_path):
    name = f"secret-{uuid.uuid4().hex[:8]}"
    url = with_password(postgres_url)
    study = write_study(tmp_path, name, storage=url)  # in the file, as users write it
    seen = []
    out = cli("run", str(study), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    seen.append(out.stdout + out.stderr)
    kept = tmp_path / "studies" / name / "study.json"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600  # names a database's user and host
    assert json.loads(kept.read_text())["storage"] == masked(url)
    report = tmp_path / "report.html"
    out = cli("report", str(study), "-o", str(report), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    seen += [out.stdout + out.stderr, report.read_text()]
    for args in (["export", str(study), "--trials", str(tmp_path / "t.csv")], ["run", str(study)]):
        out = cli(*args, cwd=tmp_path)
        seen += [out.stdout + out.stderr]
    seen.append((tmp_path / "t.csv").read_text())
    dash = subprocess.Popen(
        [*CLI, "dashboard", str(study), "--port", str(free_port())],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        banner = ""
        while dash.stdout and "optuna-dashboard for" not in banner:
            line = dash.stdout.readline()
            assert line, "the dashboard ended before its banner"
            banner = line
    finally:
        os.killpg(dash.pid, signal.SIGTERM)
        dash.wait(timeout=30)
    assert "optuna-dashboard for" in banner and "PASSWORD" in banner
    seen.append(banner)
    assert "PASSWORD@" in seen[0]  # the front line names the storage, masked
    for text in seen:
        assert SECRET not in text
    for path in (tmp_path / "studies").rglob("*"):
        if path.is_file() and path.suffix in (".json", ".yaml", ".txt", ".log"):
            assert SECRET not in path.read_text(errors="replace"), path

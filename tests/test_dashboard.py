"""optuna-dashboard: objectives named by their metrics, --host, a busy port in one line, and
a study opened only to be shown is never written."""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from autopeft import api, cli, dashboard, study_tools
from autopeft.core.errors import AutopeftError
from autopeft.core.trial_result import TrialResult, TrialStatus
from autopeft.search.study import Study

ROOT = Path(__file__).resolve().parents[1]
STUDY = {
    "name": "dash",
    "model": "tiny-bert",
    "task": {"name": "sms_spam", "max_length": 32},
    "search_space": {"modules": {"lora": {"rank": [2, 4]}}},
    "objectives": "f1, -trainable_params, -peak_memory",
    "training": {"steps": 2, "batch_size": 8},
}
NAMES = ["f1", "trainable_params", "peak_memory"]


def _study(root: Path) -> Study:
    """A study with one told trial (no training: a synthetic result)."""
    study = Study(api.study_from_dict(STUDY), root=root)
    trial, candidate = study.ask()
    study.tell(
        trial,
        TrialResult(
            status=TrialStatus.COMPLETE,
            candidate=candidate,
            metrics={"f1": 0.5},
            trainable_params=100,
            peak_memory_mb=10.0,
        ),
    )
    return study


def _forget_names(db: Path) -> None:
    """What a study made before autopeft stored objective names looks like."""
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM study_system_attributes WHERE key = 'study:metric_names'")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
        return json.loads(answer.read())


def _objective_names(port: int) -> list[str] | None:
    (summary,) = _get(port, "/api/studies")["study_summaries"]
    return _get(port, f"/api/studies/{summary['study_id']}").get("objective_names")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_created_study_stores_its_objectives_as_metric_names(tmp_path):
    study = _study(tmp_path)
    assert study.optuna.metric_names == study.metrics == NAMES
    # Stored in the storage, not only on this object: a fresh reader sees them.
    import optuna

    loaded = optuna.load_study(study_name="dash", storage=study.storage_url)
    assert loaded.metric_names == NAMES
    stored = loaded._storage.get_study_system_attrs(loaded._study_id)
    assert stored[dashboard.METRIC_NAMES_ATTR] == NAMES


def test_the_served_api_names_the_objectives(tmp_path):
    _study(tmp_path)
    study = study_tools.open_study(tmp_path / "dash")
    server = dashboard_thread(study)
    try:
        assert _objective_names(server.server_port) == NAMES
    finally:
        server.shutdown()
        server.server_close()


def dashboard_thread(study):
    """The dashboard on a free port, served from a thread (the caller shuts it down)."""
    server = dashboard.dashboard_server(study, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_an_old_study_without_names_gets_them_served_and_is_not_written(tmp_path):
    db = _study(tmp_path).storage_url.removeprefix("sqlite:///")
    _forget_names(Path(db))
    before = _digest(Path(db))
    study = study_tools.open_study(tmp_path / "dash")
    assert study.optuna.metric_names is None  # opening it to read did not write them
    server = dashboard_thread(study)
    try:
        assert _objective_names(server.server_port) == NAMES
    finally:
        server.shutdown()
        server.server_close()
    assert _digest(Path(db)) == before


def test_dashboard_cli_takes_host_and_says_when_names_come_from_the_config(tmp_path):
    db = Path(_study(tmp_path).storage_url.removeprefix("sqlite:///"))
    _forget_names(db)
    before = _digest(db)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "autopeft.cli", "dashboard", str(tmp_path / "dash")]
        + ["--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        deadline, names = time.time() + 90, None
        while time.time() < deadline and names is None and proc.poll() is None:
            try:
                names = _objective_names(port)
            except OSError:
                time.sleep(0.3)
        assert names == NAMES, proc.stderr.read() if proc.poll() is not None else names
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    lines = out.splitlines()
    assert lines[0].startswith(f"optuna-dashboard for 'dash': http://127.0.0.1:{port}/ ")
    assert lines[1] == (
        "note: this study stores no objective names (made by an older autopeft); the "
        "dashboard shows them from its configuration: f1, trainable_params, peak_memory"
    )
    assert _digest(db) == before


def test_a_busy_port_is_one_line_with_exit_2(tmp_path, capsys):
    _study(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = cli.main(["dashboard", str(tmp_path / "dash"), "--port", str(port)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err == (
        f"error: --port: port {port} on 127.0.0.1 is already in use (another dashboard or "
        f"server?); give a free one with --port, e.g. --port {port + 1}\n"
    )
    assert "optuna-dashboard for" not in captured.out  # no URL for a server that never ran


def test_a_host_that_cannot_be_bound_is_one_line(tmp_path):
    study = study_tools.open_study(_study(tmp_path).folder)
    with pytest.raises(AutopeftError) as info:
        dashboard.dashboard_server(study, "192.0.2.1", _free_port())  # TEST-NET: not ours
    text = str(info.value)
    assert "\n" not in text and text.startswith("--port: cannot listen on 192.0.2.1:")
    assert "or another --host" in text

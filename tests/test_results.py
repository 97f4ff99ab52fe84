"""Finished studies: export a trial (reload gives the same predictions), all trials as a table,
re-evaluation with seeds, optuna-dashboard served on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest
import torch

from autopeft import api, reeval, study_tools
from autopeft.core.trial_result import TrialStatus
from autopeft.search.local import run_local
from autopeft.search.study import Study
from autopeft.train.export import load_exported, predict

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("studies")
    cfg = api.study_from_dict(
        {
            "name": "export",
            "model": "tiny-bert",
            "task": {"name": "sms_spam", "max_length": 32},
            "search_space": {
                "modules": {"lora": {"rank": [4, 8]}, "serial_adapter": {"size": [0, 8]}},
                "training": {"lr": [2e-3, 8e-3]},  # the rate searched too: one per trial
            },
            "training": {
                "steps": 20,
                "batch_size": 8,
                "eval_every": 20,
                "eval_examples": 64,
                "seed": 3,
            },
            "halving": {"enabled": False},
            "sampler": "random",
        }
    )
    st = Study(cfg, root=root)
    # peft only; peft + native
    st.optuna.enqueue_trial({"lora.rank": 4, "serial_adapter.size": 0, "training.lr": 2e-3})
    st.optuna.enqueue_trial({"lora.rank": 8, "serial_adapter.size": 8, "training.lr": 8e-3})
    run_local(st, 2, progress=False)
    assert [r.status for _, r in st.results()] == [TrialStatus.COMPLETE] * 2
    return st


def _batch(study):
    from autopeft.train.trial import TrialContext

    ctx = TrialContext.create(study.config, cache_dir=study.folder / "cache")
    return ctx, ctx.data["validation"].batch(torch.arange(16))


@pytest.mark.parametrize("number", [0, 1])
def test_exported_trial_reloads_with_identical_predictions(study, tmp_path, number):
    from autopeft.train.export import rebuild
    from autopeft.train.trial import weights_path

    out = study_tools.export_trial(study, number, tmp_path / "adapter")
    manifest = json.loads((out / "autopeft.json").read_text())
    result = dict(study.results())[number]
    assert manifest["candidate"] == result.candidate.to_json()
    assert manifest["training"]["steps"] == 20 and manifest["metrics"] == result.metrics
    # The recipe recorded is the one the trial trained with: its own searched rate.
    assert manifest["training"]["lr"] == result.candidate.training["lr"] == [2e-3, 8e-3][number]
    ctx, batch = _batch(study)
    trained = rebuild(
        ctx, result.candidate, weights_path(study.folder / "weights", result.candidate, 3)
    )
    expected = predict(trained.model, batch)
    loaded = load_exported(out)
    assert torch.equal(predict(loaded.model, batch), expected)
    assert (out / "adapter_config.json").is_file()  # LoRA is peft-backed in both trials
    if number == 0:  # peft only: the standard peft folder alone reproduces the model
        from peft import PeftModel

        from autopeft.train.models import load_model

        base = load_model("tiny-bert", num_labels=2, seed=3)
        peft_model = PeftModel.from_pretrained(base, str(out))
        assert torch.allclose(predict(peft_model, batch), expected, atol=1e-6)


def test_export_via_cli_with_retrain_and_trials_table(study, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "autopeft.cli",
            "export",
            str(study.folder),
            "--trial",
            "1",
            "-o",
            str(tmp_path / "retrained"),
            "--retrain",
            "--trials",
            str(tmp_path / "t.csv"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "retrained" / "trainable.safetensors").is_file()
    table = pd.read_csv(tmp_path / "t.csv")
    assert list(table["number"]) == [0, 1] and set(table["status"]) == {"COMPLETE"}
    study_tools.export_trials(study, tmp_path / "t.json")
    assert len(json.loads((tmp_path / "t.json").read_text())) == 2
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "autopeft.cli",
            "export",
            str(study.folder),
            "--trial",
            "7",
            "-o",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "no finished trial with this number" in bad.stderr


def test_reeval_records_mean_and_std(study):
    rows = reeval.reeval(study, top=1, seeds=2)
    assert len(rows) == 1 and len(rows[0]["seeds"]) == 2
    stored = study.optuna.user_attrs[f"reeval.{rows[0]['trial']}"]
    accs = [s["accuracy"] for s in stored["seeds"]]
    assert stored["mean"] == pytest.approx(sum(accs) / 2)


def test_dashboard_serves_the_study_on_localhost(study):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "autopeft.cli", "dashboard", str(study.folder), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline, body = time.time() + 60, None
        while time.time() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    body = json.loads(r.read())
            except OSError:
                time.sleep(0.3)
        assert body is not None, proc.stderr.read() if proc.poll() is not None else "no answer"
        assert [s["study_name"] for s in body["study_summaries"]] == ["export"]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/" in out

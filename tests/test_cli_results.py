"""The CLI around finished studies and runs: bad counts, --root, storage URLs, export, the trials
table, reeval, submit, Ctrl-C and all-infeasible studies. Bad input gives exit 2 and one
paragraph (field, rule, value, hint), never a traceback; reading a study never creates one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from autopeft import api, cli, reeval, study_tools
from autopeft.core.errors import ConfigError
from autopeft.core.trial_result import TrialResult, TrialStatus
from autopeft.search.local import run_local
from autopeft.search.study import Study
from tests.helpers import wait_mid_trial

ROOT = Path(__file__).resolve().parents[1]
# One worker builds the module's study (tests that train or use it are marked slow).
pytestmark = pytest.mark.xdist_group("cli_results")
SLOW = pytest.mark.slow
STUDY = {
    "name": "clires",
    "model": "tiny-bert",
    "task": {"name": "sms_spam", "max_length": 32},
    "search_space": {"modules": {"lora": {"rank": [0, 4, 8]}}},
    "training": {"steps": 10, "batch_size": 8, "eval_every": 10, "eval_examples": 32, "seed": 3},
    "halving": {"enabled": False},
    "sampler": "random",
    "n_trials": 2,
}


def _cli(*args, cwd=None, timeout=300, env=None):
    return subprocess.run(
        [sys.executable, "-m", "autopeft.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=timeout,
        env=env,
    )


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _fails(out, *phrases) -> None:
    """Exit code 2, one error paragraph with every phrase, no traceback."""
    assert out.returncode == 2, (out.stdout[-1500:], out.stderr[-3000:])
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "error: " in out.stderr and "1 problem in the configuration" in out.stderr
    for phrase in phrases:
        assert phrase in out.stderr, (phrase, out.stderr)


def _tell(study: Study, params: dict, status: TrialStatus, **fields) -> int:
    """A trial with ``params`` told a synthetic result (no training)."""
    study.optuna.enqueue_trial(params)
    trial, candidate = study.ask()
    study.tell(trial, TrialResult(status=status, candidate=candidate, **fields))
    return trial.number


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A study with every kind of trial, and its file, under a root that is not ./studies.

    0: LoRA rank 4 and 1: head only (trained, weights kept); 2: a re-proposal of trial 0
    (reused); 3: INFEASIBLE; 4: FAILED (NaN at step 5); 5: interrupted, re-run as 6 (PRUNED).
    """
    base = tmp_path_factory.mktemp("built")
    root = base / "roots"
    file = _write(base / "study.yaml", STUDY)
    study = Study(api.load(file), root=root)
    study.optuna.enqueue_trial({"lora.rank": 4})
    study.optuna.enqueue_trial({"lora.rank": 0})
    run_local(study, 2, progress=False)
    first = dict(study.results())[0]
    study.optuna.enqueue_trial({"lora.rank": 4})
    trial, _ = study.ask()
    study.tell(trial, first, reused=True)  # what Study.propose does for a known candidate
    _tell(
        study,
        {"lora.rank": 8},
        TrialStatus.INFEASIBLE,
        trainable_params=4096,
        error="4,096 trainable parameters exceed the budget of 100",
    )
    _tell(study, {"lora.rank": 8}, TrialStatus.FAILED, error="loss is NaN", error_step=5)
    study.optuna.enqueue_trial({"lora.rank": 8})
    study.ask()  # left RUNNING: its process "died"
    assert study.recover_interrupted() == [5]  # failed, marked interrupted, re-queued as 6
    retry, candidate = study.ask()
    study.tell(
        retry,
        TrialResult(status=TrialStatus.PRUNED, candidate=candidate, steps=3, target_steps=10),
    )
    assert [n for n, _ in study.results()] == [0, 1, 2, 3, 4, 6]
    return {"root": root, "file": file, "folder": root / "clires", "study": study}


# 1. --n-trials ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-3"])
def test_n_trials_below_one_is_rejected_before_anything_runs(tmp_path, value):
    file = _write(tmp_path / "study.yaml", STUDY)
    out = _cli("run", file, "--n-trials", value, "--root", tmp_path / "r", "--quiet")
    _fails(out, f"- --n-trials: n-trials >= 1 must hold, but got {value}.", "Hint: leave it out")
    assert not (tmp_path / "r").exists()  # no study created, nothing trained


def test_api_run_rejects_n_trials_below_one_and_none_means_the_files(tmp_path):
    file = _write(tmp_path / "study.yaml", STUDY)
    with pytest.raises(ConfigError) as info:
        api.run(file, n_trials=0, root=tmp_path / "r")
    text = str(info.value)
    assert "- n_trials: n_trials >= 1 must hold" in text and "but got 0" in text
    assert "the study file's n_trials (2)" in text
    assert not (tmp_path / "r").exists()


# 2. --root, and reading never creates a study ----------------------------------------------


@SLOW
@pytest.mark.parametrize(
    "command", [["export", "--trials", "t.csv"], ["report"], ["reeval"], ["dashboard"]]
)
def test_reading_a_missing_study_is_an_error_and_creates_nothing(built, tmp_path, command):
    name, *rest = command
    out = _cli(name, built["file"], *rest, cwd=tmp_path)
    _fails(
        out,
        "- STUDY: no study 'clires' under studies: ",
        "studies/clires/study.db does not exist",
        "Hint: give --root FOLDER",
        "--storage URL",
    )
    assert not (tmp_path / "studies").exists()  # used to leave an empty study.db behind


@SLOW
def test_read_commands_take_root_and_a_study_name(built, tmp_path):
    out = _cli("export", built["file"], "--root", built["root"], "--trials", "a.csv", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    out = _cli("export", "clires", "--root", built["root"], "--trials", "b.csv", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    # A folder is its own location; a --root elsewhere contradicts it.
    out = _cli("export", built["folder"], "--root", tmp_path, "--trials", "c.csv", cwd=tmp_path)
    _fails(out, "- --root: the study folder", "is not in this folder")
    out = _cli("export", "nosuch", "--root", built["root"], "--trials", "c.csv", cwd=tmp_path)
    _fails(out, "- STUDY: no study folder", "nosuch (with study.json)", "Hint: give --root")
    assert not (tmp_path / "studies").exists() and not (built["root"] / "nosuch").exists()


@SLOW
def test_read_with_storage_finds_the_study_by_name_and_creates_no_database(built, tmp_path):
    url = f"sqlite:///{built['folder'] / 'study.db'}"
    out = _cli("export", "clires", "--storage", url, "--trials", "t.csv", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(pd.read_csv(tmp_path / "t.csv")) == 7
    assert not (tmp_path / "studies").exists()  # a read makes no folder, no snapshot
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    out = _cli("export", built["file"], "--storage", missing, "--trials", "t.csv", cwd=tmp_path)
    _fails(out, "- STUDY: no study 'clires' in the storage", "none.db does not exist")
    assert not (tmp_path / "none.db").exists()


# 8. storage URLs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("foo", "not a usable storage URL"),
        (
            "sqlite:////nonexistent/dir/x.db",
            "the SQLite file's folder /nonexistent/dir does not exist",
        ),
    ],
)
def test_bad_storage_urls_name_the_option(tmp_path, url, rule):
    file = _write(tmp_path / "study.yaml", STUDY)
    out = _cli("run", file, "--storage", url, "--root", tmp_path / "r", "--quiet")
    _fails(out, f"- --storage: {rule}", f"but got {url!r}")
    out = _cli("report", file, "--storage", url)
    _fails(out, f"- --storage: {rule}")
    # $AUTOPEFT_STORAGE stands for --storage (a password then stays out of `ps`).
    out = _cli("run", file, "--quiet", env=dict(os.environ, AUTOPEFT_STORAGE=url))
    _fails(out, f"- --storage: {rule}")


def test_bad_storage_in_the_study_file_names_the_field(tmp_path):
    file = _write(tmp_path / "study.yaml", {**STUDY, "storage": "notaurl"})
    out = _cli("run", file, "--root", tmp_path / "r", "--quiet")
    _fails(
        out,
        "- storage: not a usable storage URL",
        "but got 'notaurl'",
        "Hint: a storage is a database URL: sqlite:///relative/path.db",
        "postgresql+psycopg2://USER@HOST/DB",
    )


# 3. export into a folder of an earlier export ------------------------------------------


@SLOW
def test_export_replaces_an_earlier_export_and_refuses_a_foreign_folder(built, tmp_path):
    from peft import PeftModel

    from autopeft.train.export import load_exported
    from autopeft.train.models import load_model

    out = tmp_path / "adapter"
    study_tools.export_trial(built["study"], 0, out)  # LoRA: a peft adapter beside ours
    assert (out / "adapter_config.json").is_file()
    (out / "notes.txt").write_text("mine")
    study_tools.export_trial(built["study"], 1, out)  # head only: no peft adapter
    assert not (out / "adapter_config.json").exists()
    assert not (out / "adapter_model.safetensors").exists()
    assert (out / "notes.txt").read_text() == "mine"  # only an export's own files go
    assert json.loads((out / "autopeft.json").read_text())["trial"] == 1
    assert not load_exported(out).candidate.methods  # head only
    with pytest.raises(ValueError):  # no stale adapter for peft to load silently
        PeftModel.from_pretrained(load_model("tiny-bert", num_labels=2, seed=3), str(out))

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model.bin").write_text("x")
    with pytest.raises(ConfigError) as info:
        study_tools.export_trial(built["study"], 1, foreign)
    text = str(info.value)
    assert "- --output: the folder is not empty and holds no autopeft export" in text
    assert sorted(p.name for p in foreign.iterdir()) == ["model.bin"]


# 4. the trials table ----------------------------------------------------------------------


@SLOW
def test_trials_table_marks_reused_and_interrupted_trials_and_keeps_integers(built, tmp_path):
    out = _cli("export", built["folder"], "--trials", tmp_path / "t.csv")
    assert out.returncode == 0, out.stderr[-2000:]
    table = pd.read_csv(tmp_path / "t.csv", dtype=str, keep_default_na=False).set_index("number")
    assert list(table.columns[:4]) == ["state", "status", "reused", "retry_of"]
    assert table.loc["2", "reused"] == "0" and table.loc["2", "status"] == "COMPLETE"
    assert [table.loc[n, "reused"] for n in ("0", "1", "3", "4", "5", "6")] == [""] * 6
    assert table.loc["5", "status"] == "FAILED" and table.loc["5", "state"] == "FAIL"
    assert table.loc["5", "error"] == "interrupted (re-run as trial 6)"
    assert table.loc["6", "retry_of"] == "5" and table.loc["6", "status"] == "PRUNED"
    assert table.loc["0", "trainable_params"] == "2048"  # not 2048.0
    assert table.loc["0", "param.lora.rank"] == "4" and table.loc["5", "param.lora.rank"] == "8"
    assert table.loc["5", "trainable_params"] == "" and table.loc["4", "steps"] == "0"
    frame = built["study"].trials()
    for column in ("number", "reused", "retry_of", "trainable_params", "steps"):
        assert str(frame[column].dtype) == "Int64", column


@SLOW
def test_the_report_names_the_trial_that_re_ran_an_interrupted_one(built):
    from autopeft.report.tables import StudyData

    assert StudyData.from_study(built["study"]).untold == {
        5: ("FAIL", "interrupted (re-run as trial 6)")
    }


# 5. exporting a trial that did not complete ------------------------------------------------


@SLOW
@pytest.mark.parametrize(
    ("number", "phrases"),
    [
        (
            3,
            [
                "- --trial: trial 3 did not complete: its status is INFEASIBLE (4,096 trainable "
                "parameters exceed the budget of 100).",
            ],
        ),
        (
            4,
            [
                "- --trial: trial 4 did not complete: its status is FAILED (loss is NaN at step 5)",
                "or add --retrain to train this candidate again at full fidelity",
            ],
        ),
        (5, ["- --trial: trial 5 was interrupted (re-run as trial 6): it has no result."]),
        (9, ["- --trial: no finished trial with this number", "the study's trials are 0..6"]),
    ],
)
def test_export_of_a_trial_that_did_not_complete_is_an_error(built, tmp_path, number, phrases):
    front = ", ".join(str(n) for n in sorted(n for n, _ in built["study"].front_points()))
    out = _cli("export", built["folder"], "--trial", number, "-o", tmp_path / "x")
    _fails(out, *phrases, f"Hint: export a COMPLETE trial, e.g. a front trial: {front}")
    assert "retrain" not in out.stderr.split("Hint")[0]  # nothing was retrained
    if number == 3:  # over budget again if retrained: --retrain is not suggested
        assert "--retrain" not in out.stderr
    assert not (tmp_path / "x").exists()


# 6. reeval ----------------------------------------------------------------------------------


@SLOW
@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--top", "1", "--seeds", "0"], "- --seeds: seeds >= 1 must hold, but got 0."),
        (["--seeds", "-2"], "- --seeds: seeds >= 1 must hold, but got -2."),
        (["--top", "0"], "- --top: top >= 1 must hold, but got 0."),
        (["--top", "-1"], "- --top: top >= 1 must hold, but got -1."),
    ],
)
def test_reeval_counts_below_one_are_rejected_before_anything(built, args, phrase):
    before = dict(built["study"].optuna.user_attrs)
    out = _cli("reeval", built["folder"], *args)
    _fails(out, phrase)
    assert built["study"].optuna.user_attrs == before  # no reeval.<n> without a mean


@SLOW
def test_reeval_says_when_every_seed_failed(built, capsys, monkeypatch):
    def failing(study):
        def run(candidate, seed):
            return TrialResult(status=TrialStatus.FAILED, candidate=candidate, error="boom")

        return run

    monkeypatch.setattr(reeval, "_training_seed_runner", failing)
    code = cli.main(["reeval", str(built["folder"]), "--top", "1", "--seeds", "2"])
    assert code == 0
    assert capsys.readouterr().out.endswith(": all 2 seeds failed: boom\n")


def test_reeval_of_a_study_without_front_is_an_error(tmp_path):
    study = Study(api.study_from_dict(STUDY), root=tmp_path)
    _tell(study, {"lora.rank": 8}, TrialStatus.INFEASIBLE, error="over")
    with pytest.raises(ConfigError) as info:
        reeval.reeval(study, top=1, seeds=1, run=lambda c, s: None)
    text = str(info.value)
    assert "the study 'clires' has no Pareto front to re-evaluate: 1 trial with a result: " in text
    assert "1 INFEASIBLE" in text and "relax the budget" in text


# 7. submit --------------------------------------------------------------------------------


def test_submit_shell_needs_hosts_and_is_run_with_bash(tmp_path):
    file = ROOT / "studies" / "quickstart" / "study.yaml"
    out = _cli("submit", file, "--shell", "--hosts", "gpu1,gpu2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "wrote quickstart-shell.sh; run it with: bash quickstart-shell.sh"
    assert (tmp_path / "quickstart-shell.sh").is_file()
    _fails(
        _cli("submit", file, "--shell", "-o", "x.sh", cwd=tmp_path),
        "- --hosts: --shell needs the worker hosts",
        "autopeft run FILE --executor ray",
    )
    _fails(_cli("submit", file, "--hosts", "a", cwd=tmp_path), "- --hosts: --hosts names the")
    _fails(_cli("submit", file, "--shell", "--hosts", "a", "--now", cwd=tmp_path), "- --now: ")
    assert not (tmp_path / "x.sh").exists()
    help_text = " ".join(_cli("submit", "--help").stdout.split())
    assert "default: NAME-slurm.sh, or NAME-shell.sh with --shell" in help_text


# 9. Ctrl-C ----------------------------------------------------------------------------------


def test_interrupted_says_one_line_and_exit_code(capsys):
    from autopeft import stop

    stop.reset()
    assert cli.interrupted("run") == 130
    assert capsys.readouterr().err == (
        "interrupted: finished trials are kept; run the same command to resume\n"
    )
    assert cli.interrupted("dashboard") == 0  # Ctrl-C is how a dashboard stops
    assert capsys.readouterr().err == "optuna-dashboard stopped\n"
    for signum, code, start in [
        (signal.SIGTERM, 143, "terminated (SIGTERM)"),
        (1, 129, "hung up (SIGHUP)"),
    ]:
        stop.reset()
        with pytest.raises(KeyboardInterrupt):
            stop.on_signal(signum, None)
        assert cli.interrupted("reeval") == code
        assert capsys.readouterr().err.startswith(f"{start}: front points re-evaluated")
    stop.reset()


def test_a_stop_line_nobody_can_read_is_dropped(monkeypatch):
    """After SIGHUP the terminal is gone: writing the line fails with EIO, not the exit."""
    from autopeft import stop

    class HungUp:
        def write(self, text):
            raise OSError(5, "Input/output error")

        def flush(self):
            raise OSError(5, "Input/output error")

    silenced = []
    monkeypatch.setattr(sys, "stderr", HungUp())
    monkeypatch.setattr(cli, "_to_devnull", lambda: silenced.append(True))
    stop.reset()
    with pytest.raises(KeyboardInterrupt):
        stop.on_signal(signal.SIGHUP, None)
    assert cli.interrupted("run") == 129 and silenced == [True]
    stop.reset()


@SLOW
def test_ctrl_c_during_run_prints_one_line(tmp_path):
    long = {**STUDY, "training": {**STUDY["training"], "steps": 5000, "eval_every": 5000}}
    file = _write(tmp_path / "study.yaml", long)
    proc = subprocess.Popen(
        [sys.executable, "-m", "autopeft.cli", "run", str(file), "--root", str(tmp_path / "r")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    wait_mid_trial(tmp_path / "r" / "clires" / "study.db", "clires", proc, 0, timeout=120)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    # 130 is what a shell reports for both an exit(130) and a death by SIGINT (-2 here); the
    # latter was seen once under a loaded full suite, after the line below was printed.
    assert proc.returncode in (130, -signal.SIGINT), err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err.strip().splitlines()[-1] == (
        "interrupted: finished trials are kept; run the same command to resume"
    )
    # The trial it stopped is marked interrupted and queued again, not left RUNNING.
    trials = optuna.load_study(
        study_name="clires", storage=f"sqlite:///{tmp_path / 'r' / 'clires' / 'study.db'}"
    ).trials
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    stopped = [t for t in trials if t.user_attrs.get("interrupted")]
    assert stopped and all(t.state == TrialState.FAIL for t in stopped)
    queued = [t for t in trials if t.state == TrialState.WAITING]
    assert [t.user_attrs["retry_of"] for t in queued] == [t.number for t in stopped]


# 10. nothing fits the budget -----------------------------------------------------------------


@SLOW
def test_run_where_every_trial_is_infeasible_says_so(tmp_path):
    # Over the memory budget (known per trial, on the real data): each trial is INFEASIBLE.
    space = {"modules": {"lora": {"rank": [4]}}, "budget": {"max_memory_mb": 0.01}}
    file = _write(tmp_path / "study.yaml", {**STUDY, "search_space": space})
    out = _cli("run", file, "--root", tmp_path / "r", "--quiet")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Pareto front of 'clires': 0 of 2 trials" in out.stdout
    assert "note: all 2 trials were over budget (INFEASIBLE; e.g. predicted memory" in out.stdout
    assert "relax search_space.budget" in out.stdout


def test_run_refuses_a_parameter_budget_below_the_smallest_candidate(tmp_path):
    space = {"modules": {"lora": {"rank": [4]}}, "budget": {"max_trainable_params": 100}}
    file = _write(tmp_path / "study.yaml", {**STUDY, "search_space": space})
    out = _cli("run", file, "--root", tmp_path / "r", "--quiet")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "- search_space.budget.max_trainable_params: no candidate of the space fits" in (
        out.stderr
    )
    assert "the smallest has 2,048 trainable parameters" in out.stderr


def test_validate_where_nothing_fits_is_an_error_after_the_summary(tmp_path):
    study = {**STUDY, "model": "minilm"}
    study["search_space"] = {
        "modules": {"lora": {"rank": [4, 8]}},
        "budget": {"max_trainable_params": 100},
    }
    out = _cli("validate", _write(tmp_path / "study.yaml", study))
    _fails(
        out,
        "- search_space.budget.max_trainable_params: no candidate of the space fits this budget "
        "on minilm: the smallest has 36,864 trainable parameters, but got 100.",
        "Hint: raise the budget to at least 36,864",
    )
    assert "study 'clires', not runnable as it is" in out.stdout  # the summary, not 'valid'


def test_validate_warns_when_no_sampled_candidate_fits(tmp_path):
    space = {
        "modules": {
            "serial_adapter": {"size": {"type": "int", "low": 0, "high": 256}},
            "parallel_adapter": {"size": {"type": "int", "low": 0, "high": 256}},
        },
        "budget": {"max_trainable_params": 10},
    }
    out = _cli("validate", _write(tmp_path / "space.yaml", space))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == (
        "warning: none of 1000 random candidates fits the budget of 10 trainable parameters "
        "(the smallest candidate has 0): most trials will be INFEASIBLE; consider raising "
        "search_space.budget.max_trainable_params"
    )

"""Commands that read a study write nothing; a storage that is no Optuna database is refused."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest
import yaml

from autopeft import cli


def empty(path):
    path.touch()


def other_sqlite(path):
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (body TEXT)")
        db.execute("INSERT INTO notes VALUES ('mine')")


def not_sqlite(path):
    path.write_text("a text file, not a database\n")


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_paragraph(err: str) -> None:
    assert err.startswith("error: 1 problem") and err.count("\n- ") == 1, err
    assert "Traceback" not in err


STUDY = {
    "name": "ro",
    "model": "tiny-bert",
    "task": {"name": "sms_spam", "max_length": 32},
    "search_space": {"modules": {"lora": {"rank": [2]}}},
    "training": {"steps": 2, "batch_size": 8},
}


@pytest.mark.parametrize("make", [empty, other_sqlite, not_sqlite])
@pytest.mark.parametrize("command", ["report", "reeval", "dashboard", "export"])
def test_reading_a_file_that_holds_no_study_changes_nothing(
    command, make, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "some.db"
    make(db)
    before = digest(db)
    extra = ["--trials", "t.csv"] if command == "export" else []
    code = cli.main([command, "ro", "--storage", f"sqlite:///{db}", *extra])
    assert code == 2
    one_paragraph(capsys.readouterr().err)
    assert digest(db) == before and sorted(p.name for p in tmp_path.iterdir()) == ["some.db"]


@pytest.mark.parametrize("make", [other_sqlite, not_sqlite])
def test_run_refuses_a_file_that_is_no_optuna_database(make, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ro.yaml").write_text(yaml.safe_dump(STUDY))
    db = tmp_path / "some.db"
    make(db)
    before = digest(db)
    assert cli.main(["run", "ro.yaml", "--storage", f"sqlite:///{db}"]) == 2
    err = capsys.readouterr().err
    one_paragraph(err)
    assert "--storage" in err and ("without Optuna's tables" in err or "not a SQLite" in err)
    assert digest(db) == before
    assert not (tmp_path / "studies").exists()  # no empty study folder left behind


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://"])
def test_an_in_memory_storage_is_refused(url, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ro.yaml").write_text(yaml.safe_dump(STUDY))
    assert cli.main(["run", "ro.yaml", "--storage", url]) == 2
    err = capsys.readouterr().err
    one_paragraph(err)
    assert "in-memory" in err and "keeps nothing" in err
    assert not (tmp_path / "studies").exists()


def test_a_run_that_fails_before_its_first_trial_leaves_no_study_behind(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    too_big = {**STUDY, "training": {"steps": 2, "batch_size": 100_000}}
    (tmp_path / "ro.yaml").write_text(yaml.safe_dump(too_big))
    assert cli.main(["run", "ro.yaml"]) == 2
    err = capsys.readouterr().err
    one_paragraph(err)
    assert "training.batch_size" in err
    assert not (tmp_path / "studies").exists()
    (tmp_path / "studies" / "ro").mkdir(parents=True)  # a folder that was there is kept
    assert cli.main(["run", "ro.yaml"]) == 2
    assert (tmp_path / "studies" / "ro").is_dir()


def test_a_study_folder_that_cannot_be_made_is_one_paragraph(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ro.yaml").write_text(yaml.safe_dump(STUDY))
    (tmp_path / "a-file").write_text("")  # a file where the folder of studies should be
    assert cli.main(["run", "ro.yaml", "--root", "a-file"]) == 2
    err = capsys.readouterr().err
    one_paragraph(err)
    assert "--root" in err and "a-file/ro cannot be created" in err and "Not a directory" in err

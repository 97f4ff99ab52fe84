"""`autopeft run` stopped by SIGTERM or a closed terminal hands its trials back, as Ctrl-C does.

Run as a user runs it: in a terminal of its own (a pty, so the progress display is on). A
scheduler's preemption or ``kill`` sends SIGTERM; closing the terminal sends SIGHUP, after which
the terminal can no longer be written to.
"""

from __future__ import annotations

import signal

import pytest
import yaml

from tests.helpers import Terminal, check_handed_back, wait_mid_trial

STUDY = {
    "name": "sigstop",
    "model": "tiny-bert",
    "task": {"name": "sms_spam", "max_length": 32},
    "search_space": {"modules": {"lora": {"rank": [0, 4, 8]}}},
    # One long trial: the signal lands while it trains.
    "training": {"steps": 5000, "batch_size": 8, "eval_every": 5000, "eval_examples": 32},
    "halving": {"enabled": False},
    "sampler": "random",
    "n_trials": 2,
}


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "closed terminal"])
def test_a_terminated_or_hung_up_run_hands_its_trial_back(how, tmp_path):
    file = tmp_path / "study.yaml"
    file.write_text(yaml.safe_dump(STUDY))
    db = tmp_path / "r" / "sigstop" / "study.db"
    term = Terminal(["run", str(file), "--root", str(tmp_path / "r")])
    wait_mid_trial(db, "sigstop", term.proc, 0, timeout=120)
    assert term.proc.poll() is None, term.text[-3000:]
    if how == "SIGTERM":
        term.proc.send_signal(signal.SIGTERM)
    else:
        term.close()
    code = term.wait(timeout=120)
    if how == "SIGTERM":
        assert code == 128 + signal.SIGTERM, term.text[-3000:]  # what a shell reports
        assert "sigstop" in term.text and "0/2" in term.text  # the progress display was on
        assert "Traceback" not in term.text
        last = term.text.strip().splitlines()[-1]
        assert last.endswith(
            "terminated (SIGTERM): finished trials are kept; run the same command to resume"
        )
    else:  # nothing can be read from a closed terminal: the exit code says it all
        assert code == 128 + signal.SIGHUP
    # The trial it stopped is marked interrupted and queued again, not left RUNNING.
    check_handed_back(db, "sigstop")

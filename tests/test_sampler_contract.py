"""Every registered sampler passes the shipped contract; a new one needs no other edit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from autopeft.core.study_config import POOL_SAMPLERS, SAMPLERS
from autopeft.search import samplers
from autopeft.testing.sampler_contract import (  # noqa: F401 -- collected here
    test_a_drafted_trial_gets_the_proposal_of_a_stored_one,
    test_proposes_inside_the_space_among_every_kind_of_trial,
    test_resumes_from_stored_trials,
    test_same_seed_same_proposals_with_two_objectives,
)

ROOT = Path(__file__).resolve().parents[1]


def test_core_knows_the_built_in_samplers_and_their_traits():
    # Core validates a study without the registry (and without optuna) from these names.
    builtin = {
        name: spec
        for name, spec in samplers.registry().items()
        if type(spec).__module__.startswith("autopeft.search.samplers.")
    }
    assert set(builtin) == set(SAMPLERS)
    assert {name for name, spec in builtin.items() if spec.pool} == set(POOL_SAMPLERS)
    for name, spec in builtin.items():
        assert spec.name == name and spec.summary and "\n" not in spec.summary
        assert spec.default_startup >= 0


PLUGIN = textwrap.dedent(
    '''
    """A sampler defined outside autopeft: one class and one registration."""

    from autopeft.search.samplers import SamplerSpec, register


    @register
    class Halton(SamplerSpec):
        name = "halton"
        summary = "quasi-random Halton sequence (a plugin of the contract test)"

        def build(self, inputs):
            import warnings

            import optuna

            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(
                qmc_type="halton", seed=inputs.cfg.seed, scramble=True
            )
    '''
)


def test_a_registered_sampler_is_checked_by_the_contract_with_no_other_edit(tmp_path):
    (tmp_path / "halton_plugin.py").write_text(PLUGIN)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:xdist",
            "-p",
            "no:cacheprovider",
            "-p",
            "halton_plugin",
            "-k",
            "halton",
            "--rootdir",
            str(tmp_path),
            str(ROOT / "autopeft" / "testing" / "sampler_contract.py"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "4 passed" in out.stdout, out.stdout[-2000:]


def test_the_samplers_command_lists_every_registered_sampler_once():
    import subprocess
    import sys

    from autopeft.search import samplers

    out = subprocess.run(
        [sys.executable, "-m", "autopeft.cli", "samplers"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    for name, spec in samplers.registry().items():
        row = [line for line in lines if line.split()[0] == name]
        assert len(row) == 1 and spec.summary in row[0], name
    assert lines[-1] == f"{len(samplers.registry())} samplers"

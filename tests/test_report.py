"""The HTML report: pure figure tables on a blackbox study, and the file in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
from plotly.offline import get_plotlyjs

from autopeft import api, methods, reeval
from autopeft.core.trial_result import MemoryKind, TrialStatus
from autopeft.report import summaries, tables, write_report
from autopeft.report.tables import StudyData
from autopeft.search import blackbox
from autopeft.search.local import run_local
from autopeft.search.study import Study

# One worker builds the shared blackbox study (under `pytest -n 2 --dist loadgroup`).
pytestmark = pytest.mark.xdist_group("report")
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
# Appended to a copy of the report in the browser test: lists every resource the page fetched.
PROBE = """<script>window.addEventListener("load", function () { setTimeout(function () {
  var names = performance.getEntriesByType("resource").map(function (e) { return e.name; });
  document.documentElement.setAttribute("data-resources", JSON.stringify(names));
}, 0); });</script>"""


def study_config(name: str = "report"):
    return api.study_from_dict(
        {
            "name": name,
            "model": "minilm",
            "search_space": {
                "modules": {
                    "lora": {"rank": [0, 2, 4, 8, 16, 32, 64], "targets": {"choice": [["q", "v"]]}},
                    "serial_adapter": {"size": [0, 8, 32, 128]},
                },
                "layers": "search",
                "budget": {"max_trainable_params": "1%"},
            },
            "training": {"steps": 90, "rungs": [0.34, 0.67, 1.0]},
            "objectives": "accuracy, -trainable_params, -peak_memory",
            "sampler": {"name": "random"},
            "halving": {"enabled": True, "eta": 2, "min_peers": 2},
        }
    )


REEVAL_TOP, REEVAL_SEEDS = 3, 4


def seed_runner(study):
    """``autopeft reeval``'s runner on the blackbox: the training seed changes the noise."""

    def run(candidate, seed):
        runner = blackbox.for_study(study, seed=100 + seed, noise=0.01)
        return runner.run(candidate, None, set())

    return run


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """24 blackbox trials, three objectives; every status appears (failures injected); the
    best front points re-evaluated with several seeds."""
    s = Study(study_config(), root=tmp_path_factory.mktemp("studies"))
    run_local(s, 24, runner=blackbox.for_study(s, fail_every=5), progress=False)
    statuses = {r.status for _, r in s.results()}
    assert statuses == set(TrialStatus), statuses
    reeval.reeval(s, top=REEVAL_TOP, seeds=REEVAL_SEEDS, run=seed_runner(s))
    return s


@pytest.fixture(scope="module")
def data(study):
    return StudyData.from_study(study)


# -- tables (pure) ---------------------------------------------------------------------------


def test_tables_import_no_plotly():
    code = "import sys, autopeft.report.tables; assert 'plotly' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_front_flags_match_the_study_front(study, data):
    front = {n for n, _ in study.front_points()}
    assert front and {n for n, _ in data.front()} == front
    rows = tables.points(data)
    assert {r["number"] for r in rows if r["front"]} == front
    assert {r["number"] for r in tables.trial_rows(data) if r["front"]} == front
    assert len(rows) == len(study.results())
    for row in rows:
        assert row["values"] == dict(
            zip(study.metrics, study.values_of(dict(study.results())[row["number"]]))
        )


def test_the_knee_is_one_front_point_flagged_everywhere(study, data):
    from autopeft.core.pareto import knee_point

    front = study.front_points()
    expected = front[knee_point([study.values_of(r) for _, r in front], study.directions)][0]
    assert data.knee() == expected == tables.summary(data)["knee"]
    assert [r["number"] for r in tables.points(data) if r["knee"]] == [expected]
    from autopeft.report.html import figure_3d, pair_figure

    for fig in (figure_3d(data), pair_figure(data, 0, 1)):
        knee = [t for t in fig.data if t.name.startswith("knee")]
        assert len(knee) == 1 and [c[0] for c in knee[0].customdata] == [expected]


def test_hypervolume_history_is_monotone_and_ends_at_the_study_hypervolume(study, data):
    rows = tables.hypervolume_rows(data)
    assert [r["number"] for r in rows] == sorted(n for n, _ in study.results())
    hv = [r["hypervolume"] for r in rows]
    assert all(b >= a for a, b in zip(hv, hv[1:]))
    assert hv[-1] == pytest.approx(study.hypervolume()) and hv[-1] > 0
    assert all(r["status"] == "COMPLETE" for r in rows if r["improved"])


def test_pair_fronts_are_nondominated_in_their_pair(data):
    pairs = tables.objective_pairs(data)
    assert pairs == [(0, 1), (0, 2), (1, 2)]
    for i, j in pairs:
        stairs = tables.pair_front(data, i, j)
        assert stairs and [s["x"] for s in stairs] == sorted(s["x"] for s in stairs)


def test_placement_counts_equal_a_direct_count(study, data):
    front = [r for _, r in study.front_points()]
    cells = {(c["layer"], c["module"]): c for c in summaries.placement(data)}
    assert {c[0] for c in cells} == set(range(study.profile.num_layers))
    assert {c[1] for c in cells} == {"lora", "serial_adapter"}
    for (layer, module), cell in cells.items():
        spec = methods.get(module)
        sizes = [
            m.sizes[layer] if m.sizes else m.params[spec.size_param]
            for r in front
            if (m := r.candidate.module(module)) is not None and layer in m.layers
        ]
        sizes = [s for s in sizes if s > 0]
        assert cell["count"] == len(sizes), (layer, module)
        if sizes:
            assert cell["mean_size"] == pytest.approx(sum(sizes) / len(sizes))
    assert sum(c["count"] for c in cells.values()) > 0


def test_module_summary(study, data):
    rows = {r["module"]: r for r in summaries.module_summary(data)}
    results = study.results()
    for module, row in rows.items():
        using = [(n, r) for n, r in results if module in r.candidate.methods]
        assert row["trials"] == len(using)
        done = [r for _, r in using if r.status is TrialStatus.COMPLETE]
        assert row["complete"] == len(done)
        assert row["front"] == sum(module in r.candidate.methods for _, r in study.front_points())
        if done:
            assert row["best_metric"] == max(r.metrics["accuracy"] for r in done)
        assert row["params_min"] <= row["params_max"]


def test_failed_and_infeasible_rows_carry_their_reason(study, data):
    rows = {r["number"]: r for r in tables.trial_rows(data)}
    results = dict(study.results())
    assert set(rows) == set(results)
    for n, result in results.items():
        row = rows[n]
        assert row["status"] == result.status.value
        if result.status is TrialStatus.FAILED:
            assert row["error"] == "injected failure"
        elif result.status is TrialStatus.INFEASIBLE:
            assert "exceed the budget" in row["error"] and row["memory_kind"] == "predicted"
            assert row["values"]["accuracy"] is None  # no worst-value sentinel in the table
        elif result.status is TrialStatus.COMPLETE:
            assert row["error"] == "" and row["memory_kind"] == "CPU estimate"
        if result.status in (TrialStatus.PRUNED, TrialStatus.COMPLETE):
            assert 0 < row["steps"] <= row["target_steps"] == 90


def test_search_cost_sums(study, data):
    cost = tables.search_cost(data)
    counts = Counter(r.status.value for _, r in study.results())
    assert cost["by_status"] == {s.value: counts[s.value] for s in TrialStatus}
    assert cost["trials"] == len(study.results())
    trained = [r for n, r in study.results() if n not in data.reused]  # reused: no compute
    assert len(trained) == study.n_done() == 24
    assert cost["steps_trained"] == sum(r.steps for r in trained)
    assert cost["trained"] == len(trained) and cost["reused"] == len(data.reused)
    assert cost["steps_trained"] < cost["steps_full_fidelity"]  # halving pruned some
    # Wall time by device: CUDA-measured trials are GPU-hours, the others CPU-hours.
    results, expected = [], {"gpu": 0.0, "cpu": 0.0}
    for k, (n, r) in enumerate(data.results):
        cuda = k % 2 == 0 and r.status is TrialStatus.COMPLETE
        r = r.model_copy(
            update={"wall_time_s": 36.0 * (k + 1), "memory_kind": MemoryKind.CUDA if cuda else None}
        )
        results.append((n, r))
    fake = StudyData(**{**data.__dict__, "results": results, "reused": {results[-1][0]}})
    for _, r in results[:-1]:  # the reused trial costs nothing
        on_gpu = r.memory_kind is MemoryKind.CUDA or r.memory_kind is None
        expected["gpu" if on_gpu else "cpu"] += r.wall_time_s / 3600
    cost = tables.search_cost(fake)
    assert cost["gpu_hours"] == pytest.approx(expected["gpu"]) and cost["gpu_hours"] > 0
    assert cost["cpu_hours"] == pytest.approx(expected["cpu"])
    assert cost["trained"] == len(results) - 1 and cost["reused"] == 1


def test_untold_trials_and_config(data):
    extra = StudyData(**{**data.__dict__, "untold": {99: ("RUNNING", ""), 98: ("FAIL", "x")}})
    rows = tables.trial_rows(extra)
    assert [r["number"] for r in rows][-2:] == [98, 99] and rows[-2]["error"] == "x"
    cost = tables.search_cost(extra)
    assert cost["by_status"]["RUNNING"] == 1 and cost["trials"] == len(data.results) + 2
    assert data.config["name"] == "report" and data.config["training"]["steps"] == 90


def test_reeval_rows_summarise_the_seeds(study, data):
    rows = tables.reeval_rows(data)
    front = dict(study.front_points())
    assert len(rows) == REEVAL_TOP and {r["number"] for r in rows} <= set(front)
    best = sorted(front.values(), key=lambda r: -r.metrics["accuracy"])[:REEVAL_TOP]
    assert {r["search"] for r in rows} == {r.metrics["accuracy"] for r in best}
    for row in rows:
        runs = study.optuna.user_attrs[f"reeval.{row['number']}"]["seeds"]
        accs = [run["accuracy"] for run in runs]
        assert row["seeds"] == REEVAL_SEEDS and row["failed_seeds"] == 0
        assert row["mean"] == pytest.approx(statistics.fmean(accs))
        assert row["std"] == pytest.approx(statistics.stdev(accs)) and row["std"] > 0
        assert row["min"] == min(accs) and row["max"] == max(accs)
    assert [r["mean"] for r in rows] == sorted((r["mean"] for r in rows), reverse=True)


def test_report_cli_writes_the_report_and_rejects_a_missing_study(study, tmp_path):
    out = tmp_path / "reports" / "cli.html"
    cmd = [sys.executable, "-m", "autopeft.cli", "report", str(study.folder), "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"wrote {out}" in done.stdout
    text = _outside_plotly(out.read_text())
    assert text.count('class="autopeft-plot"') == 8 and 'id="robustness"' in text
    for number in study.optuna.user_attrs:  # every re-evaluated trial is in the table
        if number.startswith("reeval."):
            assert f'<td class="num">{number.split(".")[1]}</td>' in text
    default = subprocess.run(cmd[:-2], capture_output=True, text=True, cwd=tmp_path)
    assert default.returncode == 0 and (tmp_path / "reports" / "report.html").is_file()
    bad = subprocess.run([*cmd[:4], str(tmp_path / "nope")], capture_output=True, text=True)
    assert bad.returncode == 2 and "no study file or study folder" in bad.stderr
    assert "Traceback" not in bad.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "study.json").write_text('{"name": "broken", "model": 3}')
    bad = subprocess.run([*cmd[:4], str(broken)], capture_output=True, text=True)
    assert bad.returncode == 2 and "configuration snapshot does not validate" in bad.stderr
    assert "study.json.model" in bad.stderr and "Traceback" not in bad.stderr


def _replace(data, number, **update):
    """``data`` with trial ``number``'s result changed (a copy: the fixture stays as it is)."""
    results = [(n, r.model_copy(update=update) if n == number else r) for n, r in data.results]
    return StudyData(**{**data.__dict__, "results": results})


def _row_cells(html: str, number: int) -> list[str]:
    """The cells of the trial table row of trial ``number`` (its first cell is the number)."""
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", html):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        if cells and cells[0] == str(number):
            return cells
    raise AssertionError(f"no row for trial {number}")


def test_memory_and_parameter_axes_and_columns_carry_units(data):
    from autopeft.report.html import figure_3d, pair_figure
    from autopeft.report.html_tables import trials_table

    params, memory = data.metrics.index("trainable_params"), data.metrics.index("peak_memory")
    fig = pair_figure(data, params, memory)
    # The blackbox estimates a trained trial's memory; a pruned one measured none: predicted.
    assert fig.layout.yaxis.title.text == (
        "peak_memory [MiB; CPU estimate, predicted] (lower is better)"
    )
    assert fig.layout.xaxis.title.text == ("trainable_params [excl. head] (lower is better)")
    front = next(t for t in fig.data if t.name == "Pareto front")
    assert "peak_memory: %{y:,.1f} MiB (%{customdata[3]})" in front.hovertemplate
    assert "trainable_params: %{x:,} PEFT parameters" in front.hovertemplate
    assert {c[3] for c in front.customdata} == {"CPU estimate"}
    scene = figure_3d(data).layout.scene
    assert scene.zaxis.title.text == "peak_memory [MiB]"
    assert scene.yaxis.title.text == "trainable_params [excl. head]"
    # A CUDA measurement is named as the study stored it, on the axis and in the hover.
    complete = [n for n, r in data.results if r.status is TrialStatus.COMPLETE]
    pruned = next(n for n, r in data.results if r.status is TrialStatus.PRUNED)
    mixed = _replace(data, complete[0], memory_kind=MemoryKind.CUDA)
    fig = pair_figure(mixed, params, memory)
    assert fig.layout.yaxis.title.text == (
        "peak_memory [MiB; measured (CUDA), CPU estimate, predicted] (lower is better)"
    )
    kinds = {c[0]: c[3] for t in fig.data if t.customdata is not None for c in t.customdata}
    assert kinds[complete[0]] == "measured (CUDA)" and kinds[pruned] == "predicted"
    html = trials_table(mixed)
    headers = re.findall(r"<th>(.*?)</th>", html)
    assert headers[2:5] == [
        "accuracy",
        "trainable_params [excl. head]",
        "peak_memory [MiB]",
    ]
    assert "peak memory [MiB]" in headers and "memory is" in headers and "wall [s]" in headers
    assert "measured (CUDA)" in _row_cells(html, complete[0])
    assert "predicted" in _row_cells(html, pruned)


def test_a_head_only_candidate_shows_its_head_parameters(data):
    from autopeft.core.candidate import Candidate
    from autopeft.report.html import pair_figure, robustness_figure
    from autopeft.report.html_tables import robustness_table, trials_table

    number = tables.reeval_rows(data)[0]["number"]  # a front point with seed runs
    head = dict(data.results)[number].head_params
    assert head > 0  # minilm's classifier head
    only = _replace(data, number, candidate=Candidate(modules=()), trainable_params=0)
    shown = f"head only ({head:,} trained head parameters)"
    (row,) = [r for r in tables.points(only) if r["number"] == number]
    assert row["head_only"] and row["description"] == shown
    fig = pair_figure(only, 0, 1)
    hovers = {c[0]: c[2] for t in fig.data if t.customdata is not None for c in t.customdata}
    assert hovers[number] == shown
    cells = _row_cells(trials_table(only), number)
    params = re.findall(r"<th>(.*?)</th>", trials_table(only)).index(
        "trainable_params [excl. head]"
    )
    assert cells[params] == f"head {head:,}"  # not 0
    assert f'<span class="desc">{shown}</span>' in cells
    assert f"head {head:,}" in _row_cells(robustness_table(only), number)
    assert shown in [c[2] for c in robustness_figure(only).data[0].customdata]
    # Other candidates keep their PEFT count.
    other = next(n for n, r in data.results if r.candidate.modules and n != number)
    assert (
        _row_cells(trials_table(only), other)[params]
        == f"{dict(data.results)[other].trainable_params:,}"
    )


# -- HTML ------------------------------------------------------------------------------------


def _outside_plotly(text: str) -> str:
    bundle = get_plotlyjs()
    assert text.count(bundle) == 1, "plotly.js is embedded exactly once"
    return text.replace(bundle, "")


def test_html_is_self_contained_and_escaped(data, tmp_path):
    results = list(data.results)
    n, r = next((n, r) for n, r in results if r.status is TrialStatus.FAILED)
    results[results.index((n, r))] = (n, r.model_copy(update={"error": "<img src=x onerror=1>"}))
    evil = StudyData(**{**data.__dict__, "name": "<script>alert(1)</script>", "results": results})
    text = write_report(evil, tmp_path / "sub" / "r.html").read_text()
    rest = _outside_plotly(text)
    assert "<script>alert(1)" not in rest and "&lt;script&gt;alert(1)" in rest
    assert "<img src=x" not in rest and "&lt;img src=x onerror=1&gt;" in rest
    assert not re.search(r"https?://|\bsrc=|@import|url\(", rest.replace("&lt;img src=x", ""))
    # 3 pairs, 3-D, hypervolume, states, seed robustness, heatmap
    assert rest.count('class="autopeft-plot"') == 8
    two = StudyData(**{**data.__dict__, "metrics": data.metrics[:2], "reeval": {}})
    two.directions, two.reference = data.directions[:2], data.reference[:2]
    text = write_report(two, tmp_path / "two.html").read_text()
    assert text.count('class="autopeft-plot"') == 4  # one pair, no 3-D, no robustness
    assert "No re-evaluation yet" in text and "autopeft reeval STUDY" in text


class PlotScan(HTMLParser):
    """Collects, per ``div.autopeft-plot``, the classes, tags and text inside it."""

    VOID = {"area", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}

    def __init__(self):
        super().__init__()
        self.plots: dict[str, Counter] = {}
        self.text: dict[str, str] = {}
        self.current: str | None = None
        self.depth = 0
        self.html_attrs: dict[str, str | None] = {}

    def _mark(self, tag, attrs):
        a = dict(attrs)
        if self.current is not None:
            self.plots[self.current].update((a.get("class") or "").split() + [f"<{tag}>"])

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "html":
            self.html_attrs = a
        if self.current is None and tag == "div" and "autopeft-plot" in (a.get("class") or ""):
            self.current, self.depth = a["id"], 0
            self.plots[self.current], self.text[self.current] = Counter(), ""
        self._mark(tag, attrs)
        if self.current is not None and tag not in self.VOID:
            self.depth += 1

    def handle_startendtag(self, tag, attrs):
        self._mark(tag, attrs)

    def handle_endtag(self, tag):
        if self.current is not None and tag not in self.VOID:
            self.depth -= 1
            if self.depth == 0:
                self.current = None

    def handle_data(self, data):
        if self.current is not None:
            self.text[self.current] += data


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    """Headless Chromium, offline: no sandbox (root), fresh profile, every host unresolvable."""
    cmd = [
        str(CHROMIUM),
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--enable-unsafe-swiftshader",  # software WebGL for the 3-D plot
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--proxy-server=127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=15000",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


@pytest.mark.slow
def test_report_renders_offline_in_headless_chromium(study, tmp_path):
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: run `scripts/chromium.sh install` (as root)")
    report = write_report(study, tmp_path / "reports" / "report.html")
    url = report.resolve().as_uri()
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("</body>", PROBE + "</body>"))

    out = chromium("--dump-dom", probed.as_uri(), profile=tmp_path / "profile-dom")
    assert out.returncode == 0, out.stderr[-3000:]
    scan = PlotScan()
    scan.feed(out.stdout)
    assert "data-js-errors" not in scan.html_attrs, scan.html_attrs.get("data-js-errors")
    assert scan.html_attrs.get("data-resources") == "[]", "the page fetched nothing"
    console = [ln for ln in out.stderr.splitlines() if ":CONSOLE" in ln and "file://" in ln]
    bad = [ln for ln in console if re.search(r"Uncaught|Error|net::ERR_|Failed to load", ln)]
    assert not bad, "\n".join(bad)
    assert not re.search(r"net::ERR_|Failed to load resource", out.stderr), out.stderr[-3000:]
    expected = ["pareto-0-1", "pareto-0-2", "pareto-1-2", "pareto-3d"]
    expected += ["hypervolume", "status", "robustness", "placement"]
    assert sorted(scan.plots) == sorted(expected)
    for plot_id, classes in scan.plots.items():
        assert classes["js-plotly-plot"] == 1 and classes["main-svg"] >= 1, plot_id
        assert "webgl" not in scan.text[plot_id].lower(), (plot_id, scan.text[plot_id][:300])
    front = len(study.front_points())
    for plot_id in expected[:3]:  # every evaluated point is drawn, the front among them
        assert scan.plots[plot_id]["point"] >= front
    assert scan.plots["pareto-3d"]["<canvas>"] >= 1
    assert scan.plots["placement"]["hm"] == 1 and scan.plots["status"]["point"] == 4
    # One error bar per re-evaluated front point, beside its search-time value.
    assert scan.plots["robustness"]["yerror"] == REEVAL_TOP
    assert scan.plots["robustness"]["point"] == 2 * REEVAL_TOP

    shot = tmp_path / "report.png"
    out = chromium(
        "--hide-scrollbars",
        "--window-size=1400,3000",
        f"--screenshot={shot}",
        url,
        profile=tmp_path / "profile-shot",
    )
    assert out.returncode == 0 and shot.exists(), out.stderr[-3000:]
    assert shot.stat().st_size > 20_000
    if os.environ.get("AUTOPEFT_SAVE_SCREENSHOT") == "1":
        (ROOT / "reports").mkdir(exist_ok=True)
        shutil.copy(shot, ROOT / "reports" / "example-report.png")

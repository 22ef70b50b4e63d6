"""The saved MLflow views, checked as a user sees them: a real small sweep, `mlflow server` on loopback,
the links `mixsweep ui NAME` prints loaded in headless Chromium, assertions on the rendered DOM.

Chromium is Debian's `chromium` package (`.ci/run` installs it). Without any Chromium binary the test
skips, saying so, except under CI (env CI set), where it fails. Screenshots of every link are kept in
the test's artifacts folder (printed, and under pytest's basetemp).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

ARMS = ("none", "mixup", "cutmix", "saliencymix")
SPEC = textwrap.dedent(f"""\
    name: uiview
    description: the browser test's sweep (4 arms x 2 seeds, tiny)
    base:
      dataset: synthetic_salient
      data.train_size: 128
      data.test_size: 64
      model: small_cnn
      model.width: 8
      epochs: 2
      batch_size: 32
      eval.robust_size: 32
      workers: 0
      device: cpu
    factors:
      mix.preset: [{", ".join(ARMS)}]
    seeds: 2
    resources: {{cpu: 1}}
    metric: final/top1_err
    mode: min
    """)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
#: ports Chromium refuses to load (net/base/port_util.cc) inside the range we pick from
UNSAFE_PORTS = {5060, 5061, 6000, 6566, 6665, 6666, 6667, 6668, 6669, 6697}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_binary() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def mixsweep(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def free_port() -> int:
    for port in range(5100 + os.getpid() % 700, 6000):
        if port in UNSAFE_PORTS:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port in 5100-5999")


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"mlflow server exited with code {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    """Stop a process started with start_new_session=True, and its group (mlflow's workers)."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="session")
def ui_sweep(tmp_path_factory):
    """A finished 4-arm x 2-seed sweep with its report: (storage, `run` output, `report` output)."""
    storage = tmp_path_factory.mktemp("uiview") / "runs"
    spec = storage.parent / "uiview.yaml"
    spec.write_text(SPEC)
    run = mixsweep("run", str(spec), "--storage", str(storage))
    assert run.returncode == 0, run.stderr[-3000:]
    report = mixsweep("report", "uiview", "--storage", str(storage))
    assert report.returncode == 0, report.stderr[-3000:]
    return storage, run, report


@pytest.fixture
def chromium() -> str:
    path = chromium_binary()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"no Chromium binary ({', '.join(CHROMIUM_NAMES)}) on PATH under CI; .ci/run installs "
                        "Debian's `chromium` with apt-get")
        pytest.skip(f"no Chromium binary ({', '.join(CHROMIUM_NAMES)}) on PATH: apt-get install -y chromium")
    return path


OPTUNA_SPEC = textwrap.dedent("""\
    name: uiopt
    base:
      dataset: synthetic_salient
      data.train_size: 128
      data.test_size: 64
      model: small_cnn
      model.width: 8
      epochs: 2
      batch_size: 32
      eval.robust_size: 32
      workers: 0
      device: cpu
      mix.preset: saliencymix
    seeds: [0]
    search:
      algorithm: optuna
      num_trials: 4
      max_concurrent: 2
      space:
        optim.lr: loguniform(0.001, 0.03)
        mix.prob: uniform(0.2, 1.0)
    resources: {cpu: 1}
    """)


@pytest.fixture(scope="session")
def optuna_sweep(tmp_path_factory):
    """A finished 4-trial Optuna sweep: (storage, `run` output)."""
    storage = tmp_path_factory.mktemp("uiopt") / "runs"
    spec = storage.parent / "uiopt.yaml"
    spec.write_text(OPTUNA_SPEC)
    run = mixsweep("run", str(spec), "--storage", str(storage))
    assert run.returncode == 0, run.stderr[-3000:]
    return storage, run


@pytest.fixture
def mlflow_server(ui_sweep):
    with serve(ui_sweep[0]) as base:
        yield base


@contextlib.contextmanager
def serve(storage: Path):
    """`mlflow server` on a loopback port over the sweep's store; its base URL. Stopped by PID afterwards."""
    port = free_port()
    log = (storage.parent / "mlflow-server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                             f"sqlite:///{storage / 'mlflow.db'}", "--default-artifact-root",
                             (storage / "mlartifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/health", proc)
        yield base
    finally:
        stop(proc)
        log.close()


def render(chromium: str, url: str, shot: Path, profile: Path, ready: str, budget_ms: int = 20000,
           attempts: int = 3) -> str:
    """The DOM of `url` after the page settled (virtual time), and a screenshot of it. A busy machine can
    end the time budget before the page has fetched its data: the DOM is taken again (`attempts` times)
    until it holds `ready`."""
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
            f"--user-data-dir={profile}", "--window-size=3000,1400", f"--virtual-time-budget={budget_ms}"]
    for _ in range(attempts):
        dom = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=120)
        assert dom.returncode == 0, dom.stderr[-2000:]
        if ready in dom.stdout:
            break
    subprocess.run([*args, f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True)
    return dom.stdout


def text_of(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def segments(html: str, testid: str) -> list[str]:
    """The DOM from each element with data-testid=`testid` to the next one."""
    starts = [html.rfind("<", 0, m.start()) for m in re.finditer(f'data-testid="{testid}"', html)]
    return [html[a:b] for a, b in zip(starts, starts[1:] + [len(html)])]


@pytest.mark.slow
def test_printed_links_render_grouped_table_and_charts(ui_sweep, mlflow_server, chromium, tmp_path):
    from mlflow import MlflowClient

    storage, run, report = ui_sweep
    assert "[mixsweep] MLflow views of uiview" in run.stderr and "viewStateShareKey=mixsweep-uiview-" in run.stderr
    assert "viewStateShareKey=mixsweep-uiview-mix.preset" in report.stderr

    # the CLI finds the running server on the store and prints the links to it
    port = mlflow_server.rsplit(":", 1)[1]
    ui = mixsweep("ui", "uiview", "--storage", str(storage), "--port", port, timeout=120)
    assert ui.returncode == 0, ui.stderr[-2000:]
    assert "already serves this store" in ui.stdout
    table_urls = re.findall(r"table:\s+(\S+)", ui.stdout)
    chart_urls = re.findall(r"charts:\s+(\S+)", ui.stdout)
    assert len(table_urls) == len(chart_urls) == 1, ui.stdout
    assert all(u.startswith(mlflow_server + "/#/experiments/") and "workflowType=machine_learning" in u
               for u in table_urls + chart_urls)

    # what MLflow holds: the arms' mean final error (the order the table must show), the description
    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mixsweep")
    trials = client.search_runs([exp.experiment_id], "tags.`mixsweep.sweep` = 'uiview' and "
                                "tags.`mixsweep.role` = 'trial'")
    assert len(trials) == 8
    means = {arm: sum(t.data.metrics["final/top1_err"] for t in trials if t.data.params["mix.preset"] == arm) / 2
             for arm in ARMS}
    sweep_run = client.search_runs([exp.experiment_id], "tags.`mixsweep.role` = 'sweep'")[0]
    note = sweep_run.data.tags["mlflow.note.content"]
    assert "## Summary" in note and "### mix.preset" in note and "viewStateShareKey=mixsweep-uiview" in note
    assert all(re.search(rf"^\| \**{arm}\b", note, re.M) for arm in ARMS), note  # one table row per arm

    artifacts = Path(os.environ.get("MIXSWEEP_TEST_ARTIFACTS", tmp_path / "screenshots"))
    artifacts.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots of the MLflow views: {artifacts}")
    profile = tmp_path / "chromium-profile"

    table = render(chromium, table_urls[0], artifacts / "uiview-table.png", profile, ready="Group: ")
    (artifacts / "uiview-table.html").write_text(table)
    assert "share key" not in text_of(table), "the UI could not load the saved view"
    groups = re.findall(r'<span title="([^"]*)"[^>]*>Group: ', table)
    assert sorted(groups) == sorted(ARMS), f"one group per arm expected, got {groups}"
    shown = [means[g] for g in groups]
    assert shown == sorted(shown), f"groups not sorted by mean final/top1_err ({means}): {groups}"
    columns = set(re.findall(r'col-id="([^"]+)"', table))
    for col in ("params.`mix.preset`", "params.`seed`", "metrics.`final/top1_err`", "metrics.`best/top1_err`",
                "metrics.`robust/fgsm_top1_err`", "metrics.`cost/device_s`"):
        assert col in columns, f"column {col} missing; shown: {sorted(columns)}"
    assert text_of(table).count("(average)") >= len(ARMS), "group rows should show averages"

    charts = render(chromium, chart_urls[0], artifacts / "uiview-charts.png", profile, ready="main-svg",
                    budget_ms=25000)
    (artifacts / "uiview-charts.html").write_text(charts)
    sections = [text_of(s) for s in segments(charts, "experiment-view-compare-runs-section-header")]
    assert sections and sections[0].startswith("mixsweep (3)"), sections
    cards = {text_of(c).split(" ")[0]: c for c in segments(charts, "experiment-view-compare-runs-card")}
    for title in ("test/top1_err", "train/loss", "final/top1_err"):
        assert title in cards, f"chart {title} not rendered; cards: {list(cards)}"
        assert 'class="main-svg"' in cards[title], f"chart {title} has no plot"
    for title in ("test/top1_err", "train/loss"):  # one mean curve per arm
        legend = text_of(cards[title])
        assert all(f"{arm} ({title})" in legend for arm in ARMS), legend[:500]
        assert cards[title].count('class="js-line"') >= len(ARMS)
    bars = text_of(cards["final/top1_err"])
    assert all(arm in bars for arm in ARMS), bars[:500]
    assert cards["final/top1_err"].count('class="point"') == len(ARMS)  # one bar per arm
    assert all((artifacts / f"uiview-{n}.png").stat().st_size > 10_000 for n in ("table", "charts"))


@pytest.mark.slow
def test_optuna_view_renders_parallel_coordinates(optuna_sweep, chromium, tmp_path):
    storage, run = optuna_sweep
    charts_url = re.findall(r"charts:\s+(\S+)", run.stderr)
    assert len(charts_url) == 1 and "viewStateShareKey=mixsweep-uiopt-search" in charts_url[0], run.stderr[-2000:]
    artifacts = Path(os.environ.get("MIXSWEEP_TEST_ARTIFACTS", tmp_path / "screenshots"))
    artifacts.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots of the MLflow views: {artifacts}")
    with serve(storage) as base:
        url = charts_url[0].replace("http://127.0.0.1:5000", base)
        charts = render(chromium, url, artifacts / "uiopt-charts.png", tmp_path / "profile", ready="main-svg",
                        budget_ms=25000)
    (artifacts / "uiopt-charts.html").write_text(charts)
    cards = {text_of(c).split(" ")[0]: c for c in segments(charts, "experiment-view-compare-runs-card")}
    parallel = next((c for c in cards.values() if text_of(c).startswith("Parallel Coordinates")), None)
    assert parallel is not None, f"no parallel-coordinates chart; cards: {list(cards)}"
    assert all(axis in text_of(parallel) for axis in ("optim.lr", "mix.prob", "final/top1_err"))
    assert "<svg" in parallel and "No matching data" not in text_of(parallel)
    for param in ("search/trial", "optim.lr", "mix.prob"):  # the metric against the trial number, and each param
        scatter = next((c for c in cards.values() if text_of(c).startswith(f"{param} vs. final/top1_err")), None)
        assert scatter is not None and 'class="main-svg"' in scatter, f"no scatter of {param}; cards: {list(cards)}"


@pytest.mark.slow
def test_ui_starts_a_server_prints_links_and_stops_it_on_sigterm(ui_sweep, optuna_sweep):
    storage, _, _ = ui_sweep
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "ui", "uiview", "--storage", str(storage),
                             "--port", str(port)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True)
    try:
        lines = [proc.stdout.readline() for _ in range(4)]
        assert lines[0].startswith(f"MLflow UI on http://127.0.0.1:{port}"), lines
        assert f"http://127.0.0.1:{port}/#/experiments/" in lines[2] and "viewStateShareKey=" in lines[2], lines
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            assert resp.status == 200
        proc.terminate()  # SIGTERM to `mixsweep ui` alone: the UI it started stops with it
        assert proc.wait(timeout=30) == 0
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
    finally:
        stop(proc)

    with serve(optuna_sweep[0]) as other:  # a UI on the port serving another store is not taken for ours
        ui = mixsweep("ui", "uiview", "--storage", str(storage), "--port", other.rsplit(":", 1)[1], timeout=120)
    assert ui.returncode == 2 and "serves another MLflow store; pass another --port" in ui.stderr, ui.stderr

"""What a sweep's terminal shows: our lines only, live on a terminal, plain in a pipe, the same numbers in both."""

from __future__ import annotations

import io
import os
import re
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator.console import SHOWN, Terminal, WorkerOutput, wants_live
from orchestrator.progress import Progress, clock, render_table

from .reliability_helpers import run, write_spec

ANSI = "\x1b["


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_clock(monkeypatch):
    clock_ = Clock()
    monkeypatch.setattr("orchestrator.progress.time.monotonic", clock_)
    return clock_


def trial(trial_id: str, run_hash: str, name: str) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config={"trial": {"meta": {"run_hash": run_hash, "run_name": name},
                                                                "config": {}}})


def plain_progress(**kwargs) -> tuple[Progress, io.StringIO]:
    out = io.StringIO()
    names = {"h1": "none-s0", "h2": "none-s1", "h3": "cutmix-s0"}
    return Progress(metric="final/top1_err", names=names, epochs=dict.fromkeys(names, 4), out=out, live=False,
                    **kwargs), out


def test_snapshot_numbers_and_eta(fake_clock):
    """2 slots, 3 trials of 4 epochs: the ETA from measured epoch times, epochs left and the trials queued."""
    progress, out = plain_progress()
    t1, t2 = trial("a", "h1", "none-s0"), trial("b", "h2", "none-s1")
    progress.on_trial_start(0, [], t1)
    progress.on_trial_start(0, [], t2)
    snap = progress.snapshot()
    assert (snap.running, snap.queued, snap.finished, snap.failed) == (2, 1, 0, 0)
    assert (snap.epochs_done, snap.epochs_total, snap.eta_s) == (0, 12, None)  # nothing measured yet
    fake_clock.now += 12  # first epochs: 12 s with the start-up
    progress.on_trial_result(0, [], t1, {"epoch": 1, "test/top1_err": 80.0, "device": "cpu", "pid": 11})
    progress.on_trial_result(0, [], t2, {"epoch": 1, "test/top1_err": 85.0, "device": "gpu 1", "pid": 12})
    fake_clock.now += 2  # then 2 s per epoch: 10 s of the first one were start-up
    progress.on_trial_result(0, [], t1, {"epoch": 2, "test/top1_err": 70.0, "device": "cpu", "pid": 11})
    snap = progress.snapshot()
    assert snap.per_epoch_s == pytest.approx(2.0)
    # t1: 2 epochs x 2 s; t2: 3 epochs at the mean 2 s, 2 s of them past; the queued one: 10 s start-up + 4 x 2 s;
    # over 2 slots
    assert snap.eta_s == pytest.approx((4 + 4 + 18) / 2)
    assert (snap.epochs_done, snap.epochs_total) == (3, 12)
    fake_clock.now += 1  # time passes without results: the ETA counts down
    assert progress.snapshot().eta_s == pytest.approx((3 + 3 + 18) / 2)
    line = out.getvalue().splitlines()[-1]
    assert line == ("[mixsweep] none-s0  epoch 2/4  test err 70.00  2.0 s/epoch  cpu  | 2 running, 1 queued, "
                    "0 finished, 0 failed; 3/12 epochs, ETA 0:00:13")
    assert "[mixsweep] 2 trials started: 2 running, 1 queued, 0 finished, 0 failed (latest: none-s1)" in out.getvalue()


def test_same_numbers_in_both_renderers(fake_clock):
    from rich.console import Console

    progress, out = plain_progress()
    t1 = trial("a", "h1", "none-s0")
    progress.on_trial_start(0, [], t1)
    for epoch in range(1, 5):
        fake_clock.now += 3
        result = {"epoch": epoch, "test/top1_err": 50.0 - epoch, "device": "cpu"}
        if epoch == 4:
            result["final/top1_err"] = 46.0
        progress.on_trial_result(0, [], t1, result)
    progress.on_trial_complete(0, [], t1)
    snap = progress.snapshot()
    plain = out.getvalue()
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(render_table(snap, "final/top1_err", title="s · launch-001"))
    live = console.file.getvalue()
    assert f"{snap.epochs_done}/{snap.epochs_total} epochs · ETA {clock(snap.eta_s)}" in live
    assert f"{snap.epochs_done}/{snap.epochs_total} epochs, ETA {clock(snap.eta_s)}" in plain.splitlines()[-2]
    assert "[mixsweep] finished: none-s0  (final/top1_err 46.00)" in plain
    row = next(line for line in live.splitlines() if "none-s0" in line)
    assert re.search(r"finished\s+━{20}\s+4/4\s+46\.00\s+46\.00\s+3\.0\s+cpu", row), row
    assert ANSI not in plain and ANSI not in live


def test_failed_and_queued_counts(fake_clock):
    progress, out = plain_progress(log_hint="/x/logs")
    t1 = trial("a", "h1", "none-s0")
    progress.on_trial_start(0, [], t1)
    fake_clock.now += 5
    progress.on_trial_result(0, [], t1, {"epoch": 1, "test/top1_err": 90.0})
    progress.on_trial_result(0, [], t1, {"epoch": 1, "error": "training diverged", "failed": 1})
    progress.on_trial_complete(0, [], t1)
    snap = progress.snapshot()
    assert (snap.running, snap.queued, snap.finished, snap.failed) == (0, 2, 0, 1)
    assert snap.epochs_total == 1 + 4 + 4  # a failed trial counts the epochs it ran
    assert "[mixsweep] failed: none-s0  (training diverged)" in out.getvalue()


def test_worker_lines_routed(tmp_path):
    shown = []
    output = WorkerOutput(tmp_path / "workers.log", forward=lambda pid, line: shown.append((pid, line)))
    output._file = (tmp_path / "workers.log").open("a")
    output.handle({"pid": 7, "ip": "10.0.0.1", "is_err": True, "actor_name": "run_trial",
                   "lines": ["epoch 1/3  train/loss 2.3", "Checkpoint successfully created at: Checkpoint(...)",
                             "resuming /s/trials/abc after epoch 1/3", "mixsweep: MLflow tracking off"]})
    output.handle({"pid": "autoscaler", "lines": ["======== Autoscaler status: x ========", "Node status"]})
    output.uninstall()
    text = (tmp_path / "workers.log").read_text()
    assert "(run_trial pid=7, ip=10.0.0.1) err: Checkpoint successfully created" in text
    assert "Autoscaler status" not in text  # its periodic report; its events would stay
    assert shown == [(7, "resuming /s/trials/abc after epoch 1/3"), (7, "mixsweep: MLflow tracking off")]
    assert SHOWN.match("mixsweep: x") and not SHOWN.match("epoch 1/3")


def test_worker_line_named_by_trial(fake_clock):
    progress, out = plain_progress()
    t1 = trial("a", "h1", "none-s0")
    progress.on_trial_start(0, [], t1)
    progress.worker_line(9, "resuming /s/trials/h2 after epoch 1/4")  # names its folder: another trial
    progress.worker_line(9, "mixsweep: something")  # pid 9 reported nothing yet
    progress.on_trial_result(0, [], t1, {"epoch": 1, "pid": 9})
    progress.worker_line(9, "mixsweep: MLflow tracking off")
    lines = out.getvalue().splitlines()
    assert "[mixsweep] none-s1: resuming /s/trials/h2 after epoch 1/4" in lines
    assert "[mixsweep] worker pid 9: something" in lines
    assert "[mixsweep] none-s0: MLflow tracking off" in lines


def test_wants_live(monkeypatch):
    tty = SimpleNamespace(isatty=lambda: True)
    monkeypatch.delenv("MIXSWEEP_PLAIN", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert wants_live(tty) and not wants_live(io.StringIO())
    monkeypatch.setenv("MIXSWEEP_PLAIN", "1")
    assert not wants_live(tty)
    monkeypatch.delenv("MIXSWEEP_PLAIN")
    monkeypatch.setenv("TERM", "dumb")
    assert not wants_live(tty)


def test_terminal_prints_above_a_live_display():
    printed = []
    stream = io.StringIO()
    term = Terminal(stream)
    term.attach(SimpleNamespace(console=SimpleNamespace(print=lambda text, **kw: printed.append(str(text)))))
    print("[mixsweep] SIGINT: stopping", file=term, flush=True)
    term.write("half")
    term.attach(None)
    print("after", file=term)
    assert printed == ["[mixsweep] SIGINT: stopping", "half"] and stream.getvalue() == "after\n"


LIVE_SCRIPT = textwrap.dedent("""\
    import sys, time
    from types import SimpleNamespace
    from orchestrator.progress import Progress

    def trial(i):
        meta = {"run_hash": f"h{i}", "run_name": f"arm-s{i}"}
        return SimpleNamespace(trial_id=f"t{i}", config={"trial": {"meta": meta, "config": {}}})
    progress = Progress(metric="final/top1_err", names={"h0": "arm-s0", "h1": "arm-s1"}, epochs={"h0": 3, "h1": 3},
                        out=sys.stderr, title="demo · launch-001")
    assert progress.live
    t0, t1 = trial(0), trial(1)
    progress.on_trial_start(0, [], t0)
    progress.on_trial_start(0, [], t1)
    for epoch in (1, 2, 3):
        time.sleep(0.3)
        progress.on_trial_result(0, [], t0, {"epoch": epoch, "test/top1_err": 50.0, "device": "cpu", "pid": 1})
        progress.on_trial_result(0, [], t1, {"epoch": epoch, "test/top1_err": 60.0, "device": "cpu", "pid": 2})
    time.sleep(0.3)
    progress.on_trial_complete(0, [], t0)
    progress.close()
    print("[mixsweep] after the table", file=progress.out, flush=True)
""")


def test_live_table_on_a_pty(tmp_path):
    """On a terminal: the live table (rich; control codes expected), with epoch bars and the counts."""
    import pty

    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "TERM": "xterm-256color",
           "COLUMNS": "140", "LINES": "40"}
    env.pop("MIXSWEEP_PLAIN", None)
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-c", LIVE_SCRIPT], stdin=slave, stdout=slave, stderr=slave, env=env,
                            close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.time() + 120
    while time.time() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    assert proc.wait(timeout=30) == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    assert ANSI in text  # a live display on a terminal
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    assert "demo · launch-001" in plain and "epochs · ETA" in plain
    assert re.search(r"arm-s0\s+finished\s+━{20}\s+3/3", plain), plain[-3000:]
    assert re.search(r"arm-s1\s+running\s+━{20}\s+3/3", plain)
    assert "[mixsweep] finished: arm-s0" in plain and "[mixsweep] after the table" in plain
    assert plain.rstrip().endswith("[mixsweep] after the table")  # nothing drawn after the display stopped


@pytest.mark.slow
def test_piped_sweep_prints_our_lines_only(tmp_path):
    """A real sweep in a pipe: no Ray banner, TensorBoard hint, checkpoint chatter, dedup notes or ANSI codes;
    one line per epoch of each trial; the report's summary, its path and the MLflow links at the end; Ray's
    lines in <storage>/<sweep>/logs/."""
    spec = write_spec(tmp_path / "s.yaml", "piped", epochs=2, train_size=128, factors="mix.preset: [none, cutmix]",
                      seeds=1)
    storage = tmp_path / "runs"
    result = run("run", str(spec), "--storage", str(storage), timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    for noise in ("Started a local Ray instance", "View the dashboard", "TensorBoard", "Tuner.restore",
                  "Checkpoint successfully created", "repeated", "Configuration for experiment", "Token authentication",
                  "View detailed results", "Wrote the latest version", "INFO", "WARNING", ANSI):
        assert noise not in out, (noise, out)
    epochs = re.findall(r"^\[mixsweep\] (\S+)  epoch (\d)/2  test err ", out, flags=re.M)
    assert sorted(epochs) == [("cutmix-s0", "1"), ("cutmix-s0", "2"), ("none-s0", "1"), ("none-s0", "2")], out
    assert "[mixsweep] 2 trials started" in out and "[mixsweep] finished: none-s0" in out
    assert all(line.startswith(("[mixsweep]", "|", "###", "piped: by", "  table:", "  charts:")) or not line.strip()
               for line in out.splitlines()), out
    tail = out[out.index("[mixsweep] sweep piped: 2 finished"):]
    assert "### mix.preset" in tail and "| **none (ref)** |" in tail, tail  # the reference arm, in bold
    assert f"[mixsweep] report: {storage / 'piped' / 'report' / 'report.md'}" in tail
    assert "viewStateShareKey=mixsweep-piped-" in tail
    logs = storage / "piped" / "logs"
    driver, workers = (logs / "driver.log").read_text(), (logs / "workers.log").read_text()
    assert "Started a local Ray instance" in driver and "Wrote the latest version" in driver
    assert "Checkpoint successfully created" in workers and "epoch 2/2" in workers

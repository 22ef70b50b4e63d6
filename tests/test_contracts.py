"""The driver<->trial contracts: a trial's folder (`TrialDir`), sweep.json (`SweepState`), the trial metadata
that crosses Ray (`TrialMeta`). Real files, no mocks."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.errors import UserError
from orchestrator.storage import STATE_FORMAT, DamagedState, SweepState, TrialEntry, sweep_paths
from trainables.trialdir import TrialDir, TrialState


def test_trial_dir_names_every_file_and_says_its_state(tmp_path):
    trial = TrialDir(tmp_path / "abc")
    assert [p.name for p in (trial.config, trial.sampled, trial.metrics, trial.final, trial.failed, trial.preview)] \
        == ["config.yaml", "sampled.json", "metrics.jsonl", "final.json", "failed.json", "preview.png"]
    assert trial.checkpoint(3) == tmp_path / "abc" / "checkpoints" / "epoch_0003.pt" and trial.name == "abc"
    assert trial.state() == TrialState.NEW and trial.read_metrics() == [] and trial.epochs_done() == 0
    trial.checkpoint(1).parent.mkdir(parents=True)
    trial.checkpoint(1).write_bytes(b"x")
    trial.write_metrics([{"epoch": 1, "test/top1_err": 50.0}])
    assert trial.state() == TrialState.PARTIAL and trial.epochs_done() == 1
    trial.write_failed("diverged", 1)
    assert trial.state() == TrialState.FAILED and json.loads(trial.failed.read_text()) == {"error": "diverged",
                                                                                            "epoch": 1}
    trial.write_final({"final/top1_err": 50.0, "epochs": 1})
    assert trial.state() == TrialState.FINISHED  # an end beats everything else
    assert f"{TrialState.PARTIAL:9s}|" == "partial  |"  # printed as the word by status and --dry-run
    trial.write_sampled({"optim.lr": 0.1})
    assert trial.read_sampled() == {"optim.lr": 0.1}


def _state(**kw) -> SweepState:
    return SweepState(name="s", tracking_uri="sqlite:////x/mlflow.db", experiment_id="1", sweep_run_id="r",
                      trials=(TrialEntry("h1", "trial-a", "c1", 0, {"mix.preset": "cutmix"}),), stopped=("h1",), **kw)


def test_sweep_state_round_trips_with_its_format(tmp_path):
    paths = sweep_paths(tmp_path, "s")
    state = _state(launches=2)
    state.save(paths)
    data = json.loads(paths.state.read_text())
    assert data["format"] == STATE_FORMAT and list(data)[0] == "format" and data["stopped"] == ["h1"]
    assert data["trials"] == [{"run_hash": "h1", "name": "trial-a", "config_hash": "c1", "seed": 0,
                               "levels": {"mix.preset": "cutmix"}}]
    assert SweepState.load(paths) == state
    del data["format"]  # written before the field existed: the same layout
    paths.state.write_text(json.dumps(data))
    assert SweepState.load(paths) == state


@pytest.mark.parametrize(("change", "error", "pattern"), [
    ({"format": STATE_FORMAT + 1}, UserError, r"written by a newer mixsweep \(sweep state format 2; this one reads "
                                              r"format 1\): upgrade mixsweep"),
    ({"format": 0}, DamagedState, r"format 0 of an older mixsweep.*`mixsweep run` rebuilds it"),
    ({"format": "1"}, DamagedState, r"not a sweep state: format '1'"),
    ({"tracking_uri": None}, DamagedState, r"not a sweep state: missing tracking_uri"),
    ({"trials": [{"hash": "x"}]}, DamagedState, r"not a sweep state: a field has the wrong shape"),
])
def test_sweep_state_refuses_what_it_does_not_understand(tmp_path, change, error, pattern):
    paths = sweep_paths(tmp_path, "s")
    data = {**_state().to_dict(), **change}
    paths.root.mkdir()
    paths.state.write_text(json.dumps({k: v for k, v in data.items() if v is not None}))
    with pytest.raises(error, match=pattern) as info:
        SweepState.load(paths)
    assert isinstance(info.value, DamagedState) == (error is DamagedState)  # only damage is rebuilt by `run`
    if error is DamagedState:  # `run` warns with the reason alone, then rebuilds: no remedy in it
        reason = info.value.reason
        assert reason.startswith(f"{paths.state} cannot be read (") and "rebuilds" not in reason
        assert str(info.value).startswith(f"{reason}. `mixsweep run` rebuilds it")


def test_run_leaves_a_newer_sweep_state_alone(tmp_path, capsys):
    """`run` must not rebuild (so overwrite) the state of a newer mixsweep, nor touch its MLflow runs."""
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nbase: {dataset: synthetic_salient, model: small_cnn, epochs: 1}\n"
                    "factors: {mix.preset: [none]}\nseeds: 1\n")
    paths = sweep_paths(tmp_path / "runs", "s")
    paths.root.mkdir(parents=True)
    text = json.dumps({**_state().to_dict(), "format": 7})
    paths.state.write_text(text)
    assert main(["run", str(spec), "--storage", str(paths.storage)]) == 2
    err = capsys.readouterr().err
    assert "written by a newer mixsweep (sweep state format 7" in err and "Traceback" not in err
    assert paths.state.read_text() == text and not (paths.storage / "mlflow.db").exists()


def test_trial_meta_crosses_ray_as_a_plain_dict():
    from trainables.meta import TrialMeta

    meta = TrialMeta(sweep="s", tracking_uri="sqlite:////x.db", experiment_id="1", sweep_run_id="r", git_commit="c",
                     trials_dir="/runs/s/trials")
    carried = meta.to_dict()
    assert all(isinstance(v, str) for v in carried.values())  # what Ray's JSON results and Optuna's space hold
    assert TrialMeta.from_dict(carried) == meta and pickle.loads(pickle.dumps(meta)) == meta
    assert TrialMeta.from_dict({**carried, "from_a_newer_driver": 1}) == meta
    assert TrialMeta.from_dict(None) == TrialMeta()
    with pytest.raises(AttributeError):
        meta.run_hash = "x"  # frozen: nobody changes what the driver sent
    sampled = meta.identified(config_hash="c1", run_hash="abcdef123456", run_name="t")  # a search trial, sampled
    assert (sampled.run_hash, sampled.run_name, sampled.workdir) == ("abcdef123456", "t", "/runs/s/trials/abcdef123456")
    assert sampled.trial_dir == TrialDir(Path("/runs/s/trials/abcdef123456"))
    assert meta.run_hash == "" and meta.trial_dir is None

"""The manifests in deploy/ are loaded and checked (they were never run on a real cloud here): they parse,
install / run mixsweep, and size the GPU workers for whole trials of the shipped spec they run."""

from __future__ import annotations

import shlex
from fractions import Fraction
from pathlib import Path

import yaml

from orchestrator.cli import build_parser
from orchestrator.spec import list_specs, load_spec

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _whole_trials(cpus: float, gpus: float, spec_name: str) -> int:
    """Trials of the spec one node holds; its CPUs and GPUs must run out together (nothing left idle)."""
    res = load_spec(spec_name).resources
    by_cpu, by_gpu = Fraction(str(cpus)) / Fraction(str(res.cpu)), Fraction(str(gpus)) / Fraction(str(res.gpu))
    assert by_cpu == by_gpu and by_cpu.denominator == 1 and by_cpu >= 1, (cpus, gpus, res)
    return int(by_cpu)


def test_cluster_launcher_yaml():
    config = yaml.safe_load((DEPLOY / "cluster-aws-gpu.yaml").read_text())
    assert config["provider"]["type"] in ("aws", "gcp")
    assert any("mixsweep" in cmd and "[cluster]" in cmd and "pip install" in cmd for cmd in config["setup_commands"])
    assert any("ray start --head" in cmd for cmd in config["head_start_ray_commands"])
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("CPU") == 0  # no trial on the head
    workers = [t for name, t in config["available_node_types"].items() if name != config["head_node_type"]]
    assert workers
    for node in workers:
        assert _whole_trials(node["resources"]["CPU"], node["resources"]["GPU"], "baselines") == 2
    # the submit command of its header (a line and its continuations) is a valid `mixsweep submit` of a shipped spec
    lines = [line.lstrip("#").strip() for line in (DEPLOY / "cluster-aws-gpu.yaml").read_text().splitlines()
             if line.startswith("#")]
    start = next(i for i, line in enumerate(lines) if line.startswith("mixsweep submit"))
    command = lines[start]
    while command.endswith("\\"):
        start += 1
        command = command[:-1] + " " + lines[start]
    submit = command.removeprefix("mixsweep submit")
    args = build_parser().parse_args(["submit", *shlex.split(submit)])
    assert args.spec in dict(list_specs()) and args.storage.startswith("/mnt/efs")


def test_kuberay_rayjob():
    job = yaml.safe_load((DEPLOY / "rayjob-baselines.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["mixsweep", "run"]
    args = build_parser().parse_args(argv[1:])
    assert args.spec in dict(list_specs()) and args.tracking_uri.startswith("http")
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    for group in cluster["workerGroupSpecs"]:
        params = group["rayStartParams"]
        container = group["template"]["spec"]["containers"][0]
        limits = container["resources"]["limits"]
        assert float(params["num-cpus"]) == float(limits["cpu"])
        assert float(params["num-gpus"]) == limits["nvidia.com/gpu"]
        assert _whole_trials(float(params["num-cpus"]), float(params["num-gpus"]), args.spec) == 2
        assert any(args.storage == m["mountPath"] for m in container["volumeMounts"])  # storage on every pod

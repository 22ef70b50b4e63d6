"""The `mixsweep` command line.

    mixsweep run SPEC [--storage DIR] [--tracking-uri URI] [--address ADDR] [--set k=v ...] [--dry-run]
    mixsweep submit SPEC --address http://HEAD:8265 --storage ABS [--tracking-uri URI] [--no-wait]
    mixsweep submit --resume NAME --address http://HEAD:8265
    mixsweep jobs | logs NAME | stop NAME     [--address http://HEAD:8265]
    mixsweep resume NAME | status NAME | report NAME [--out DIR] | sync NAME     [--storage DIR]
    mixsweep validate SPEC | list | preview | ui
    mixsweep fidelity [--presets P1,P2] [--set mix.KEY=V1,V2 ...] [--pairs N] [--out DIR | --png PATH]

User errors (bad spec, bad flag, missing file, unreachable tracking server) print one message and
exit with code 2, without a traceback; anything else is a bug and keeps its traceback. A sweep
that ran exits 0, 1 when trials failed or did not finish, 130 when it was stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

from trainables.mixing.errors import ConfigError
from trainables.mixing.lazy import lazy_import
from trainables.tracking import apply_http_defaults

from .errors import UserError
from .storage import DEFAULT_STORAGE, resolve_storage

# The modules behind the subcommands, bound by name and imported when a command first uses them
# (`trainables.mixing.lazy`): `--help` imports none of them, `validate` / `list` / `status` import
# neither Ray, MLflow nor torch, which `run`, `report` and `fidelity` need.
config = lazy_import("trainables.config")
data = lazy_import("trainables.data")
fidelity = lazy_import("orchestrator.fidelity")
jobs = lazy_import("orchestrator.jobs")
mix_config = lazy_import("trainables.mixing.config")
models = lazy_import("trainables.models")
preview = lazy_import("orchestrator.preview")
recipes = lazy_import("trainables.recipes")
report = lazy_import("orchestrator.report")
spec = lazy_import("orchestrator.spec")
status = lazy_import("orchestrator.status")
sweep = lazy_import("orchestrator.sweep")
sync = lazy_import("orchestrator.sync")
tracking = lazy_import("orchestrator.tracking")
ui = lazy_import("orchestrator.ui")


def _overrides(items: list[str]) -> dict:
    """`--set KEY=VALUE` flags, read by the one `--set` reader (values are YAML: `"123"` stays a string)."""
    try:
        return config.parse_set(items)
    except ConfigError as exc:
        raise UserError(str(exc)) from None


def _plain(args: argparse.Namespace) -> None:
    if getattr(args, "plain", False):
        os.environ["MIXSWEEP_PLAIN"] = "1"  # read by orchestrator.console.wants_live


def _cmd_run(args: argparse.Namespace) -> int:
    _plain(args)
    storage = resolve_storage(args.storage, create=True)
    return sweep.run_sweep(args.spec, storage=storage, tracking_uri=args.tracking_uri, address=args.address,
                     overrides=_overrides(args.set), dry_run=args.dry_run, retry_failed=args.retry_failed)


def _cmd_resume(args: argparse.Namespace) -> int:
    _plain(args)
    return sweep.resume_sweep(args.name, storage=resolve_storage(args.storage, create=False), address=args.address,
                        retry_failed=args.retry_failed)


def _cmd_status(args: argparse.Namespace) -> int:
    if args.address:  # a submitted sweep: its job's state first (the storage may be on the cluster only)
        here = (Path(args.storage).expanduser() / args.name).is_dir()
        print(jobs.job_line(args.name, args.address, required=not here))  # neither: exit 2, naming the known ones
        if not here:
            return 0
    return status.sweep_status(args.name, storage=resolve_storage(args.storage, create=False))


def _cmd_submit(args: argparse.Namespace) -> int:
    if bool(args.spec) == bool(args.resume):
        raise UserError("give a SPEC to submit, or --resume NAME (not both)")
    return jobs.submit(args.spec, address=args.address, storage=args.storage, tracking_uri=args.tracking_uri,
                       overrides=_overrides(args.set), resume=args.resume, python=args.python, wait=not args.no_wait,
                       stop_on_interrupt=args.stop_on_interrupt)


def _cmd_jobs(args: argparse.Namespace) -> int:
    return jobs.list_jobs(address=args.address)


def _cmd_logs(args: argparse.Namespace) -> int:
    return jobs.logs(args.name, address=args.address, follow_logs=not args.no_follow)


def _cmd_stop(args: argparse.Namespace) -> int:
    return jobs.stop(args.name, address=args.address)


def _cmd_report(args: argparse.Namespace) -> int:
    files = report.report_sweep(args.name, storage=resolve_storage(args.storage, create=False), out_dir=args.out)
    print(files["report.md"].read_text())
    print("written and logged on the sweep run: " + ", ".join(str(p) for p in files.values()), file=sys.stderr)
    ui.print_sweep_links(args.name, storage=resolve_storage(args.storage, create=False))
    return 0


def _cmd_sync(args: argparse.Namespace) -> int:
    return sync.sync_sweep(args.name, storage=resolve_storage(args.storage, create=False))


def _cmd_validate(args: argparse.Namespace) -> int:
    loaded = spec.load_spec(args.spec, overrides=_overrides(args.set))
    for warning in loaded.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    if spec.is_grid(loaded):
        trials = spec.expand(loaded)
        print(f"{loaded.source}: OK - {loaded.name}: {loaded.num_arms()} arms x {len(loaded.seeds)} seeds = "
              f"{len(trials)} trials, metric {loaded.metric} ({loaded.mode})")
    else:
        print(f"{loaded.source}: OK - {loaded.name}: {loaded.search.algorithm} search, "
              f"{loaded.search.num_trials} trials")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    print("sweep specs (mixsweep run NAME):")
    for name, description in spec.list_specs():
        print(f"  {name:22s} {description.splitlines()[0] if description else ''}")
    print("\npresets (mix.preset):")
    for name in mix_config.PRESETS.names():
        print(f"  {name:22s} {mix_config.PRESETS.help(name)}")
        print(f"  {'':22s}   {mix_config.preset_summary(name)}")
    print("\nfactor values:")
    docs = mix_config.factor_help()
    for key, values in mix_config.factor_values().items():
        if key == "preset":
            continue
        if key not in docs:
            print(f"  mix.{key:18s} {', '.join(values)}")
            continue
        print(f"  mix.{key}")
        for value in values:
            print(f"    {value:24s} {docs[key].get(value, '')}".rstrip())
    print("\nrecipes (recipe):")
    for name in recipes.RECIPES.names():
        print(f"  {name:22s} {recipes.RECIPES.help(name)}")
    print(f"\ndatasets (dataset): {', '.join(data.list_datasets())}")
    print(f"models (model):     {', '.join(models.list_models())}")
    from .spec.source_map import USER_FIELDS

    print("\nspec fields with a default (the README's sweep spec shows them all):")
    for name, field in spec.SweepSpec.model_fields.items():
        if name in USER_FIELDS and field.description and not field.is_required():
            default = field.get_default(call_default_factory=True)
            default = json.dumps(list(default) if isinstance(default, tuple) else default)
            print(f"  {name:22s} {field.description} (default {default})")
    return 0


def _cmd_preview(args: argparse.Namespace) -> int:
    presets = [p.strip() for p in args.presets.split(",")] if args.presets else None
    photos = [p.strip() for p in args.photos.split(",")] if args.photos else None
    kwargs = {"photos": photos} if photos else {}
    path = preview.render_preview(args.out, presets=presets, schemes=args.schemes, size=args.size, seed=args.seed,
                          target=args.target, lam=None if args.lam == "preset" else args.lam, **kwargs)
    print(path.resolve())
    return 0


def _cmd_fidelity(args: argparse.Namespace) -> int:
    presets = [p.strip() for p in args.presets.split(",")] if args.presets is not None else None
    if presets is not None and not all(presets):
        raise UserError(f"--presets {args.presets!r}: expected comma-separated preset names")
    table, files = fidelity.run_fidelity(presets=presets, sets=fidelity.parse_sets(args.set), dataset=args.dataset,
                                         pairs=args.pairs, batch_size=args.batch_size, seed=args.seed, out=args.out,
                                         png=args.png)
    print(table)
    for path in files:
        print(f"written: {path.resolve()}")
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    storage = resolve_storage(args.storage, create=False)
    if args.name:  # the sweep's saved views, on a reused or new UI
        return ui.serve_sweep(args.name, storage=storage, host=args.host, port=args.port, open_browser=args.open)
    uri = tracking.default_tracking_uri(storage)  # the storage folder's store (a sweep on a server: `ui NAME`)
    with suppress(Exception):  # a new store is created under its lock, not raced by the server and a driver
        tracking.client(uri)  # (a broken one is the UI's to report)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
           "--port", str(args.port)]
    print(f"MLflow UI on http://{args.host}:{args.port} (store {uri}); Ctrl+C to stop", file=sys.stderr)
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixsweep",
        description="Ablation and hyperparameter sweeps of saliency-guided mixing augmentation on Ray Tune + MLflow.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    storage_help = f"sweep storage folder (default: ./{DEFAULT_STORAGE})"

    p = sub.add_parser("run", help="run a sweep (skips trials that already finished)")
    p.add_argument("spec", help="a spec file (.yaml) or the name of a shipped spec (mixsweep list)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=storage_help)
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<storage>/mlflow.db)")
    p.add_argument("--address", help="Ray cluster, on one of its nodes: 'auto' or HEAD:6379 (default: a local Ray "
                                     "instance; from outside the cluster: mixsweep submit)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a base config key")
    p.add_argument("--dry-run", action="store_true", help="validate and list the trials, run nothing")
    p.add_argument("--retry-failed", action="store_true", help="run trials that failed (diverged) again")
    p.add_argument("--plain", action="store_true", help="plain progress lines on a terminal too, no live table "
                                                         "(also: MIXSWEEP_PLAIN=1)")
    p.set_defaults(func=_cmd_run)

    job_address = {"default": os.environ.get("MIXSWEEP_ADDRESS"),
                   "help": "the head's job server, http://HEAD:8265 (default: $MIXSWEEP_ADDRESS)"}
    p = sub.add_parser("submit", help="run a sweep's driver on a Ray cluster as a job (it outlives this machine)")
    p.add_argument("spec", nargs="?", help="a spec file (.yaml) or the name of a shipped spec")
    p.add_argument("--address", required=not job_address["default"], **job_address)
    p.add_argument("--storage", help="an absolute path that the head and the workers see (shared storage)")
    p.add_argument("--tracking-uri", help="MLflow server as the cluster reaches it (default: sqlite under --storage)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a base config key")
    p.add_argument("--resume", metavar="NAME", help="continue a stopped or killed sweep as a new job")
    p.add_argument("--python", help="the head's interpreter with mixsweep's dependencies (default: python on the "
                                    "head's PATH, else the one the head's Ray runs with; --resume: as first given)")
    p.add_argument("--no-wait", action="store_true", help="submit and return; follow later with mixsweep logs")
    p.add_argument("--stop-on-interrupt", action="store_true",
                   help="Ctrl+C stops the job too (default: ask on a terminal, else detach)")
    p.set_defaults(func=_cmd_submit)

    p = sub.add_parser("jobs", help="the mixsweep jobs on a Ray cluster")
    p.add_argument("--address", required=not job_address["default"], **job_address)
    p.set_defaults(func=_cmd_jobs)

    p = sub.add_parser("logs", help="follow a job's logs (a job id, or a sweep name: its newest job)")
    p.add_argument("name")
    p.add_argument("--address", required=not job_address["default"], **job_address)
    p.add_argument("--no-follow", action="store_true", help="print what is there and return")
    p.set_defaults(func=_cmd_logs)

    p = sub.add_parser("stop", help="stop a job gracefully (trials keep their checkpoints, runs KILLED)")
    p.add_argument("name")
    p.add_argument("--address", required=not job_address["default"], **job_address)
    p.set_defaults(func=_cmd_stop)

    p = sub.add_parser("resume", help="continue an interrupted sweep")
    p.add_argument("name")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=storage_help)
    p.add_argument("--address", help="Ray cluster to resume on (default: as launched)")
    p.add_argument("--retry-failed", action="store_true", help="run trials that failed (diverged) again")
    p.add_argument("--plain", action="store_true", help="plain progress lines on a terminal too, no live table "
                                                         "(also: MIXSWEEP_PLAIN=1)")
    p.set_defaults(func=_cmd_resume)

    p = sub.add_parser("status", help="the trials of a sweep and their state")
    p.add_argument("name")
    p.add_argument("--address", help="a submitted sweep: also show its job on this job server (http://HEAD:8265)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=storage_help)
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("report", help="statistics over seeds: table, figure, CSV (logged on the sweep run)")
    p.add_argument("name")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=storage_help)
    p.add_argument("--out", help="output folder (default: <storage>/<name>/report)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("sync", help="back-fill MLflow from the trials' results (after a tracking outage)")
    p.add_argument("name")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=storage_help)
    p.set_defaults(func=_cmd_sync)

    p = sub.add_parser("validate", help="check a spec and count its trials")
    p.add_argument("spec")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("list", help="specs, presets, factor values, recipes, datasets, models")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("preview", help="render what each preset does to real photos (PNG)")
    p.add_argument("--out", default="mixsweep_preview.png", help="PNG path (default: %(default)s)")
    p.add_argument("--presets", help="comma-separated presets (default: all that mix)")
    p.add_argument("--schemes", action="store_true", help="add one row per SaliencyMix selection scheme")
    p.add_argument("--photos", help="comma-separated scikit-image photos (default: cat, coffee, astronaut, ...)")
    p.add_argument("--size", type=int, default=128, help="photo side in pixels (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", type=int, default=0, help="index of the photo shown as target (default: 0, the cat)")
    p.add_argument("--lam", default="fixed(0.6)",
                   help="lam for presets that draw one, or 'preset' to keep their distribution (default: %(default)s)")
    p.set_defaults(func=_cmd_preview)

    p = sub.add_parser("fidelity", help="label fidelity of each preset / factor value, measured without training")
    p.add_argument("--presets", help="comma-separated presets (default: every preset that mixes, except the "
                                     "gradient-saliency ones, which need a trained model)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=V1,V2",
                   help="a mix.* or data.* key; several values give one row each (e.g. "
                        "--set mix.selection=random,salient_to_corresponding)")
    p.add_argument("--dataset", default="synthetic_salient", help="a dataset with object masks (default: %(default)s)")
    p.add_argument("--pairs", type=int, default=4096, help="mixed samples per row (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=128, help="images per mixed batch (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", help="folder for fidelity.png and fidelity.csv")
    where.add_argument("--png", help="PNG path (default: mixsweep_fidelity.png)")
    p.set_defaults(func=_cmd_fidelity)

    p = sub.add_parser("ui", help="the MLflow UI on a sweep's store, bound to 127.0.0.1")
    p.add_argument("name", nargs="?", help="a sweep (default: the storage's default store)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=storage_help)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--open", action="store_true", help="open the sweep's first view in a browser")
    p.set_defaults(func=_cmd_ui)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    apply_http_defaults()  # once per process, here at its entry (MLflow reads them per request)
    # MLflow writes "🏃 View run ... at: URL" to stdout when a run on a server ends: mixsweep prints its own links
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at the interpreter's exit
        return code
    except BrokenPipeError:  # `mixsweep ... | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing more to flush at exit
        return 141  # 128 + SIGPIPE, as a shell reports a writer killed by the closed pipe
    except UserError as exc:
        print(f"mixsweep {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"mixsweep {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

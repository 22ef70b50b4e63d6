"""The driver of a `mixsweep submit` job, run on the cluster's head: `python -m orchestrator.job_driver run|resume`.

It reads what `orchestrator.jobs.submit` put in the job's environment (the resolved spec, the absolute
storage and tracking URI, the job id) and runs `mixsweep run` / `resume` with them, on the cluster the
job belongs to (Ray sets RAY_ADDRESS for it). Its cwd is the job's unpacked working_dir.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from .jobs import ENV_NAME, ENV_SPEC, ENV_STORAGE, ENV_TRACKING


def main(argv: list[str]) -> int:
    from .cli import main as cli_main

    command = argv[0] if argv else "run"
    storage, uri = os.environ[ENV_STORAGE], os.environ[ENV_TRACKING]
    if command == "resume":
        return cli_main(["resume", os.environ[ENV_NAME], "--storage", storage])
    with tempfile.TemporaryDirectory(prefix="mixsweep-job-") as folder:  # the spec lives on in storage (spec.yaml)
        spec = Path(folder) / f"{os.environ[ENV_NAME]}.yaml"
        spec.write_text(os.environ[ENV_SPEC])
        return cli_main(["run", str(spec), "--storage", storage, "--tracking-uri", uri])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

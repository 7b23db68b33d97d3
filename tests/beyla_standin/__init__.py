"""Install and steer the Beyla stand-in (`standin.py`) for tests, and for the lead's end-to-end tests.

    from tests.beyla_standin import install_standin, runs
    beyla = install_standin(tmp_path / "bin", {"ports": {"50051": "grpc"}})   # root-owned 0755
    settings = BeylaSettings(binary=beyla, state_dir=tmp_path / "state", ...)
    supervisor = BeylaSupervisor(settings, otlp_endpoint="http://127.0.0.1:4318", services=[...])

The control file `standin.json`, next to the installed `beyla`, is read at every start (the agent
gives Beyla a clean environment, so environment variables cannot steer it). Keys:

    version            "v3.35.0"   what the version line says (the dialect follows it)
    fail               kernel_too_old | no_btf | capabilities | wrong_configuration | memlock |
                       runtime | port_in_use    exit 255 with Beyla's ERROR line
    fail_times         fail only on the first N starts
    reject_ports       [9999]      exit 255 (wrong Beyla configuration) if a selector names one
    crash              {"times": N, "after": 0.0, "exit_code": 2}  Go-style panic on the first N starts
    watcher_failure    true        log "Unable to load eBPF watcher for process events", keep running
    hang_on_sigterm    true        ignore SIGTERM (only SIGKILL stops it)
    health_fail_after  seconds     /healthz answers 503 from then on
    exit_after         seconds     exit with `exit_code` (default 0) after that long
    ports              {"50051": "grpc", "5432": "sql"}   protocol per port (default http)
    request_interval   0.2         seconds between fake requests per port
    export             true        export OTLP at all
    tracer_after       0.0         seconds from `instrumenting process` to `Launching p.Tracer`
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

STANDIN_DIR = Path(__file__).resolve().parent
REPO = STANDIN_DIR.parents[1]
SCHEMA = REPO / "beyla" / "config-schema-v3.31.0.json"
CONTROL_FILE = "standin.json"
RUNS_FILE = "standin-runs.jsonl"


def install_standin(directory: Path, control: dict[str, Any] | None = None, name: str = "beyla") -> Path:
    """Put an executable stand-in at `directory/name`, root-owned 0755 like a real install (needs root)."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chown(directory, 0, 0)
    os.chmod(directory, 0o755)
    script = directory / name
    script.write_text(
        f"#!{sys.executable} -I\n"
        "# Beyla stand-in for coral-ebpf tests (tests/beyla_standin/standin.py)\n"
        "import sys\n"
        f"sys.path.insert(0, {str(STANDIN_DIR)!r})\n"
        "from standin import main\n"
        f"main({str(SCHEMA)!r})\n",
        encoding="utf-8",
    )
    os.chown(script, 0, 0)
    os.chmod(script, 0o755)
    write_control(directory, control or {})
    return script


def write_control(directory: Path, control: dict[str, Any]) -> None:
    path = directory / CONTROL_FILE
    path.write_text(json.dumps(control), encoding="utf-8")
    os.chmod(path, 0o644)


def signals_ready(directory: Path) -> set[int]:
    """Pids of stand-ins that have installed their signal handlers (after which hang_on_sigterm holds)."""
    path = directory / "standin-signals-ready"
    if not path.exists():
        return set()
    return {int(line) for line in path.read_text(encoding="utf-8").split()}


def runs(directory: Path) -> list[dict[str, Any]]:
    """One record per start: pid, pgid, argv, config, env, rlimit_as, cgroup, netns, caps, at."""
    path = directory / RUNS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

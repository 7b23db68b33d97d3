"""A Beyla stand-in: behaves like Grafana Beyla at the interfaces the agent uses.

- Command line: `-config PATH`, `--config PATH`, `-config=PATH`, `--config=PATH`; BEYLA_CONFIG_PATH wins.
- Start-up order and log lines as in Beyla's cmd/beyla/main.go: a text (slog) bootstrap logger,
  OS checks, config load and validation, then the configured log format (BEYLA_LOG_FORMAT or
  `log_format`), the `Grafana Beyla` version line, the capability check (`enforce_sys_caps`),
  `/healthz` on `health_check.port`, `instrumenting process` per discovered executable (not per
  process, as Beyla does), then `Launching p.Tracer`.
- It validates the YAML against Beyla's JSON Schema (with coral-ebpf's IntEnum erratum) and is
  stricter than Beyla: an unknown key is a `wrong configuration` error, so renderer typos show.
- It exports OTLP metrics and traces with the OpenTelemetry SDK, to the configured endpoint,
  protocol and interval, with Beyla's metric names, units, attributes and buckets, for fake
  requests to the instrumented ports.
- Fatal errors exit 255 after Beyla's own ERROR line.

Behaviour is chosen by `standin.json` next to the installed executable (see __init__.py).
Each start appends a JSON line to `standin-runs.jsonl` (argv, environment, limits, cgroup).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import resource
import signal
import sys
import threading
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FATAL = 255
CAP_SYS_ADMIN = 21
CAP_BPF = 39
EXPORTER_MISSING = (
    "you need to define at least one exporter: trace_printer, grafana, otel_metrics_export, otel_traces_export "
    "or prometheus_export"
)
DISCOVERY_MISSING = "missing application discovery section or network metrics configuration"
FAILURES = {
    "kernel_too_old": ("can't start Beyla", "kernel version 4.14 not supported. Minimum required version is 5.8"),
    "no_btf": (
        "can't start Beyla",
        "kernel does not support BTF (CONFIG_DEBUG_INFO_BTF): no vmlinux BTF found",
    ),
    "capabilities": (
        "can't start Beyla",
        "the following capabilities are required: CAP_DAC_READ_SEARCH, CAP_NET_RAW, CAP_PERFMON, CAP_SYS_PTRACE, "
        "CAP_BPF, CAP_CHECKPOINT_RESTORE",
    ),
    "wrong_configuration": ("wrong Beyla configuration", EXPORTER_MISSING),
    "memlock": (
        "Beyla ran with errors",
        "can't instantiate instrumentation: loading and assigning BPF objects: field BeylaKprobeTcpConnect: "
        "program beyla_kprobe_tcp_connect: map watch_events: create map: operation not permitted "
        "(MEMLOCK may be too low, consider rlimit.RemoveMemlock)",
    ),
    "runtime": ("Beyla ran with errors", "can't start instrumentation pipeline: context deadline exceeded"),
}
PRE_CONFIG_FAILURES = ("kernel_too_old", "no_btf")


class Logger:
    """Go slog's text and JSON handlers, on stdout."""

    def __init__(self) -> None:
        self.json = False
        self.lock = threading.Lock()

    @staticmethod
    def _now() -> str:
        now = datetime.now(UTC)
        return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"

    @staticmethod
    def _text_value(value: Any) -> str:
        text = str(value)
        if text == "" or any(c in text for c in ' ="\\\n\t') or not text.isprintable():
            return json.dumps(text)
        return text

    def log(self, level: str, message: str, **fields: Any) -> None:
        if self.json:
            record = {"time": self._now(), "level": level, "msg": message, **fields}
            line = json.dumps(record)
        else:
            pairs = [f"time={self._now()}", f"level={level}", f"msg={self._text_value(message)}"]
            for key, value in fields.items():
                rendered_key = json.dumps(key) if " " in key else key
                pairs.append(f"{rendered_key}={self._text_value(value)}")
            line = " ".join(pairs)
        with self.lock:
            try:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
            except BrokenPipeError:
                # Nobody reads our log any more (the agent died): a Go program dies of SIGPIPE here.
                os._exit(128 + signal.SIGPIPE)

    def info(self, message: str, **fields: Any) -> None:
        self.log("INFO", message, **fields)

    def warn(self, message: str, **fields: Any) -> None:
        self.log("WARN", message, **fields)

    def error(self, message: str, **fields: Any) -> None:
        self.log("ERROR", message, **fields)


def version_tuple(text: str) -> tuple[int, int, int]:
    parts = text.lstrip("v").split("-")[0].split(".")
    return (int(parts[0]), int(parts[1]), int(parts[2]))


def config_path(argv: list[str]) -> str | None:
    path = None
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg in ("-config", "--config") and index + 1 < len(argv):
            path = argv[index + 1]
            index += 2
            continue
        for prefix in ("-config=", "--config="):
            if arg.startswith(prefix):
                path = arg[len(prefix) :]
        index += 1
    return os.environ.get("BEYLA_CONFIG_PATH") or path


def effective_caps() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def _close(node: Any) -> None:
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _close(value)
    elif isinstance(node, list):
        for value in node:
            _close(value)


def schema_problems(document: Any, schema_path: str) -> list[str]:
    from jsonschema import Draft202012Validator

    schema = json.loads(Path(schema_path).read_text())
    schema = copy.deepcopy(schema)
    # The one erratum: Beyla's IntEnum YAML unmarshaller reads a port number or "80,443,8000-8999".
    schema["$defs"]["IntEnum"] = {"anyOf": [{"type": "integer"}, {"$ref": "#/$defs/IntRange"}]}
    _close(schema)  # stricter than Beyla, which ignores unknown keys
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(top level)'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def selectors(config: dict[str, Any]) -> list[dict[str, Any]]:
    found = list((config.get("discovery") or {}).get("instrument") or [])
    if config.get("open_port") is not None:
        found.append({"open_ports": str(config["open_port"])})
    return found


def parse_ports(text: Any) -> list[int]:
    ports: list[int] = []
    for part in str(text).split(","):
        low, _, high = part.strip().partition("-")
        ports.extend(range(int(low), int(high) + 1) if high else [int(low)])
    return ports


def find_targets(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The listening processes the instrument selectors match (ports AND exe_path), like Beyla's discovery."""
    import fnmatch

    import psutil

    listeners: dict[int, int] = {}
    for connection in psutil.net_connections(kind="tcp"):
        address = connection.laddr  # an (ip, port) named tuple, or () for sockets without one
        if connection.status == psutil.CONN_LISTEN and connection.pid and address:
            listeners.setdefault(address[1], connection.pid)
    targets: dict[int, dict[str, Any]] = {}
    for selector in selectors(config):
        ports = parse_ports(selector["open_ports"]) if "open_ports" in selector else []
        for port in ports:
            pid = listeners.get(port)
            if pid is None or pid == os.getpid():
                continue
            try:
                process = psutil.Process(pid)
                exe = process.exe()
                environ = process.environ()
            except psutil.Error:
                continue
            if "exe_path" in selector and not fnmatch.fnmatchcase(exe, selector["exe_path"]):
                continue
            target = targets.setdefault(
                pid,
                {
                    "pid": pid,
                    "exe": exe,
                    "ports": [],
                    "service": environ.get("OTEL_SERVICE_NAME") or os.path.basename(exe),
                },
            )
            target["ports"].append(port)
    return list(targets.values())


SIGNALS_READY_FILE = "standin-signals-ready"


def record_run(here: Path, argv: list[str], config_file: str | None) -> int:
    runs = here / "standin-runs.jsonl"
    starts = 1
    if runs.exists():
        starts += sum(1 for _ in runs.open())
    limit_as = resource.getrlimit(resource.RLIMIT_AS)[0]
    entry = {
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "argv": argv,
        "config": config_file,
        "env": dict(os.environ),
        "rlimit_as": None if limit_as == resource.RLIM_INFINITY else limit_as,
        "cgroup": Path("/proc/self/cgroup").read_text(),
        "netns": os.stat("/proc/self/ns/net").st_ino,
        "caps": effective_caps(),
        "at": time.time(),
    }
    with runs.open("a") as handle:
        handle.write(json.dumps(entry) + "\n")
    return starts


class HealthServer(threading.Thread):
    def __init__(self, port: int, address: str, started: float, control: dict[str, Any], log: Logger) -> None:
        super().__init__(daemon=True)
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        fail_after = control.get("health_fail_after")

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/healthz":
                    self.send_error(404)
                    return
                now = time.time_ns()
                if fail_after is not None and time.monotonic() - started >= float(fail_after):
                    self.send_response(503)
                    self.end_headers()
                    return
                uptime_ns = int((time.monotonic() - started) * 1e9)
                body = json.dumps({"schema_version": 1, "now_unix_ns": now, "process_uptime_ns": uptime_ns}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((address, port), Handler)

    def run(self) -> None:
        self.server.serve_forever(poll_interval=0.1)


def fatal(log: Logger, message: str, error: str) -> None:
    log.error(message, error=error)
    sys.stdout.flush()
    os._exit(FATAL)


def main(schema_path: str) -> None:
    """Run the stand-in and end the process with os._exit, whatever happens: like a Go program, it
    never waits in interpreter shutdown for a thread (an exporter, /healthz) or an atexit handler.
    An unexpected exception prints its traceback and exits 1, as Python would."""
    # Until its handlers are installed, SIGINT ends it like SIGTERM (the default action), not as a
    # KeyboardInterrupt raised somewhere in the start-up; an inherited SIG_IGN stays, as in Go.
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        status = run(schema_path)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    except BaseException:
        status = 1
        with contextlib.suppress(BaseException):
            traceback.print_exc()
            sys.stderr.flush()
    # With the agent gone (SIGKILL, then the parent-death SIGTERM) stdout is a pipe nobody reads:
    # Go's runtime dies of SIGPIPE there; the stand-in exits all the same.
    with contextlib.suppress(BaseException):
        sys.stdout.flush()
    os._exit(status)


def run(schema_path: str) -> int:
    """The stand-in's life; returns its exit status (fatal errors exit 255 at once, see `fatal`)."""
    here = Path(sys.argv[0]).resolve().parent
    started = time.monotonic()
    control_file = here / "standin.json"
    control: dict[str, Any] = json.loads(control_file.read_text()) if control_file.exists() else {}
    version = control.get("version", "v3.35.0")
    log = Logger()
    argv = sys.argv[1:]
    config_file = config_path(argv)
    starts = record_run(here, argv, config_file)
    fail = control.get("fail")
    if fail and starts > int(control.get("fail_times", 1_000_000)):
        fail = None
    version_first = control.get("version_line_first", version_tuple(version) < (3, 30, 0))

    def version_line() -> None:
        log.info("Grafana Beyla", Version=version, Revision="f00dcafe", **{"OpenTelemetry SDK Version": "1.38.0"})

    if version_first:
        version_line()
    if fail in PRE_CONFIG_FAILURES:
        fatal(log, *FAILURES[fail])

    import yaml

    config: dict[str, Any] = {}
    if config_file:
        try:
            text = Path(config_file).read_text()
        except OSError as exc:
            fatal(log, f"can't open {config_file}", f"open {config_file}: {(exc.strerror or str(exc)).lower()}")
        try:
            config = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            fatal(log, "wrong configuration", f"yaml: {exc}")
        problems = schema_problems(config, schema_path)
        if problems:
            fatal(log, "wrong configuration", "stand-in schema check: " + "; ".join(problems))
    rejected = set(control.get("reject_ports", ()))
    if rejected and any(rejected & set(parse_ports(s.get("open_ports", "0"))) for s in selectors(config)):
        fatal(log, "wrong Beyla configuration", "discovery.instrument: port rejected by the stand-in's control file")
    # coral-ebpf's version probe config is valid: a configuration failure does not apply to it.
    probe = config.get("enforce_sys_caps") is True and config.get("open_port") == 1
    if fail == "wrong_configuration" and not probe:
        fatal(log, *FAILURES[fail])
    metrics_cfg = config.get("otel_metrics_export") or {}
    traces_cfg = config.get("otel_traces_export") or {}
    if not (metrics_cfg.get("endpoint") or traces_cfg.get("endpoint") or config.get("trace_printer")):
        fatal(log, "wrong Beyla configuration", EXPORTER_MISSING)
    if not selectors(config) and not (config.get("network") or {}).get("enable"):
        fatal(log, "wrong Beyla configuration", DISCOVERY_MISSING)
    level = str(config.get("log_level", "INFO")).upper()
    if level not in ("DEBUG", "INFO", "WARN", "ERROR"):
        fatal(log, "unknown log level specified, choices are [DEBUG, INFO, WARN, ERROR]", f"slog: level {level!r}")
    log.json = (os.environ.get("BEYLA_LOG_FORMAT") or config.get("log_format") or "text").lower() == "json"
    if not version_first:
        version_line()
    log.info("configuration loaded", version="v1")

    caps = effective_caps()
    missing = not (caps >> CAP_SYS_ADMIN & 1 or caps >> CAP_BPF & 1)
    if fail == "capabilities" or (missing and config.get("enforce_sys_caps")):
        fatal(log, *FAILURES["capabilities"])
    if missing:
        log.warn("Required system capabilities not present, Beyla may malfunction", error=FAILURES["capabilities"][1])

    health_cfg = config.get("health_check") or {}
    if health_cfg.get("port"):
        address = health_cfg.get("listen_address", "127.0.0.1")
        try:
            HealthServer(int(health_cfg["port"]), address, started, control, log).start()
        except OSError as exc:
            where = f"{address}:{health_cfg['port']}"
            fatal(
                log,
                "Beyla ran with errors",
                f"starting health check server: listen tcp {where}: bind: {(exc.strerror or str(exc)).lower()}",
            )
    if fail == "port_in_use":
        fatal(
            log,
            "Beyla ran with errors",
            "starting health check server: listen tcp 127.0.0.1:6061: bind: address already in use",
        )
    if fail in ("memlock", "runtime"):
        fatal(log, *FAILURES[fail])

    # The handler only appends to a list: it takes no lock. Python runs it on the main thread between
    # two bytecodes of whatever that thread is doing, and runs it again, nested, for a signal that
    # arrives meanwhile. A handler calling threading.Event.set() (which takes the Event's
    # non-reentrant lock) deadlocked the stand-in for good: the agent's SIGKILL sends one
    # parent-death SIGTERM per exiting agent thread (the kernel re-parents Beyla to each in turn),
    # and a second SIGTERM inside the first handler's Event.set() waited for its own lock; so did
    # every later SIGTERM, and /healthz kept answering.
    stop_signals: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        if control.get("hang_on_sigterm"):
            return  # a Beyla stuck in shutdown: only SIGKILL ends it
        stop_signals.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Tests that kill the agent wait for this line: before it, a SIGTERM still has its default effect.
    with (here / SIGNALS_READY_FILE).open("a", encoding="utf-8") as ready:
        ready.write(f"{os.getpid()}\n")

    targets: list[dict[str, Any]] = []
    if control.get("watcher_failure"):
        log.error(
            "Unable to load eBPF watcher for process events",
            component="discover.ProcessWatcher",
            interval="5s",
            error="loading and assigning BPF objects: field BeylaKprobeSysBind: program beyla_kprobe_sys_bind: "
            "attaching kprobe sys_bind: creating perf_kprobe PMU: token __x64_sys_bind: not supported",
        )
    else:
        targets = find_targets(config)
        logged: set[str] = set()
        for target in targets:
            if target["exe"] in logged:
                continue  # like Beyla: one line per executable, though it traces every process of it
            logged.add(target["exe"])
            log.info(
                "instrumenting process",
                component="discover.traceAttacher",
                cmd=target["exe"],
                pid=target["pid"],
                type="generic",
                service=target["service"],
            )

    crash = control.get("crash")
    if crash and starts <= int(crash.get("times", 1_000_000)):
        time.sleep(float(crash.get("after", 0.0)))
        with contextlib.suppress(OSError):  # the exit code is the crash, whoever reads stderr
            sys.stderr.write(
                "panic: runtime error: invalid memory address or nil pointer dereference\n"
                "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x1a2b3c4]\n\n"
                "goroutine 1 [running]:\ngithub.com/grafana/beyla/v3/pkg/components.RunBeyla(...)\n"
            )
            sys.stderr.flush()
        return int(crash.get("exit_code", 2))

    if targets:  # Beyla's tracer goes live some seconds after it instruments (15-20 s under TCG)
        tracer = threading.Timer(float(control.get("tracer_after", 0.0)), log.info, ("Launching p.Tracer",))
        tracer.daemon = True
        tracer.start()

    telemetry = None
    if targets and control.get("export", True):
        from telemetry import FakeTelemetry  # type: ignore[import-not-found]  # beside this script, not a package

        telemetry = FakeTelemetry(config, targets, version, control)
        telemetry.start()
    exit_after = control.get("exit_after")
    while not stop_signals:
        if exit_after is not None and time.monotonic() - started >= float(exit_after):
            return int(control.get("exit_code", 0))  # at once, without flushing telemetry
        time.sleep(0.1)  # the handler runs during the sleep, which then ends as planned
    # Like Beyla: flush what is buffered, but give up after shutdown_timeout (default 10s). The
    # flush runs on a daemon thread and the exit does not wait for it beyond that.
    if telemetry is not None:
        flusher = threading.Thread(target=telemetry.shutdown, name="otel-shutdown", daemon=True)
        flusher.start()
        flusher.join(timeout=_seconds(str(config.get("shutdown_timeout", "10s"))))
    return 0


def _seconds(text: str) -> float:
    if text.endswith("ms"):
        return float(text[:-2]) / 1000
    if text.endswith("m"):
        return float(text[:-1]) * 60
    return float(text.rstrip("s"))


if __name__ == "__main__":
    main(os.environ.get("STANDIN_SCHEMA", ""))

"""Service names read from what a process already says about itself: its systemd unit and its command line.

Pure functions over strings (the cgroup path, argv), so each rule is tested without a process.
The command-line rule exists because interpreters and runtimes hide the application: every
Python app's executable is `python3.11`, every JVM's `java`. The name is the application's
entry point as a person would say it: the script without `.py`, the `-m` module, the ASGI/WSGI
`package.module` (from `package.module:app`), the jar without its version, the main class.
"""

from __future__ import annotations

import os
import re

# Generic entry-point file names: the directory holding them names the application better.
_GENERIC_STEMS = frozenset({"__main__", "index"})
# Python launchers whose argument `module:attribute` is the application (uvicorn, gunicorn, ...).
_PYTHON_APP_RUNNERS = frozenset({"uvicorn", "gunicorn", "hypercorn", "daphne", "granian", "waitress-serve"})
_PYTHON_OPTIONS_WITH_VALUE = frozenset({"-W", "-X", "--check-hash-based-pycs"})
_NODE_OPTIONS_WITH_VALUE = frozenset({"-r", "--require", "--import", "--loader", "--experimental-loader", "--title"})
_JAVA_OPTIONS_WITH_VALUE = frozenset(
    {"-cp", "-classpath", "--class-path", "-p", "--module-path", "--add-modules", "--add-opens", "--add-exports"}
)
_APP_SPEC = re.compile(r"^([A-Za-z_][\w.]*):[A-Za-z_][\w.()]*$")  # package.module:app (or :create_app())
_JAR_VERSION = re.compile(r"-v?\d[\w.+-]*$")  # app-1.4.2-SNAPSHOT -> app
# A process that rewrote its title (setproctitle): gunicorn's `gunicorn: worker [shop.wsgi:app]`,
# puma's `puma 6.4.0 (tcp://0.0.0.0:3000) [shop]`.
_TITLE_NAME = re.compile(r"\[([^\[\]\s]+)\]\s*$")
_SERVICE_UNIT = re.compile(r"^(?P<name>[^/@]+?)(?:@(?P<instance>[^/]*))?\.service$")
_USER_MANAGER = re.compile(r"^user@\d+\.service$")


def systemd_unit(cgroup: str) -> str | None:
    """The systemd service unit a cgroup path belongs to (`/system.slice/nginx.service` -> `nginx.service`).

    The deepest `.service` component wins, so a user's unit under `user@1000.service` is that
    unit; the per-user manager itself (`user@<uid>.service`) is not an application. Scopes
    (login sessions, container runtimes' `docker-<id>.scope`) are not units a person names.
    """
    for part in reversed([part for part in cgroup.split("/") if part]):
        if part.endswith(".service") and not _USER_MANAGER.match(part):
            return part
    return None


# Units that start what a person or a scheduler runs, not an application of their own: a process
# in `ssh.service` is a command typed in an SSH session where no login session was registered
# (no pam_systemd), one in `cron.service` a job. Naming it after the unit would call every such
# process "ssh"; the command line names it instead.
_LAUNCHER_UNITS = frozenset(
    {
        "ssh",
        "sshd",
        "dropbear",
        "cron",
        "crond",
        "anacron",
        "atd",
        "getty",
        "serial-getty",
        "console-getty",
        "container-getty",
        "login",
        "sudo",
        "su",
        "screen",
        "tmux",
    }
)


def names_an_application(unit: str) -> bool:
    """Whether the processes of `unit` are its own application (not a launcher's children, not systemd's)."""
    name = unit_service_name(unit)
    return name not in _LAUNCHER_UNITS and not name.startswith("systemd-")


def unit_service_name(unit: str) -> str:
    """`nginx.service` -> `nginx`; a template instance `worker@3.service` -> `worker`."""
    match = _SERVICE_UNIT.match(unit)
    return match.group("name") if match else unit.removesuffix(".service")


def _stem(path: str) -> str:
    """A file's name without directory and extension; a generic file (`index.js`) is named by its directory."""
    base = os.path.basename(path.rstrip("/"))
    stem, _ext = os.path.splitext(base)
    if stem in _GENERIC_STEMS:
        parent = os.path.basename(os.path.dirname(path))
        if parent and parent not in (".", "..", "src", "bin", "lib", "dist", "build"):
            return parent
    return stem or base


def _runtime(exe: str, argv0: str) -> str:
    """The runtime family from the executable (or argv[0]): python3.11 -> python, nodejs -> node."""
    for candidate in (os.path.basename(exe), os.path.basename(argv0)):
        lowered = candidate.lower()
        for family in ("python", "pypy", "node", "bun", "deno", "java", "ruby", "php", "dotnet", "perl"):
            if lowered.startswith(family):
                return "python" if family == "pypy" else family
    return ""


def _positionals(args: list[str], with_value: frozenset[str]) -> list[str]:
    """Arguments after the runtime's own options (an option in `with_value` takes the next argument)."""
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            return args[index + 1 :]
        if not arg.startswith("-") or arg == "-":
            return args[index:]
        index += 2 if arg in with_value else 1
    return []


def _python_app(args: list[str]) -> str | None:
    """`module:app` among a runner's arguments, as `module` (the first such argument)."""
    for arg in args:
        match = _APP_SPEC.match(arg)
        if match:
            return match.group(1)
    return None


def _python(args: list[str]) -> str | None:
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "-c":
            return None  # code on the command line: nothing names it
        if arg == "-m" or (arg.startswith("-m") and len(arg) > 2 and not arg.startswith("--")):
            module = args[index + 1] if arg == "-m" and index + 1 < len(args) else arg[2:]
            if not module:
                return None
            if module in _PYTHON_APP_RUNNERS:
                return _python_app(args[index + 2 :]) or module
            return module
        if not arg.startswith("-"):
            script = os.path.basename(arg)
            if script in _PYTHON_APP_RUNNERS:  # a console script run through the interpreter
                return _python_app(args[index + 1 :]) or script
            return _stem(arg)
        index += 2 if arg in _PYTHON_OPTIONS_WITH_VALUE else 1
    return None


def _java(args: list[str]) -> str | None:
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "-jar" and index + 1 < len(args):
            return _JAR_VERSION.sub("", _stem(args[index + 1])) or _stem(args[index + 1])
        if arg in ("-m", "--module") and index + 1 < len(args):
            module, _, main_class = args[index + 1].partition("/")
            return main_class or module
        if not arg.startswith("-"):
            # A single source file (`java Payments.java`), else the main class, fully qualified.
            return _stem(arg) if arg.endswith(".java") else arg
        index += 2 if arg in _JAVA_OPTIONS_WITH_VALUE else 1
    return None


def _script(args: list[str], with_value: frozenset[str] = frozenset()) -> str | None:
    positionals = _positionals(args, with_value)
    return _stem(positionals[0]) if positionals else None


def _title_name(title: str) -> str | None:
    """The `[...]` a rewritten process title ends with: `module:app` as `module`, else as it is."""
    match = _TITLE_NAME.search(title)
    if match is None:
        return None
    app = _APP_SPEC.match(match.group(1))
    return app.group(1) if app else match.group(1)


def command_line_name(exe: str, cmdline: tuple[str, ...]) -> str | None:
    """The application named by an interpreter's or runtime's command line; None for anything else."""
    if not cmdline:
        return None
    runtime = _runtime(exe, cmdline[0])
    if len(cmdline) == 1 and " " in cmdline[0] and runtime in ("python", "ruby"):
        return _title_name(cmdline[0])
    args = list(cmdline[1:])
    if runtime == "python":
        return _python(args)
    if runtime == "java":
        return _java(args)
    if runtime in ("node", "bun", "deno"):
        positionals = _positionals(args, _NODE_OPTIONS_WITH_VALUE)
        if positionals and positionals[0] in ("run", "start", "serve") and len(positionals) > 1:
            positionals = positionals[1:]  # bun run x.ts, deno run x.ts
        return _stem(positionals[0]) if positionals else None
    if runtime == "dotnet":
        positionals = _positionals(args, frozenset())
        if positionals and positionals[0].endswith(".dll"):
            return _stem(positionals[0])
        return None
    if runtime in ("ruby", "php", "perl"):
        return _script(args, frozenset({"-r", "-I", "-c", "-d", "-S"} if runtime == "php" else {"-I", "-r"}))
    return None

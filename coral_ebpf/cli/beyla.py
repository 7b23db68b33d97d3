"""`coral-ebpf beyla install|version|config`: the Beyla binary and the config the agent gives it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from coral_ebpf.cli._common import EXIT_OK, add_config_flag, add_json_flag, config_from_args, print_json, print_table


def _install(args: argparse.Namespace) -> int:
    from coral_ebpf.beyla import install as installer
    from coral_ebpf.beyla.version import VersionDetectionError, detect_version

    dest = Path(args.dest) if args.dest else None
    configured: Path | None = None
    if args.config is not None or dest is None:
        configured = config_from_args(args).beyla.binary
    if dest is None:
        # Where the config says Beyla is, so that the agent finds what was installed.
        dest = configured.parent if configured is not None else installer.DEFAULT_DEST
    result = installer.install(
        version=args.version,
        source_file=Path(args.source) if args.source else None,
        sha256=args.sha256,
        dest_dir=dest,
    )
    reported: str | None = None
    note = ""
    try:
        reported = detect_version(result.path).text
    except VersionDetectionError as exc:
        note = f"installed, but it did not report its version: {exc.message}"
    if reported and result.tag not in ("(unknown)", reported):
        note = f"the tarball was {result.tag} but the binary says {reported}"
    if configured is not None and configured != result.path:
        note = (note + "; " if note else "") + (
            f"beyla.binary in the config is {configured}, not {result.path}: point it at the installed binary"
        )
    summary: dict[str, Any] = {
        "path": str(result.path),
        "version": result.tag,
        "reports": reported,
        "asset": result.asset,
        "sha256": result.sha256,
        "checksum_from": result.checksum_source,
        "source": result.source,
        "note": note,
    }
    if args.json:
        print_json(summary)
    else:
        print(f"installed Beyla {result.tag} at {result.path} (sha256 {result.sha256}, from {result.source})")
        if note:
            print(f"note: {note}")
    return EXIT_OK


def _version(args: argparse.Namespace) -> int:
    from coral_ebpf.beyla.binary import resolve_binary
    from coral_ebpf.beyla.dialect import dialect_for
    from coral_ebpf.beyla.install import pinned_version
    from coral_ebpf.beyla.version import detect_version

    config = config_from_args(args)
    binary = resolve_binary(config.beyla.binary)
    work_dir = config.beyla.work_dir if os.geteuid() == 0 else None
    info = detect_version(binary.real_path, work_dir)
    dialect = dialect_for(info.version)
    summary = {
        "binary": str(binary.path),
        "real_path": str(binary.real_path),
        "found_by": binary.source,
        "version": info.text,
        "revision": info.revision,
        "dialect": dialect.name,
        "dialect_notes": dialect.description,
        "pinned": pinned_version(),
    }
    if args.json:
        print_json(summary)
    else:
        print_table(["field", "value"], list(summary.items()), title="Beyla")
    return EXIT_OK


def _config(args: argparse.Namespace) -> int:
    import yaml

    from coral_ebpf.beyla.binary import resolve_binary
    from coral_ebpf.beyla.dialect import BeylaVersion, dialect_for
    from coral_ebpf.beyla.install import pinned_version
    from coral_ebpf.beyla.render import RenderTarget, SelfExclusion, render
    from coral_ebpf.beyla.supervisor import CONFIG_FILE
    from coral_ebpf.beyla.target import agent_ports, otlp_endpoint_url
    from coral_ebpf.beyla.version import detect_version
    from coral_ebpf.discovery.model import Listener, ServiceEntry
    from coral_ebpf.errors import CoralError

    config = config_from_args(args)
    if args.current:
        path = config.beyla.work_dir / CONFIG_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CoralError(
                f"cannot read {path}: {exc.strerror}", "the agent writes it when it starts Beyla ('coral-ebpf start')"
            ) from exc
        if args.json:
            print_json({"path": str(path), "config": yaml.safe_load(text)})
        else:
            print(f"# {path}\n{text}", end="")
        return EXIT_OK
    notes: list[str] = []
    binary_path: Path | None = None
    try:
        binary = resolve_binary(config.beyla.binary)
        binary_path = binary.real_path
        version = detect_version(binary.real_path, config.beyla.work_dir if os.geteuid() == 0 else None).version
    except CoralError as exc:
        version = BeylaVersion.parse(pinned_version())
        notes.append(f"no usable Beyla binary ({exc.message}); showing the config for the pinned {version}")
    services = [
        ServiceEntry(pid=0, netns=0, name=f"port-{port}", exe="", cmdline=(), listeners=(Listener(port),))
        for port in args.port
    ]
    if not services and not config.beyla.instrument:
        notes.append("no --port given: discovery.instrument lists what discovery finds when the agent runs")
    ports = agent_ports(config.otlp)
    target = RenderTarget(
        otlp_endpoint_url(config.otlp, config.beyla),
        health_port=0,
        exclusion=SelfExclusion(agent_pids=(), agent_ports=ports, beyla_binary=binary_path),
    )
    dialect = dialect_for(version)
    rendered = render(config.beyla, services, target, dialect, version)
    if args.json:
        print_json({"version": str(version), "dialect": dialect.name, "notes": notes, "config": rendered.document})
    else:
        print(f"# Beyla {version}, dialect {dialect.name}: {dialect.description}")
        for note in notes:
            print(f"# note: {note}")
        if dialect.health_check:
            print("# health_check.port is chosen afresh (a free loopback port) on every start")
        print(rendered.text, end="")
    return EXIT_OK


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("beyla", help="install Beyla, show its version and the config the agent gives it")
    sub = parser.add_subparsers(dest="beyla_command", metavar="ACTION", parser_class=type(parser))
    sub.required = True

    install = sub.add_parser("install", help="download (or take --from) a Beyla release, verify it, install it")
    install.add_argument("--version", help="release tag, e.g. v3.35.0 (default: the pinned release)")
    install.add_argument("--from", dest="source", metavar="FILE", help="a release tarball already on disk")
    install.add_argument("--sha256", metavar="HEX", help="expected SHA-256, for a release the agent has no pin for")
    install.add_argument(
        "--dest",
        metavar="DIR",
        help="install directory (default: the directory of beyla.binary in the config, else /usr/local/bin)",
    )
    add_config_flag(install)
    add_json_flag(install)
    install.set_defaults(func=_install)

    version = sub.add_parser("version", help="find the Beyla binary and print its version and config dialect")
    add_config_flag(version)
    add_json_flag(version)
    version.set_defaults(func=_version)

    show = sub.add_parser("config", help="print the Beyla YAML the agent would generate")
    add_config_flag(show)
    add_json_flag(show)
    show.add_argument(
        "--port", type=int, action="append", default=[], metavar="N", help="preview with a service on port N"
    )
    show.add_argument("--current", action="store_true", help="print the file the running agent last wrote")
    show.set_defaults(func=_config)

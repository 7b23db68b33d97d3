"""`coral-ebpf probe`: what this kernel and these privileges allow, and what will and will not run.

Exit 0 when the probe could run its trials (whatever it found), 1 when it could not (not root);
it then still prints what it could read.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape

from coral_ebpf.capabilities.report import ProbeReport
from coral_ebpf.cli._common import (
    EXIT_FAILURE,
    EXIT_OK,
    add_config_flag,
    add_json_flag,
    config_from_args,
    print_error,
    print_json,
    print_table,
)


def _yes_no(value: bool) -> str:
    return "[green]yes[/green]" if value else "[red]no[/red]"


def _context_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_context_value(v)}" for k, v in value.items()) or "(none)"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "(none)"
    return "(none)" if value is None else str(value)


def print_report(report: ProbeReport) -> None:
    kernel = report.kernel
    print_table(
        ["feature", "available", "detail"],
        [(escape(name), _yes_no(f.available), escape(f.detail)) for name, f in report.features.items()],
        title=f"Kernel {escape(kernel.get('release', '?'))} ({escape(kernel.get('distribution', '?'))}): features",
    )
    print_table(
        ["component", "ok", "reason", "fix"],
        [(escape(name), _yes_no(v.ok), escape(v.reason), escape(v.fix)) for name, v in report.components.items()],
        title="Components",
    )
    context = {**{f"kernel.{k}": v for k, v in kernel.items()}, **report.context}
    print_table(
        ["context", "value"],
        [(escape(key), escape(_context_value(value))) for key, value in context.items()],
        title="Context (read, not tried)",
        footer=f"probe took {report.duration_ms:.0f} ms" + "".join(f"\nnote: {escape(n)}" for n in report.notes),
    )


def _run(args: argparse.Namespace) -> int:
    from coral_ebpf.capabilities.kernel_probe import probe  # the trials' imports: only `probe` pays

    config = config_from_args(args)
    report = probe(config.state_dir)
    if args.json:
        print_json(report.to_dict())
    else:
        print_report(report)
    if not report.complete:
        print_error(
            "could not probe everything: this needs root (bpf() was refused); "
            "the report shows what could be read without it. Run: sudo coral-ebpf probe"
        )
        return EXIT_FAILURE
    return EXIT_OK


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "probe",
        help="what this kernel allows: BPF features tried for real, and which components can run",
        description="Try each BPF feature the agent and Beyla need (program types, maps, helpers, attach "
        "points, BCC compile) and say which components can run here, why, and how to fix what cannot.",
    )
    add_config_flag(parser)
    add_json_flag(parser)
    parser.set_defaults(func=_run)

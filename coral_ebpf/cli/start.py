"""`coral-ebpf start`: run the agent in the foreground until SIGTERM or SIGINT (systemd-friendly)."""

from __future__ import annotations

import argparse
import logging
import os

from coral_ebpf.agent.lifecycle import StopSignal, prepare_state_dir, single_instance_lock
from coral_ebpf.agent.reload import ReloadSignal
from coral_ebpf.cli._common import EXIT_OK, add_config_flag, config_from_args
from coral_ebpf.logsetup import setup_logging

log = logging.getLogger("coral_ebpf.start")


def _run(args: argparse.Namespace) -> int:
    from coral_ebpf.agent.agent import Agent  # every part's imports: only `start` pays for them

    config = config_from_args(args)
    setup_logging(args.log_level or config.log_level, config.log_format)
    if os.geteuid() != 0:
        log.warning(
            "not running as root: the eBPF parts (discovery, RED engine, Beyla) stay off; "
            "the OTLP receiver and storage still run",
            extra={"fields": {"hint": "sudo coral-ebpf start"}},
        )
    prepare_state_dir(config.state_dir)
    stop = StopSignal()
    stop.install()
    reload = ReloadSignal()  # SIGHUP (systemctl reload): re-read the config, apply what can change live
    reload.install()
    with single_instance_lock(config.state_dir):
        Agent(config).run(stop, reload)
    return EXIT_OK


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "start",
        help="run the agent in the foreground (probe, storage, OTLP receiver, discovery, RED engine)",
        description=(
            "Run the agent in the foreground until SIGTERM or SIGINT. Logs structured lines on stderr. "
            "Run as root: the eBPF parts need it."
        ),
    )
    add_config_flag(parser)
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="override the config's log_level"
    )
    parser.set_defaults(func=_run)

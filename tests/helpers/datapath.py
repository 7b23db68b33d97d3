"""A real Storage + TransformProcessor on a temporary DuckDB file, for tests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from coral_ebpf.agent.config import AgentConfig, parse_config_text
from coral_ebpf.storage.writer import Storage
from coral_ebpf.transform.processor import TransformProcessor


def config_for(state_dir: Path, **storage: Any) -> AgentConfig:
    """Defaults, with state_dir and any `storage:` keys given (values as in YAML)."""
    lines = [f"state_dir: {state_dir}", "agent_id: test-agent"]
    if storage:
        lines.append("storage:")
        lines += [f"  {key}: {value}" for key, value in storage.items()]
    return parse_config_text("\n".join(lines) + "\n")


@contextlib.contextmanager
def data_path(
    state_dir: Path, *, wall_clock: Callable[[], float] | None = None, **storage: Any
) -> Iterator[tuple[Storage, TransformProcessor]]:
    config = config_for(state_dir, **storage)
    kwargs: dict[str, Any] = {} if wall_clock is None else {"wall_clock": wall_clock}
    store = Storage(config.storage, **kwargs)
    store.start()
    processor = TransformProcessor(store, agent_id=config.agent_id, retry_after=config.otlp.retry_after, **kwargs)
    processor.start()
    try:
        yield store, processor
    finally:
        processor.stop(5)
        store.stop(10)


def with_storage(config: AgentConfig, **changes: Any) -> AgentConfig:
    return replace(config, storage=replace(config.storage, **changes))

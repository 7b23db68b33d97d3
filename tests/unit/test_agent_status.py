"""The status document's shape before any part runs: every part, in start order, with the fields readers use."""

from __future__ import annotations

import json
from pathlib import Path

from coral_ebpf.agent.agent import Agent
from coral_ebpf.agent.config import parse_config_text
from coral_ebpf.agent.status import Part


def test_a_new_agent_reports_every_part_pending(tmp_path: Path) -> None:
    config = parse_config_text(f"state_dir: {tmp_path}\ncontrol:\n  socket: {tmp_path / 'c.sock'}\n")
    document = json.loads(json.dumps(Agent(config).status().to_json()))  # what the control socket sends
    assert list(document) == ["agent", *(part.value for part in Part)]
    assert document["agent"]["state_dir"] == str(tmp_path) and document["agent"]["red_engine"] == ""
    assert {"version", "pid", "agent_id", "started", "uptime_s", "config", "red_engine_reason"} <= set(
        document["agent"]
    )
    for part in Part:
        assert document[part]["state"] == "pending", part
    # Readers rely on these even for a Beyla that never ran.
    assert {key: document["beyla"][key] for key in ("restarts", "starts", "diagnosis", "pid", "services")} == {
        "restarts": 0,
        "starts": 0,
        "diagnosis": None,
        "pid": None,
        "services": 0,
    }
    assert document["red"]["engine"] == ""

"""How long the agent takes to render and validate Beyla's YAML for a discovery change.

Every discovery change re-renders the whole config and validates it against Beyla's JSON Schema
before deciding whether Beyla must restart, so this is the agent-side cost of one change.
Run: .venv/bin/python bench/beyla_render.py   (last line: the figure)
"""

from __future__ import annotations

import statistics
import time

from coral_ebpf.beyla.render import RenderTarget, SelfExclusion, render
from coral_ebpf.beyla.settings import BeylaSettings
from coral_ebpf.discovery.model import Listener, ServiceEntry

SERVICES = 50
ROUNDS = 200


def main() -> None:
    services = [
        ServiceEntry(
            pid=1000 + i,
            netns=1,
            name=f"svc{i}",
            exe=f"/srv/svc{i}/bin/server",
            cmdline=(f"svc{i}",),
            listeners=(Listener(8000 + i), Listener(9000 + i)),
        )
        for i in range(SERVICES)
    ]
    target = RenderTarget("http://127.0.0.1:4318", 40000, SelfExclusion.for_this_process((4317, 4318)))
    settings = BeylaSettings()
    render(settings, services, target)  # schema load and validator build happen once
    timings = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        render(settings, services, target)
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    print(
        f"services={SERVICES} rounds={ROUNDS} p50={statistics.median(timings):.2f}ms "
        f"p95={timings[int(0.95 * len(timings))]:.2f}ms (2 shared cores; indicative)"
    )
    print(f"beyla render+validate, {SERVICES} services: {statistics.median(timings):.2f} ms median")


if __name__ == "__main__":
    main()

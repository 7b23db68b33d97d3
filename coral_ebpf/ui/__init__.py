"""A read-only local web view: services, a service's RED over time, a trace waterfall, health.

`build_ui_app(backend)` is an aiohttp application that another aiohttp app can mount with
`add_subapp(prefix, ...)`: the agent mounts it under `/ui` on its operator listener
(`telemetry.server.OperatorServer`); `coral-ebpf ui` serves it on its own endpoint.
"""

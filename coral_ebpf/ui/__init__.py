"""A read-only local web view: services, a service's RED over time, a trace waterfall, health.

`build_ui_app(backend)` is an aiohttp application that another aiohttp app can mount with
`add_subapp(prefix, ...)`; `coral-ebpf ui` serves it on its own endpoint.
"""

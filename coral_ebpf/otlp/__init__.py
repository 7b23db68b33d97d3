"""OTLP receiver (gRPC and HTTP) in front of a `coral_ebpf.consumer.Consumer`; see docs/otlp.md.

Import from the modules: `otlp.receiver.OtlpReceiver`, `coral_ebpf.consumer.Consumer` (and its results
and errors), `otlp.settings.OtlpSettings`. The package itself imports nothing, so reading the
configuration (which needs `otlp.settings`) does not load grpcio and aiohttp.
"""

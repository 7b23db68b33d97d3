"""OTLP export upstream: everything the agent accepts, forwarded through a bounded queue on disk.

`settings` (the `export.otlp` section, OTEL_EXPORTER_OTLP_* defaults), `queue` (the persistent
queue), `client` (one OTLP request over gRPC or HTTP, its outcome classified), `exporter` (the
component: a sender thread with retries) and `tee` (the consumer that feeds it).
"""

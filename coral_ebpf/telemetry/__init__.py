"""The operator listener: Prometheus `/metrics`, `/-/healthy` and `/-/ready` over HTTP.

The listener (`server.OperatorServer`) knows nothing of the agent: it serves whatever a
`source.TelemetrySource` gives it (metric families from `exposition` and two health verdicts),
so the colony can reuse it for its own figures. `red_totals` keeps the cumulative RED
histograms the agent exports.
"""

"""Grafana Beyla: binary lookup and install, config rendering, and the supervisor (docs/beyla.md)."""

"""Shared test infrastructure (network namespaces, free ports, waiting)."""

"""Benchmarks: each prints its figure on its last line (see README, Figures). A package so that one
benchmark can reuse another's pieces (bench/flood.py uses bench/ingest.py's senders)."""

"""Answers for people and assistants beyond tables: the read-only tools behind `coral-ebpf mcp`."""

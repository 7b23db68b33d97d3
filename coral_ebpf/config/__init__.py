"""Configuration machinery shared by every part: YAML documents, JSON Schema checking, custom formats.

A leaf of the import graph: it knows no part. Each part describes its own section in its
`settings.py` with the building blocks in `formats.py`; the agent assembles the sections, and
holds the rules across sections, in `coral_ebpf.agent.config`.
"""

"""The agent's configuration: one YAML file validated against a JSON Schema."""

from coral_ebpf.config.loader import DEFAULT_CONFIG_PATH, load_config, parse_config_text
from coral_ebpf.config.schema import AgentConfig, build_schema

__all__ = ["DEFAULT_CONFIG_PATH", "AgentConfig", "build_schema", "load_config", "parse_config_text"]

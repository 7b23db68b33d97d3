"""coral-ebpf: an eBPF-native host agent for RED metrics and traces."""

__version__ = "0.1.0"

"""The agent's pull API: a gRPC service a colony calls to copy rows by seq_id."""

"""OTLP -> rows: semantic-convention mapping, cumulative-to-delta histograms, and the
receiver's `Consumer` (`coral_ebpf.transform.processor.TransformProcessor`)."""

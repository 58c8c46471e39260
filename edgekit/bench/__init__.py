"""Bench: a fixed, versioned workload against llama-server, measured against llama-bench and the memory-bandwidth
ceiling, with device telemetry per phase."""

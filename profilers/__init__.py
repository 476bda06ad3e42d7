"""Device latency profilers."""

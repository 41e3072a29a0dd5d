"""Latency and throughput across batch sizes, every backend side by side."""

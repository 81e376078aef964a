"""Throughput of a two-node exchange, beside the baselines it is read against."""

"""Helpers shared by the benchmark scripts (processes, sink, SMTP client, statistics)."""

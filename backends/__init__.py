"""Pluggable parts: deploy backends, engines and their flag mapping, the load generator,
workloads, and adapters for other benchmark tools' outputs. Imports ``specs`` only."""

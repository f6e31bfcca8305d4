"""Fakes for what cannot run on the test machines (a Kubernetes API server and its kubelet)."""

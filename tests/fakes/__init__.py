"""Fakes: stand-ins for what cannot run here or must misbehave on cue, kept in one place and
named as fakes. Everything else in the tests uses the real thing (git, processes, Podman, the sim
engine).

- :mod:`tests.fakes.kube_api` and :mod:`tests.fakes.kubelet` — a Kubernetes API server and a
  kubelet (no cluster can run on the test machines).
- :mod:`tests.fakes.openai_server` — an OpenAI-compatible streaming server that injects protocol
  faults on request (HTTP 500, hangs, broken JSON, a connection closed mid-stream), which no real
  engine does on cue.
"""

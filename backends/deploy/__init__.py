"""Deploy backends: how an engine instance is started, watched and stopped (local, docker, kubernetes).

The protocol and failure kinds are in :mod:`backends.deploy.base`; processes are spawned only by
:mod:`backends.deploy.procs`; GPU discovery is :mod:`backends.deploy.gpus`.
"""

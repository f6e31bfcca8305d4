"""The daemon side: git sync, reconcile loop, studies, experiment runner, checkpoints, GPU
leases, and the command-line interface. The only package that imports all the others."""

__version__ = "0.1.0"

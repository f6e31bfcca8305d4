"""Why a simulated engine refuses to start.

A real engine that cannot start prints an exception and exits non-zero; the deploy backend only
sees the exit code and the log tail. The simulator does the same, with the messages real engines
print (``CUDA out of memory``, ``No available memory for the cache blocks``, vLLM's
``ValueError`` texts), so that the code that classifies failures is tested against realistic
output. Every message also says what to change.
"""

from __future__ import annotations


class StartupError(Exception):
    """The configuration cannot run: the engine prints this and exits 1."""

    #: the exception name a real engine would print
    kind = "ValueError"

    def __str__(self) -> str:
        return f"{self.kind}: {self.args[0]}"


class OutOfMemoryError(StartupError):
    """Weights, activations or one full-length sequence's KV cache do not fit on the GPU."""

    def __init__(self, message: str, *, kind: str = "torch.OutOfMemoryError") -> None:
        super().__init__(message)
        self.kind = kind

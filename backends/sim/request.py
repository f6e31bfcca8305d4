"""One simulated request as the scheduler and the KV cache see it.

A plain mutable record with slots: the scheduler touches a few of its fields for every running
sequence on every step, so attribute access must be cheap, and the request carries its own KV
bookkeeping instead of a side table keyed by id.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"
    ABORTED = "aborted"


@dataclass(slots=True, eq=False)
class SimRequest:
    request_id: str
    prompt_tokens: int
    #: tokens this request will generate: ``max_tokens``, or fewer when the simulated EOS comes first
    target_tokens: int
    #: ``"stop"`` (EOS) or ``"length"`` (max_tokens), reported when it finishes
    finish_reason: str = "length"
    #: chained hashes of the prompt's full KV blocks (empty without prefix caching)
    block_hashes: tuple[int, ...] = ()

    status: Status = Status.WAITING
    #: tokens (prompt and output) whose KV is computed
    num_computed: int = 0
    num_output: int = 0
    #: prompt tokens served from the prefix cache at first admission
    cached_tokens: int = 0
    preemptions: int = 0
    #: simulated clock readings (seconds), set by the scheduler
    arrived_at: float = 0.0
    first_token_at: float | None = None
    finished_at: float | None = None

    # KV bookkeeping, owned by :class:`backends.sim.kvcache.KVCache`
    kv_hashes: list[int] = field(default_factory=list)
    kv_anon: int = 0
    kv_committed: int = 0

    @property
    def num_tokens(self) -> int:
        """Prompt plus generated tokens: what a (re)computation has to cover."""
        return self.prompt_tokens + self.num_output

    @property
    def done(self) -> bool:
        return self.status in (Status.FINISHED, Status.ABORTED)

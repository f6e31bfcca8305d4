"""Paged KV-cache blocks with prefix caching, after vLLM V1's ``KVCacheManager``.

The cache is ``num_blocks`` blocks of ``block_size`` tokens. Blocks never need identities here,
only counts, except the ones that hold a full prompt block with prefix caching on: those are
known by the chained hash of the block's tokens (equal hash, equal prefix), carry a reference
count, and stay cached after their request ends until the space is needed (LRU eviction, the
tail blocks of a request first, as vLLM frees them in reverse). A request that starts with the
same block-aligned prefix takes references on those blocks instead of computing them.

Everything is O(blocks touched): a decode step that does not cross a block boundary costs a
comparison, which keeps the simulator cheap at hundreds of sequences.
"""

from __future__ import annotations

from collections import OrderedDict

from backends.sim.request import SimRequest


class KVCache:
    def __init__(self, num_blocks: int, block_size: int, *, prefix_caching: bool) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be positive")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        #: hash -> references, for every block that holds a registered prompt block
        self._refs: dict[int, int] = {}
        #: registered blocks nobody references, least recently freed first
        self._evictable: OrderedDict[int, None] = OrderedDict()
        #: blocks in use that hold no registered hash (outputs, partial or duplicate blocks)
        self._anon = 0
        self.queried_tokens = 0
        self.hit_tokens = 0

    # -- capacity ------------------------------------------------------------------------------

    @property
    def free_blocks(self) -> int:
        """Blocks an allocation may take: never used, or cached but unreferenced."""
        return self.num_blocks - self._anon - len(self._refs) + len(self._evictable)

    @property
    def usage(self) -> float:
        """Fraction of blocks referenced by requests (vLLM's ``kv_cache_usage_perc``)."""
        return 1.0 - self.free_blocks / self.num_blocks

    @property
    def cached_blocks(self) -> int:
        return len(self._refs)

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    @staticmethod
    def held(req: SimRequest) -> int:
        return len(req.kv_hashes) + req.kv_anon

    def _take(self, n: int) -> None:
        never_used = self.num_blocks - self._anon - len(self._refs)
        for _ in range(n - min(n, never_used)):
            victim, _ = self._evictable.popitem(last=False)
            del self._refs[victim]
        self._anon += n

    # -- requests ------------------------------------------------------------------------------

    def grow(self, req: SimRequest, tokens: int) -> bool:
        """Make ``req`` hold blocks for ``tokens`` tokens; False (and no change) if they are not free."""
        need = self.blocks_for(tokens) - len(req.kv_hashes) - req.kv_anon
        if need <= 0:
            return True
        if need > self.free_blocks:
            return False
        self._take(need)
        req.kv_anon += need
        return True

    def match(self, req: SimRequest) -> int:
        """How many leading full blocks of ``req``'s prompt are cached.

        At least one token is always left to compute (the engine needs the last position's
        logits), as in vLLM.
        """
        if not self.prefix_caching or not req.block_hashes:
            return 0
        limit = min(len(req.block_hashes), (req.num_tokens - 1) // self.block_size)
        refs = self._refs
        hits = 0
        for h in req.block_hashes[:limit]:
            if h not in refs:
                break
            hits += 1
        return hits

    def admit(self, req: SimRequest, hits: int, tokens: int) -> bool:
        """Give a request that holds nothing its ``hits`` cached blocks plus new blocks up to ``tokens``."""
        hashes = req.block_hashes[:hits]
        revived = sum(1 for h in hashes if self._refs[h] == 0)
        need = self.blocks_for(tokens) - hits
        if need > self.free_blocks - revived:
            return False
        for h in hashes:
            if self._refs[h] == 0:
                del self._evictable[h]
            self._refs[h] += 1
        req.kv_hashes.extend(hashes)
        req.kv_committed = hits
        if need > 0:
            self._take(need)
            req.kv_anon += need
        if req.num_output == 0 and not req.preemptions:
            self.queried_tokens += req.prompt_tokens
            self.hit_tokens += hits * self.block_size
        return True

    def commit(self, req: SimRequest) -> None:
        """Register the prompt blocks ``req`` has finished computing, so later requests can share them."""
        if not self.prefix_caching:
            return
        upto = min(len(req.block_hashes), min(req.num_computed, req.prompt_tokens) // self.block_size)
        refs = self._refs
        for i in range(req.kv_committed, upto):
            h = req.block_hashes[i]
            # a block another request registered meanwhile stays a private duplicate
            if h not in refs and req.kv_anon > 0:
                refs[h] = 1
                req.kv_anon -= 1
                self._anon -= 1
                req.kv_hashes.append(h)
        if upto > req.kv_committed:
            req.kv_committed = upto

    def free(self, req: SimRequest) -> None:
        """Release everything ``req`` holds; its registered blocks stay cached until evicted."""
        refs = self._refs
        for h in reversed(req.kv_hashes):
            left = refs[h] - 1
            refs[h] = left
            if left == 0:
                self._evictable[h] = None
        self._anon -= req.kv_anon
        req.kv_hashes = []
        req.kv_anon = 0
        req.kv_committed = 0

    def reset_prefix_cache(self) -> int:
        """Forget every cached block nobody references (vLLM's ``/reset_prefix_cache``); how many."""
        dropped = len(self._evictable)
        for h in self._evictable:
            del self._refs[h]
        self._evictable.clear()
        return dropped

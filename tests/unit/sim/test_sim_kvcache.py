"""KV blocks: allocation, prefix sharing, LRU eviction, and invariants under random use."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from backends.sim.kvcache import KVCache
from backends.sim.request import SimRequest
from backends.sim.text import block_hashes

BS = 4


def request(words: list[str], name: str = "r", prefix: bool = True) -> SimRequest:
    return SimRequest(name, len(words), 8, block_hashes=block_hashes(words, BS) if prefix else ())


def compute_prompt(kv: KVCache, req: SimRequest) -> None:
    """Admit ``req`` with its prefix hits and compute its whole prompt."""
    hits = kv.match(req)
    assert kv.admit(req, hits, req.prompt_tokens)
    req.num_computed = req.prompt_tokens
    kv.commit(req)


def test_grow_takes_whole_blocks_and_refuses_without_change() -> None:
    kv = KVCache(4, BS, prefix_caching=False)
    a, b = request(["w"] * 9, "a", prefix=False), request(["w"] * 9, "b", prefix=False)
    assert kv.grow(a, 9)  # 3 blocks
    assert kv.free_blocks == 1
    assert kv.grow(a, 12)  # still 3 blocks
    assert not kv.grow(b, 5)  # needs 2, 1 free
    assert kv.held(b) == 0 and kv.free_blocks == 1
    kv.free(a)
    assert kv.free_blocks == 4 and kv.usage == 0.0


def test_identical_prefixes_share_blocks() -> None:
    kv = KVCache(16, BS, prefix_caching=True)
    words = [f"w{i}" for i in range(10)]  # 2 full blocks + 2 words
    first = request(words, "first")
    compute_prompt(kv, first)
    assert kv.cached_blocks == 2
    second = request(words, "second")
    assert kv.match(second) == 2
    used_before = kv.num_blocks - kv.free_blocks
    compute_prompt(kv, second)
    # the two shared blocks are not allocated again: only the partial third block is new
    assert kv.num_blocks - kv.free_blocks == used_before + 1
    assert kv.hit_tokens == 2 * BS


def test_a_different_first_block_shares_nothing() -> None:
    kv = KVCache(16, BS, prefix_caching=True)
    compute_prompt(kv, request([f"w{i}" for i in range(12)], "a"))
    other = request(["x"] + [f"w{i}" for i in range(1, 12)], "b")
    assert kv.match(other) == 0


def test_the_last_prompt_token_is_always_computed() -> None:
    kv = KVCache(16, BS, prefix_caching=True)
    words = [f"w{i}" for i in range(8)]  # exactly 2 blocks
    compute_prompt(kv, request(words, "a"))
    assert kv.match(request(words, "b")) == 1


def test_freed_blocks_stay_cached_until_evicted_lru() -> None:
    kv = KVCache(4, BS, prefix_caching=True)
    a = request([f"a{i}" for i in range(8)], "a")
    compute_prompt(kv, a)
    kv.free(a)
    assert kv.cached_blocks == 2 and kv.free_blocks == 4
    assert kv.match(request([f"a{i}" for i in range(9)], "again")) == 2
    # a new request needing 3 blocks evicts one cached block: the tail one first
    b = request([f"b{i}" for i in range(12)], "b", prefix=False)
    assert kv.grow(b, 12)
    assert kv.cached_blocks == 1
    assert kv.match(request([f"a{i}" for i in range(9)], "again")) == 1


def test_reset_prefix_cache_drops_only_unreferenced_blocks() -> None:
    kv = KVCache(16, BS, prefix_caching=True)
    held = request([f"h{i}" for i in range(8)], "held")
    gone = request([f"g{i}" for i in range(8)], "gone")
    compute_prompt(kv, held)
    compute_prompt(kv, gone)
    kv.free(gone)
    assert kv.reset_prefix_cache() == 2
    assert kv.cached_blocks == 2
    kv.free(held)
    assert kv.free_blocks == kv.num_blocks


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(1, 30), st.booleans()), min_size=1, max_size=40))
def test_blocks_are_conserved_under_random_use(ops: list[tuple[int, int, bool]]) -> None:
    kv = KVCache(24, BS, prefix_caching=True)
    live: dict[int, SimRequest] = {}
    for slot, length, release in ops:
        if slot in live and release:
            kv.free(live.pop(slot))
        elif slot not in live:
            # prompts drawn from two families so that prefixes are shared
            words = [f"{slot % 2}-{i}" for i in range(length)]
            req = request(words, str(slot))
            hits = kv.match(req)
            if kv.admit(req, hits, length):
                req.num_computed = length
                kv.commit(req)
                live[slot] = req
        assert 0 <= kv.free_blocks <= kv.num_blocks
        held = sum(kv.held(r) for r in live.values())
        # shared blocks are counted once by the cache and once per holder by the requests
        assert kv.num_blocks - kv.free_blocks <= held
    for req in live.values():
        kv.free(req)
    assert kv.free_blocks == kv.num_blocks

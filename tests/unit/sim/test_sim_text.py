"""Words as tokens: prefix hashes, the deterministic EOS, output text."""

from __future__ import annotations

import statistics

import pytest

from backends.sim.text import MEAN_OUTPUT_TOKENS, block_hashes, count_words, eos_position, output_text


def test_block_hashes_cover_full_blocks_and_chain() -> None:
    words = [f"w{i}" for i in range(10)]
    hashes = block_hashes(words, 4)
    assert len(hashes) == 2
    assert block_hashes(words[:8], 4) == hashes
    changed = block_hashes(["x", *words[1:]], 4)
    # a change in the first block changes every later hash (the chain covers the prefix)
    assert changed[0] != hashes[0] and changed[1] != hashes[1]
    assert block_hashes(words[:3], 4) == ()


def test_eos_is_deterministic_per_seed_and_content() -> None:
    assert eos_position(1, b"hello") == eos_position(1, b"hello")
    draws_1 = [eos_position(1, f"p{i}".encode()) for i in range(50)]
    draws_2 = [eos_position(2, f"p{i}".encode()) for i in range(50)]
    assert draws_1 != draws_2
    assert min(draws_1) >= 1


def test_eos_positions_have_the_documented_mean() -> None:
    draws = [eos_position(0, f"prompt {i}".encode()) for i in range(4000)]
    assert statistics.fmean(draws) == pytest.approx(MEAN_OUTPUT_TOKENS, rel=0.1)


def test_output_text_is_one_word_per_token_and_continuous() -> None:
    for offset in (0, 7, 59):
        whole = output_text(offset, 0, 10_000)
        assert count_words(whole) == 10_000
        assert output_text(offset, 0, 123) + output_text(offset, 123, 877) == output_text(offset, 0, 1000)
        assert whole.startswith(" ") and whole.isascii() and '"' not in whole and "\\" not in whole
    assert output_text(0, 0, 0) == ""

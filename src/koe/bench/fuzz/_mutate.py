"""Inputs for the fuzzer: real messages, mutated.

`Mutator(seeds, rng)`; `next()` gives one input. Half the time a JSON seed is changed as a tree (a value replaced by
one of another type, an edge value or a deep nest; a key dropped, added or renamed), then re-serialized, so the input
gets past the JSON decoder into the parser's own checks; otherwise the bytes are mutated (bits flipped, edge bytes,
ranges cut, copied or spliced from another seed, a truncation), which tests the decoder and the framing. Both are
seeded, so a run can be repeated exactly.

Why not Hypothesis or atheris here: a bench run wants a million inputs per parser in minutes, and neither is a
runtime dependency (atheris has no wheel for this Python); the test suite's smoke run adds Hypothesis's own
strategies over the same targets (`tests/bench/test_fuzz.py`).
"""

from __future__ import annotations

import random
from typing import Any

import orjson

MAX_INPUT_BYTES = 64 * 1024
"""Inputs are cut here: the parsers' own size limits are tested by the seeds that carry their edge lengths."""
INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x22, 0x5C, 0x7B, 0x7D, 0x5B, 0x5D, 0x3A, 0x2C)
INTERESTING_TOKENS = (
    b"null",
    b"true",
    b"-1",
    b"0",
    b"1e309",
    b"-0.0",
    b"18446744073709551616",
    b'"',
    b"{",
    b"}",
    b"[",
    b"]",
    b"\\u0000",
    b"\\ud800",
    b'""',
    b"[]",
    b"{}",
    b"\xc3\x28",
    b"\xf0\x9f\x98\x80",
)


def _edge_values(rng: random.Random) -> Any:
    choice = rng.randrange(14)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.choice([0, -1, 1, 2**31, 2**53 + 1, -(2**63), 2**64])
    if choice == 3:
        return rng.choice([0.0, -0.0, 1e308, -1e308, 5e-324, 0.5, 1e-9])
    if choice == 4:
        return ""
    if choice == 5:
        return "x" * rng.choice([1, 64, 4096, 40_000])
    if choice == 6:
        return rng.choice(["\u0000", "\ufeff", "日本語", "\U0001f600", "a\nb", "../../etc/passwd", "%s%n"])
    if choice == 7:
        return []
    if choice == 8:
        return {}
    if choice == 9:
        value: Any = 1
        for _ in range(rng.choice([10, 100, 400])):
            value = [value] if rng.random() < 0.5 else {"a": value}
        return value
    if choice == 10:
        return [rng.randrange(-5, 5) for _ in range(rng.choice([3, 100, 2000]))]
    if choice == 11:
        return rng.choice(["pcm16", "g711_ulaw", "audio/pcm", "server_vad", "semantic_vad", "auto", "none"])
    if choice == 12:
        return rng.choice(["AAAA", "////", "=", "A" * 1001, "not base64!"])
    return rng.randrange(-1000, 100_000)


def _mutate_tree(value: Any, rng: random.Random, depth: int = 0) -> Any:
    """`value` with one node somewhere below it changed."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        keys = list(value)
        key = rng.choice(keys)
        out = dict(value)
        action = rng.randrange(6)
        if action == 0:
            del out[key]
        elif action == 1:
            out[rng.choice(["type", "event_id", "session", "item", "audio", "kind", key + "_", ""])] = _edge_values(rng)
        elif action == 2:
            out[key.upper() if rng.random() < 0.5 else key.swapcase()] = out.pop(key)
        else:
            out[key] = _mutate_tree(out[key], rng, depth + 1)
        return out
    if isinstance(value, list) and value and rng.random() < 0.8:
        out_list = list(value)
        index = rng.randrange(len(out_list))
        action = rng.randrange(4)
        if action == 0:
            del out_list[index]
        elif action == 1:
            out_list.insert(index, _edge_values(rng))
        else:
            out_list[index] = _mutate_tree(out_list[index], rng, depth + 1)
        return out_list
    return _edge_values(rng)


def _mutate_bytes(data: bytes, rng: random.Random, seeds: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 3, 6])):
        action = rng.randrange(9)
        size = len(buf)
        at = rng.randrange(size + 1)
        if action == 0 and size:
            buf[min(at, size - 1)] ^= 1 << rng.randrange(8)
        elif action == 1 and size:
            buf[min(at, size - 1)] = rng.choice(INTERESTING_BYTES)
        elif action == 2:
            buf[at:at] = rng.choice(INTERESTING_TOKENS)
        elif action == 3 and size:
            end = min(size, at + rng.choice([1, 4, 32, 512]))
            del buf[at:end]
        elif action == 4 and size:
            start = rng.randrange(size)
            piece = buf[start : start + rng.choice([1, 8, 64, 1024])]
            buf[at:at] = piece * rng.choice([1, 2, 16])
        elif action == 5:
            other = rng.choice(seeds)
            start = rng.randrange(len(other) + 1)
            buf[at:] = other[start:]
        elif action == 6:
            del buf[at:]
        elif action == 7:
            buf[at:at] = rng.randbytes(rng.choice([1, 4, 20, 200]))
        elif action == 8 and size >= 4:
            # A length field somewhere: set 4 bytes to an edge integer (big-endian framing headers use them).
            value = rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, size, size + 1, 10_241])
            buf[at : at + 4] = value.to_bytes(4, "big")
    return bytes(buf[:MAX_INPUT_BYTES])


class Mutator:
    def __init__(self, seeds: list[bytes], rng: random.Random) -> None:
        if not seeds:
            raise ValueError("a fuzz target needs at least one seed")
        self.seeds = seeds
        self.rng = rng
        self._trees: list[Any] = []
        for seed in seeds:
            try:
                tree = orjson.loads(seed)
            except orjson.JSONDecodeError:
                continue
            if isinstance(tree, dict | list):
                self._trees.append(tree)

    def next(self) -> bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.02:
            return rng.choice(self.seeds)  # the seeds themselves keep the accepted path exercised
        if self._trees and roll < 0.5:
            tree = rng.choice(self._trees)
            for _ in range(rng.choice([1, 1, 2, 4])):
                tree = _mutate_tree(tree, rng)
            try:
                return orjson.dumps(tree)[:MAX_INPUT_BYTES]
            except (TypeError, orjson.JSONEncodeError):  # an integer beyond 64 bits: orjson refuses it
                return repr(tree).encode()[:MAX_INPUT_BYTES]
        return _mutate_bytes(rng.choice(self.seeds), rng, self.seeds)

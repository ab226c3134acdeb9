"""The engine's shape: no import cycle in `koe.voice` or `koe.engines` (TYPE_CHECKING imports included), and the
session's helpers depend on its `VoiceContext`, never on the session itself."""

from __future__ import annotations

import itertools

import grimp
import pytest

ENGINE_PACKAGES = ("koe.voice", "koe.engines")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("koe")


def test_no_module_of_the_engine_is_in_an_import_cycle(graph: grimp.ImportGraph) -> None:
    modules = sorted(m for m in graph.modules if m.startswith(ENGINE_PACKAGES))
    cycles = [
        (a, b)
        for a, b in itertools.combinations(modules, 2)
        if graph.find_shortest_chain(a, b) and graph.find_shortest_chain(b, a)
    ]
    assert cycles == []


def test_only_doors_import_the_session(graph: grimp.ImportGraph) -> None:
    importers = graph.find_downstream_modules("koe.voice.session")
    assert not {m for m in importers if m.startswith(ENGINE_PACKAGES)}

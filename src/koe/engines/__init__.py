"""Model backends behind small typed interfaces (`koe.engines.base`); `koe.engines.registry.load_engines()` loads them.

Importing this package sets one process-wide default before any backend's libraries load. CTranslate2 (Whisper)
and llama.cpp each bring their own copy of GNU OpenMP, whose idle threads spin for about 300,000 iterations after
every parallel region by default. On two cores, two spinning runtimes starve each other: with Whisper transcribing
partials, llama.cpp's two prompt-evaluation threads took 6 s instead of 0.1 s for a 50-token prompt, and an ACS
agent call got no reply at all (1 run in 3). A spin of 10,000 iterations (microseconds) keeps the idle-machine
figures (`koe bench engines`) and removes the starvation. A value set in the environment wins.
"""

import os

OPENMP_SPIN_COUNT = "10000"
os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPIN_COUNT)

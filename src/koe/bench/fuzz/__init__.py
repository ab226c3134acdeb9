"""`koe bench fuzz`: every sans-I/O parser fed mutated real messages (`parsers.py`, targets in `targets.py`), then
the running doors fed the same through their sockets while a healthy call streams beside them (`doors.py`).
Results go to bench/results/fuzz.json."""

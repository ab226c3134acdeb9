"""`koe bench soak`: does koe give back what it takes, over many sessions and over hours?

Two measurements, each against koe in a child process (`koe.bench._child`), sampled from outside through `/proc`:

- `leak.run_leak(...)`: many short sessions across the four doors (Realtime, ACS, Sora, REST); the child's RSS,
  open file descriptors and asyncio tasks (`koe_asyncio_tasks` on `/metrics`) after warm-up and at the end;
- `soak.run_soak(...)`: real speech looping on Sora transcription streams for a duration; p95 final-result latency
  and RSS per time window.

Call `command.bench_soak` (the `koe bench soak` click command) or the two functions; `plot.write_plot` draws the soak.
"""

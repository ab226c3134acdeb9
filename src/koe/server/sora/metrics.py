"""The Sora door's Prometheus counters, in one place so the server-wide /metrics can merge them.

`SoraMetrics` holds plain counters and gauges that the door bumps synchronously (no locks: everything runs on the
event loop); `render()` gives the Prometheus text exposition format (version 0.0.4), every name prefixed
`koe_sora_`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
"""Final-result latency after the end of an utterance, in seconds."""

Labels = tuple[tuple[str, str], ...]
_RESULT_LABELS: dict[str, Labels] = {}


@dataclass
class SoraMetrics:
    requests: dict[Labels, int] = field(default_factory=lambda: defaultdict(int))
    streams_active: int = 0
    packets: int = 0
    packet_bytes: int = 0
    silent_packets_injected: int = 0
    empty_packets: int = 0
    malformed_packets: int = 0
    results: dict[Labels, int] = field(default_factory=lambda: defaultdict(int))
    stream_errors: dict[Labels, int] = field(default_factory=lambda: defaultdict(int))
    client_resets: int = 0
    relay_retries: dict[Labels, int] = field(default_factory=lambda: defaultdict(int))
    partials_paused: int = 0
    final_latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    final_latency_sum_s: float = 0.0

    def request(self, path: str, status: int) -> None:
        self.requests[(("path", path), ("status", str(status)))] += 1

    def result(self, kind: str) -> None:
        labels = _RESULT_LABELS.get(kind)
        if labels is None:
            labels = _RESULT_LABELS[kind] = (("type", kind),)
        self.results[labels] += 1

    def stream_error(self, kind: str) -> None:
        self.stream_errors[(("kind", kind),)] += 1

    def relay_retry(self, phase: str) -> None:
        """The relay retried its upstream (`sora.max_retry`): `connect` after a failed connect, `stream` after a
        session dropped while streaming."""
        self.relay_retries[(("phase", phase),)] += 1

    def final_latency(self, seconds: float) -> None:
        for i, bound in enumerate(LATENCY_BUCKETS_S):
            if seconds <= bound:
                self.final_latency_buckets[i] += 1
                break
        else:
            self.final_latency_buckets[-1] += 1
        self.final_latency_sum_s += seconds

    def render(self) -> str:
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: list[tuple[str, Labels, float]]) -> None:
            lines.append(f"# HELP koe_sora_{name} {help_text}")
            lines.append(f"# TYPE koe_sora_{name} {kind}")
            for suffix, labels, value in samples:
                label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(
                    f"koe_sora_{name}{suffix}{{{label_text}}} {_number(value)}"
                    if labels
                    else f"koe_sora_{name}{suffix} {_number(value)}"
                )

        family(
            "requests_total",
            "counter",
            "Requests by path and HTTP status.",
            [("", labels, n) for labels, n in sorted(self.requests.items())],
        )
        family(
            "streams_active", "gauge", "Audio streams (Sora connections) in progress.", [("", (), self.streams_active)]
        )
        family("packets_total", "counter", "Opus packets received.", [("", (), self.packets)])
        family("packet_bytes_total", "counter", "Opus payload bytes received.", [("", (), self.packet_bytes)])
        family(
            "silent_packets_injected_total",
            "counter",
            "Silent packets injected while Sora was idle.",
            [("", (), self.silent_packets_injected)],
        )
        family("empty_packets_total", "counter", "Zero-length packets skipped.", [("", (), self.empty_packets)])
        family(
            "malformed_packets_total",
            "counter",
            "Packets that could not be decoded or muxed.",
            [("", (), self.malformed_packets)],
        )
        family(
            "results_total",
            "counter",
            "Result objects sent, by type.",
            [("", labels, n) for labels, n in sorted(self.results.items())],
        )
        family(
            "stream_errors_total",
            "counter",
            "Streams ended by an error object, by kind.",
            [("", labels, n) for labels, n in sorted(self.stream_errors.items())],
        )
        family(
            "client_resets_total",
            "counter",
            "Streams the client reset or abandoned mid-stream.",
            [("", (), self.client_resets)],
        )
        family(
            "relay_retries_total",
            "counter",
            "Upstream connects the relay service retried (sora.max_retry), by phase.",
            [("", labels, n) for labels, n in sorted(self.relay_retries.items())],
        )
        cumulative = 0
        buckets: list[tuple[str, Labels, float]] = []
        for bound, count in zip((*LATENCY_BUCKETS_S, float("inf")), self.final_latency_buckets, strict=True):
            cumulative += count
            buckets.append(("_bucket", (("le", "+Inf" if bound == float("inf") else str(bound)),), cumulative))
        buckets.append(("_sum", (), self.final_latency_sum_s))
        buckets.append(("_count", (), cumulative))
        family(
            "final_result_latency_seconds",
            "histogram",
            "Time from the end of an utterance (its last packet) to its final result.",
            buckets,
        )
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))

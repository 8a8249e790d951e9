"""Reading what the services report in the telemetry tests: the spans of one trace once they have ended, the
parent/child links between them, and samples on a Prometheus endpoint; and an HTTP call that carries the trace."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Sequence

from opentelemetry import propagate
from prometheus_client.parser import text_string_to_metric_families
from realparts import wait_for


def finished(exporter, names: Sequence[str], trace_id: int, timeout: float = 20.0) -> dict[str, list]:
    """The trace's finished spans by name, once every one of `names` has ended (a server's span ends just after
    its last response reaches the caller)."""

    def collect():
        by_name: dict[str, list] = {}
        for span in exporter.get_finished_spans():
            if span.context.trace_id == trace_id:
                by_name.setdefault(span.name, []).append(span)
        return by_name if all(name in by_name for name in names) else None

    return wait_for(collect, timeout, f"spans {list(names)} did not all end in the trace")


def total(url: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus endpoint's samples named `name` whose labels include `labels` (0 when none)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def http(url: str, body: dict | None = None) -> dict:
    """A JSON request carrying the current trace in its `traceparent` header, as an instrumented client sends it."""
    headers = {"content-type": "application/json"}
    propagate.inject(headers)
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=60) as response:
        return json.loads(response.read())


def assert_child(child, parent) -> None:
    """`child` was started under `parent`: same trace, and its parent is that span."""
    assert child.context.trace_id == parent.context.trace_id, (child.name, parent.name)
    assert child.parent is not None and child.parent.span_id == parent.context.span_id, \
        f"{child.name}'s parent is not {parent.name}"


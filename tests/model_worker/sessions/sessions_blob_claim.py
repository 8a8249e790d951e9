"""Child-process side of the cross-process `put_if_absent` test in test_sessions_blobs.py.

Kept apart from the test module so that a spawned child loads only `model_worker/sessions/blobs.py` (standard library
and fsspec) rather than the whole `model_worker.sessions` package, whose import pulls in torch: four spawned children
importing torch would cost seconds.
"""

from __future__ import annotations

import importlib.util


def claim_keys(blobs_file: str, root: str, keys: list[str], data: bytes, start, results) -> None:
    """Wait for every racer at `start`, then try to claim each key with `data`; report {key: claimed} on `results`."""
    spec = importlib.util.spec_from_file_location("_sessions_blobs_under_test", blobs_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    store = module.FsspecBlobs(root)
    start.wait(60)
    results.put((data, {key: store.put_if_absent(key, data) for key in keys}))

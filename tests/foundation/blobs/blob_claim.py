"""Child-process side of the cross-process `put_if_absent` test in test_blob_stores.py, kept apart from the test
module so that a spawned child imports only the blob stores (torch-free), not the test module's imports."""

from __future__ import annotations


def claim_keys(root: str, keys: list[str], data: bytes, start, results) -> None:
    """Wait for every racer at `start`, then try to claim each key with `data`; report {key: claimed} on `results`."""
    from foundation.blobs.stores import FsspecBlobs

    store = FsspecBlobs(root)
    start.wait(60)
    results.put((data, {key: store.put_if_absent(key, data) for key in keys}))

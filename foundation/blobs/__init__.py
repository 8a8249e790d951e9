"""Blob stores by URL (a directory, `file://`, any fsspec URL, `redis://`), hot/warm/cold tiers, and the key rules
every store enforces: where sessions, batch results and exports are kept."""

from foundation.blobs.keys import InvalidKey
from foundation.blobs.stores import BlobStore, TieredBlobs, open_blobs, open_tiered

__all__ = ["BlobStore", "InvalidKey", "TieredBlobs", "open_blobs", "open_tiered"]

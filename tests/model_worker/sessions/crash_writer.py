"""Child process for the kill -9 tests: grows one session forever, announcing each commit once it returns.

    python crash_writer.py STORE_URL SESSION_ID

Each value write is followed by a pause (a test wrapper around the real store), so most of the process's time is
spent inside commits and a kill lands between a commit's values and its record.
"""

from __future__ import annotations

import sys
import time

import torch
from small_config import SMALL

from model_worker.checkpoint.random_init import random_state_dict
from model_worker.model import DeepseekV4, ForwardBatch
from model_worker.numerics import REFERENCE
from model_worker.sessions import SessionNotFound, SessionStore, open_blobs

CHUNK = 37
TOKENS = torch.randint(1, 500, (4000,), generator=torch.Generator().manual_seed(5)).tolist()


class SlowWrites:
    def __init__(self, blobs) -> None:
        self.blobs, self.url = blobs, blobs.url

    def __getattr__(self, name):
        return getattr(self.blobs, name)

    def put(self, key, data):
        self.blobs.put(key, data)
        time.sleep(0.02)

    def put_if_absent(self, key, data):
        done = self.blobs.put_if_absent(key, data)
        time.sleep(0.02)
        return done


def small_model() -> DeepseekV4:
    model = DeepseekV4(SMALL, quantized=True, numerics=REFERENCE)
    model.load_state_dict(random_state_dict(model, 3), assign=True, strict=True)
    model.fingerprint = "crash-test"
    return model


def main(url: str, session_id: str) -> None:
    # As in the test process (conftest): a GEMM's float sums may depend on the thread count (they do on AMD CPUs),
    # and the test compares states bit for bit.
    torch.set_num_threads(1)
    model = small_model()
    store = SessionStore(SlowWrites(open_blobs(url)), model.fingerprint, model.layout)
    try:
        session = store.open("acme", session_id)
    except SessionNotFound:
        session = store.create("acme", session_id=session_id)
    while True:
        start = len(session.token_ids)
        chunk = TOKENS[start : start + CHUNK]
        model(ForwardBatch.single(chunk, session.state, logits="none"))
        store.commit(session, chunk)
        print(f"committed {len(session.token_ids)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

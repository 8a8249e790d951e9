"""A 2-rank model worker (`serve --tensor-parallel 2`, processes on this machine) serves gRPC; sessions do not depend
on the parallel layout (a session saved at 2 ranks resumes at 1 and one saved at 1 resumes at 2, without re-prefill
and with the replies a 1-rank worker gives); and a rank that dies takes the replica down promptly instead of hanging."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest
from realparts import Process, child_env

from foundation.clients.worker import Delta, Sampling, Unavailable, WorkerClient

GREEDY = Sampling(temperature=0.0, max_tokens=8)
TURNS = ["Tell me a story.", "And then?", "How does it end?"]


def start(root, name: str, ranks: int, **env: str) -> tuple[Process, WorkerClient]:
    worker = Process([sys.executable, "-m", "model_worker", "serve", "--config", "tiny", "--numerics", "reference",
                      "--port", "0", "--tensor-parallel", str(ranks), "--session-store", str(root / "sessions")],
                     {**child_env(), **env}, root / f"{name}.log")
    port = worker.wait_for(r"serving \S+ on 127\.0\.0\.1:(\d+)").group(1)
    return worker, WorkerClient(f"127.0.0.1:{port}", timeout=120)


def turn(client: WorkerClient, session: str, text: str):
    final, reply = client.generate_text(session_id=session, messages=[{"role": "user", "content": text}],
                                        sampling=GREEDY)
    return reply, final.usage


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("parallel-worker")


@pytest.mark.slow
def test_sessions_move_between_parallel_layouts_and_a_dead_rank_stops_the_replica(root):
    one, single = start(root, "one-rank", 1)
    try:
        single.create_session(session_id="ref", system_prompt="be brief")
        expected = [turn(single, "ref", text)[0] for text in TURNS]

        two, pair = start(root, "two-ranks", 2, DSV4_GROUP_TIMEOUT_S="3")
        time.sleep(6)  # idle past the group's timeout: rank 0's pings keep the other ranks' waits short
        pair.create_session(session_id="mix", system_prompt="be brief")
        reply, _ = turn(pair, "mix", TURNS[0])
        assert reply == expected[0]
        length = pair.get_session("mix").tokens
        pair.close()
        two.stop()
        assert two.proc.returncode == 0  # a clean stop leaves the group in order

        reply, usage = turn(single, "mix", TURNS[1])  # saved at 2 ranks, resumed at 1
        assert reply == expected[1] and usage.reused_tokens == length
        length = single.get_session("mix").tokens

        again, pair = start(root, "two-ranks-again", 2)
        reply, usage = turn(pair, "mix", TURNS[2])  # saved at 1 rank, resumed at 2
        assert reply == expected[2] and usage.reused_tokens == length

        follower = int(again.wait_for(r"pids \[(\d+)\]").group(1))
        in_flight = pair.generate(session_id="mix", messages=[{"role": "user", "content": "Go on."}],
                                  sampling=Sampling(temperature=0.0, max_tokens=400, ignore_eos=True))
        next(event for event in in_flight if isinstance(event, Delta))
        os.kill(follower, signal.SIGKILL)
        # The generation in flight fails UNAVAILABLE (go on elsewhere), not INTERNAL.
        with pytest.raises(Unavailable):
            list(in_flight)
        # Whichever notices first: the watch on the child rank, or the failed collective of the pass in flight.
        again.wait_for(r"rank 1 of the replica exited|a rank of the replica is gone", timeout=30)
        assert again.proc.wait(timeout=30) == 1  # down, not hanging
        pair.close()
        again.stop()
    finally:
        single.close()
        one.stop()


def test_ranks_started_by_a_launcher_join_through_env_rendezvous(root):
    """As torchrun or a Kubernetes pod group would start them: every rank runs the same command with env:// variables;
    rank 0 serves, rank 1 follows it."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ranks = []
    for rank in (1, 0):
        env = child_env()
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                   LOCAL_RANK=str(rank))
        ranks.append(Process([sys.executable, "-m", "model_worker", "serve", "--config", "tiny", "--numerics",
                              "reference", "--port", "0", "--session-store", str(root / "env-sessions")],
                             env, root / f"env-rank-{rank}.log"))
    follower, leader = ranks
    try:
        address = leader.wait_for(r"serving \S+ on 127\.0\.0\.1:(\d+)").group(1)
        with WorkerClient(f"127.0.0.1:{address}", timeout=120) as client:
            client.create_session(session_id="env", system_prompt="be brief")
            reply, usage = turn(client, "env", TURNS[0])
            assert usage.completion_tokens > 0
        leader.stop()
        assert follower.proc.wait(timeout=30) == 0 and leader.proc.returncode == 0
    finally:
        for process in ranks:
            process.stop()

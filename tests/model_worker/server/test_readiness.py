"""Readiness rounds, driven by hand (no thread, no clock): the wait between attempts doubles up to its cap while a
dependency is missing and is the check period once all answer; a dependency's preparation (migrations) runs until
it has succeeded once, then only its check; every change reaches the watchers; a stopped readiness stays not ready."""

from __future__ import annotations

from foundation.readiness import FIRST_RETRY_S, Dependency, Readiness


class Flaky:
    """Fails its first `failures` calls, then answers; counts its calls."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, 0

    def __call__(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionRefusedError("nothing listens there")


def test_backoff_doubles_to_its_cap_then_the_check_period():
    readiness = Readiness("service", [Dependency("database", Flaky(5))], retry_max_s=1.0, check_every_s=7.0)
    delays = [readiness.probe() for _ in range(6)]
    assert delays == [FIRST_RETRY_S, 2 * FIRST_RETRY_S, 4 * FIRST_RETRY_S, 1.0, 1.0, 7.0]
    assert readiness.ready and readiness.missing() == [] and not readiness.refusing


def test_preparation_runs_until_it_succeeds_once_then_the_check_alone():
    prepare, check = Flaky(2), Flaky(0)
    readiness = Readiness("service", [Dependency("database", check, prepare=prepare)])
    outcomes = []
    for _ in range(5):
        readiness.probe()
        outcomes.append(readiness.ready)
    assert outcomes == [False, False, True, True, True]
    assert (prepare.calls, check.calls) == (3, 2)


def test_every_missing_dependency_is_named_and_a_lost_one_makes_it_not_ready_again():
    broker = Flaky(1)
    database = Flaky(0)
    readiness = Readiness("jobs service", [Dependency("database", database), Dependency("broker", broker)])
    changes: list[bool] = []
    readiness.watch(changes.append)
    assert readiness.missing() == ["database", "broker"] and readiness.refusing  # nothing checked yet
    readiness.probe()
    assert readiness.missing() == ["broker"] and readiness.refusal().endswith("waiting for broker")
    readiness.probe()
    assert readiness.ready
    database.failures = database.calls + 1  # lost at the next check
    readiness.probe()
    assert (readiness.ready, readiness.missing()) == (False, ["database"])
    readiness.probe()
    assert changes == [True, False, True]


def test_a_stopped_readiness_stays_not_ready_but_does_not_refuse():
    readiness = Readiness("agent service", [Dependency("database", Flaky(0))])
    changes: list[bool] = []
    readiness.watch(changes.append)
    readiness.probe()
    readiness.stop()  # draining
    readiness.probe()
    assert (readiness.ready, readiness.refusing, changes) == (False, False, [True, False])

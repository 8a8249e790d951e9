"""`python -m services.embedded [--no-demo] [--data-dir DIR] ...`: the whole platform on one machine with no external
servers: a model worker (`tiny`, random weights), the jobs service with a Celery worker on an embedded broker
(SQLite), the agent service and the OpenAI-compatible gateway; SQLite databases and the session store under one data
directory; workers found from configuration (no Redis). Prints the endpoints, runs the guided demo, then serves until
Ctrl-C, which stops everything cleanly."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from foundation.settings import add_settings_cli, settings_from
from services.embedded.demo import RANDOM_WEIGHTS, TRAINED, run_demo
from services.embedded.launcher import Platform
from services.embedded.settings import EmbeddedSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.embedded", description=__doc__)
    add_settings_cli(parser, EmbeddedSettings)
    settings: EmbeddedSettings = settings_from(EmbeddedSettings, parser.parse_args(argv))
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    print(f"starting the platform (data and logs under {settings.data_dir}/)...", flush=True)
    platform = Platform(settings).start()
    try:
        width = max(len(name) for name in platform.endpoints)
        print("\nthe platform serves:", flush=True)
        for name, address in platform.endpoints.items():
            print(f"  {name:<{width}}  {address}", flush=True)
        if settings.demo:
            trained = settings.checkpoint is not None and (Path(settings.checkpoint) / "training.json").exists()
            run_demo(platform.endpoints, lambda: platform.restart("worker"),
                     script=TRAINED if trained else RANDOM_WEIGHTS)
            if settings.exit_after_demo:
                return 0
        print("\nserving until Ctrl-C (see README.md for client code; logs in "
              f"{settings.data_dir}/logs/)", flush=True)
        while not stopping.wait(1.0):
            exited = [c for c in platform.children.values() if c.process.poll() is not None]
            if exited:
                print(f"{exited[0].name} exited ({exited[0].process.returncode}); see {exited[0].log}; "
                      "stopping", flush=True)
                return 1
        return 0
    finally:
        print("stopping the platform...", flush=True)
        platform.stop()
        print("stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())

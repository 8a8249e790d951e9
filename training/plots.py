"""A run's loss curve as a PNG (`loss.png` next to its `log.jsonl`): the loss per step, its moving average, and the
learning rate, against tokens seen."""

from __future__ import annotations

import json
from pathlib import Path


def plot_run(out: Path, window: int = 50) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot as plt

    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    tokens = [row["tokens"] for row in rows]
    losses = [row["loss"] for row in rows]
    average = [sum(losses[max(0, i - window + 1) : i + 1]) / (i + 1 - max(0, i - window + 1))
               for i in range(len(losses))]
    figure, loss_axis = plt.subplots(figsize=(8, 4.5), dpi=100)
    loss_axis.plot(tokens, losses, color="#9ab", linewidth=0.7, label="loss")
    loss_axis.plot(tokens, average, color="#135", linewidth=1.5, label=f"mean of {window} steps")
    loss_axis.set_xlabel("tokens")
    loss_axis.set_ylabel("loss (nats per predicted token)")
    loss_axis.legend(loc="upper right")
    rate_axis = loss_axis.twinx()
    rate_axis.plot(tokens, [row["lr"] for row in rows], color="#c63", linewidth=0.8)
    rate_axis.set_ylabel("learning rate", color="#c63")
    figure.tight_layout()
    path = out / "loss.png"
    figure.savefig(path)
    plt.close(figure)
    return path

"""A run's loss curves as a PNG (`loss.png` next to its `log.jsonl`): each loss term per step (faint) and its moving
average, on a log scale, and the learning rate, against tokens seen."""

from __future__ import annotations

import json
from pathlib import Path

# (log key, label, color): the next-token loss, the MTP layer's (weighted) and the indexer's distillation
TERMS = (("main", "next token", "#135"), ("mtp", "MTP (x weight)", "#386"), ("indexer_kl", "indexer KL", "#a37"))


def plot_run(out: Path, window: int = 20) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot as plt

    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    figure, loss_axis = plt.subplots(figsize=(8, 4.5), dpi=100)
    for key, label, color in TERMS if any("main" in row for row in rows) else (("loss", "loss", "#135"),):
        points = [(row["tokens"], row[key]) for row in rows if row.get(key, 0) > 0]
        if not points:
            continue
        tokens, values = zip(*points, strict=True)
        average = [sum(values[max(0, i - window + 1) : i + 1]) / (i + 1 - max(0, i - window + 1))
                   for i in range(len(values))]
        loss_axis.plot(tokens, values, color=color, linewidth=0.5, alpha=0.35)
        loss_axis.plot(tokens, average, color=color, linewidth=1.5, label=f"{label} (mean of {window} steps)")
    loss_axis.set_yscale("log")
    loss_axis.set_xlabel("tokens")
    loss_axis.set_ylabel("loss (nats per predicted token)")
    loss_axis.legend(loc="upper right")
    rate_axis = loss_axis.twinx()
    rate_axis.plot([row["tokens"] for row in rows], [row["lr"] for row in rows], color="#c63", linewidth=0.8)
    rate_axis.set_ylabel("learning rate", color="#c63")
    figure.tight_layout()
    path = out / "loss.png"
    figure.savefig(path)
    plt.close(figure)
    return path

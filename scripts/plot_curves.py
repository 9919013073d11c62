#!/usr/bin/env python3
"""Training curves from gputrain's metrics.jsonl files: loss and accuracy against epoch (train,
test and val where present), the learning rate on its own axis; several files overlay, each
labelled by its folder. Written atomically (temporary file in the same folder, then rename).

    plot_curves.py --out FILE.png [--tmp TEMPFILE] METRICS.jsonl...

--tmp names the temporary file (in FILE.png's folder): gputrain's per-epoch drawing passes it so
that it can remove the file after killing a drawing that an interrupted run no longer waits for.

Exit codes: 0 written; 2 a file missing or holding no metrics; 3 matplotlib is not installed."""

import argparse
import json
import os
import sys
import tempfile


def read_metrics(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line of a run in progress
    return [r for r in rows if "epoch" in r]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--tmp", help="the temporary file to write and rename (default: a new one)")
    ap.add_argument("metrics", nargs="+")
    args = ap.parse_args()
    runs = []
    for path in args.metrics:
        if not os.path.isfile(path):
            print(f"{path}: no such file, expected a metrics.jsonl", file=sys.stderr)
            return 2
        rows = read_metrics(path)
        if not rows:
            print(f"{path}: holds no epoch lines, expected gputrain's metrics.jsonl",
                  file=sys.stderr)
            return 2
        label = os.path.basename(os.path.dirname(os.path.abspath(path))) or path
        runs.append((label, rows))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        print("matplotlib is not installed (Debian: python3-matplotlib)", file=sys.stderr)
        return 3

    fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(1, 3, figsize=(15, 4.5), dpi=100)
    several = len(runs) > 1
    for label, rows in runs:
        epochs = [r["epoch"] for r in rows]
        prefix = f"{label} " if several else ""
        for split, style in (("train", "-"), ("val", ":"), ("test", "--")):
            if all(f"{split}_loss" in r for r in rows):
                ax_loss.plot(epochs, [r[f"{split}_loss"] for r in rows], style, marker="o",
                             label=prefix + split)
            if all(f"{split}_acc" in r for r in rows):
                ax_acc.plot(epochs, [r[f"{split}_acc"] for r in rows], style, marker="o",
                            label=prefix + split)
        if all("lr" in r for r in rows):
            ax_lr.plot(epochs, [r["lr"] for r in rows], marker="o", label=prefix + "lr")
    for ax, title in ((ax_loss, "loss"), (ax_acc, "accuracy"), (ax_lr, "learning rate")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no 1.5
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(", ".join(label for label, _ in runs))
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(args.out))
    if args.tmp:
        tmp = args.tmp
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    else:
        fd, tmp = tempfile.mkstemp(prefix=".curves-", suffix=".png", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, args.out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())

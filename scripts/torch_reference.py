#!/usr/bin/env python3
# Copied from shared/reference/torch_seed.py so that it travels with the repository (GPU machines
# receive only the repo); keep the two identical apart from this note and the GPU benchmark's
# options --precision and --nvml (scripts/bench_gpu.sh), which leave the default run unchanged.
"""Reference: the tutorial's PyTorch CNN trained the tutorial's way, timed, for comparison with gputrain.

Network: conv 3x3 pad 1 (16) -> ReLU -> conv 3x3 pad 1 (32) -> ReLU -> flatten -> linear 256 -> ReLU
-> linear 10, input channels and size taken from the data. SGD lr 0.01 momentum 0.5, batch 64,
cross-entropy. Prints one JSON line per epoch: training seconds, images/s, test accuracy and loss.

Data: --data DIR holding Fashion-MNIST/MNIST IDX files (train-images-idx3-ubyte[.gz], ...) or the
CIFAR-10 binary files (data_batch_1.bin ... test_batch.bin).

Modes:
  --mode loader    the tutorial's loop: a DataLoader over CPU tensors, each batch moved with .to(device)
  --mode resident  the whole data set on the device first, batches gathered there
  --compile        wrap the model in torch.compile (PyTorch 2.x)

GPU benchmark options (scripts/bench_gpu.sh; without them PyTorch's own defaults apply):
  --precision fp32   TF32 off in cuDNN and cuBLAS (torch.backends.{cudnn,cuda.matmul}.allow_tf32)
  --precision tf32   TF32 on in both
  --precision bf16   forward and loss under torch.autocast(bfloat16), TF32 off for what stays FP32
  --nvml             sample the GPU's NVML busy % (pynvml) every 50 ms while training; the epoch
                     line gets gpu_busy_percent, the mean (as gputrain's metrics.jsonl reports it)

usage: torch_seed.py [--data DIR] [--epochs N] [--batch 64] [--threads 2] [--limit N] [--mode M]
                     [--precision fp32|tf32|bf16] [--nvml]
"""
import argparse, contextlib, gzip, json, os, struct, threading, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path):
    if not os.path.exists(path) and os.path.exists(path + ".gz"):
        path += ".gz"
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def read_cifar(paths):
    raw = np.concatenate([np.fromfile(p, dtype=np.uint8).reshape(-1, 3073) for p in paths])
    return raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0]


def load(d):
    if os.path.exists(os.path.join(d, "data_batch_1.bin")):
        xtr, ytr = read_cifar([os.path.join(d, f"data_batch_{i}.bin") for i in range(1, 6)])
        xte, yte = read_cifar([os.path.join(d, "test_batch.bin")])
        return xtr, ytr, xte, yte
    xtr = read_idx(os.path.join(d, "train-images-idx3-ubyte"))[:, None]
    ytr = read_idx(os.path.join(d, "train-labels-idx1-ubyte"))
    xte = read_idx(os.path.join(d, "t10k-images-idx3-ubyte"))[:, None]
    yte = read_idx(os.path.join(d, "t10k-labels-idx1-ubyte"))
    return xtr, ytr, xte, yte


class BusySampler:
    """Mean NVML GPU utilization over a region, sampled every period_s from a thread. No pynvml or
    no NVML: mean() is None."""

    def __init__(self, device_index, period_s=0.05):
        self.handle, self.period_s, self.samples = None, period_s, []
        try:
            import pynvml
            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
            pynvml.nvmlDeviceGetUtilizationRates(self.handle)
        except Exception:
            self.handle = None

    @contextlib.contextmanager
    def region(self):
        self.samples = []
        if self.handle is None:
            yield
            return
        stop = threading.Event()

        def run():
            while not stop.is_set():
                try:
                    self.samples.append(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)
                except Exception:
                    pass
                stop.wait(self.period_s)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join()

    def mean(self):
        return sum(self.samples) / len(self.samples) if self.samples else None


class Net(nn.Module):
    def __init__(self, c, h, w):
        super().__init__()
        self.conv1 = nn.Conv2d(c, 16, 3, 1, 1)
        self.conv2 = nn.Conv2d(16, 32, 3, 1, 1)
        self.fc1 = nn.Linear(32 * h * w, 256)
        self.fc2 = nn.Linear(256, 10)
        self.flat = 32 * h * w

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = x.view(-1, self.flat)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--limit", type=int, default=0, help="use only the first N training images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mode", choices=["loader", "resident"], default="resident")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--precision", choices=["fp32", "tf32", "bf16"], default=None)
    ap.add_argument("--nvml", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if a.precision is not None:
        tf32 = a.precision == "tf32"
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
    autocast = (lambda: torch.autocast(device_type=dev.type, dtype=torch.bfloat16)) \
        if a.precision == "bf16" else contextlib.nullcontext
    busy = BusySampler(torch.cuda.current_device()) if a.nvml and dev.type == "cuda" else None
    xtr, ytr, xte, yte = load(a.data)
    if a.limit:
        xtr, ytr = xtr[:a.limit], ytr[:a.limit]
    mean, std = xtr.mean() / 255.0, xtr.std() / 255.0
    norm = lambda x: (torch.from_numpy(x.astype(np.float32) / 255.0) - mean) / std
    Xtr, Ytr = norm(xtr), torch.from_numpy(ytr.astype(np.int64))
    Xte, Yte = norm(xte).to(dev), torch.from_numpy(yte.astype(np.int64)).to(dev)
    if a.mode == "resident":
        Xtr, Ytr = Xtr.to(dev), Ytr.to(dev)
    _, c, h, w = Xtr.shape
    model = Net(c, h, w).to(dev)
    step_model = torch.compile(model) if a.compile else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    crit = nn.CrossEntropyLoss()
    n = Xtr.shape[0]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(Xtr, Ytr), batch_size=a.batch,
                                         shuffle=True) if a.mode == "loader" else None
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for epoch in range(a.epochs):
        model.train()
        sync()
        with busy.region() if busy is not None else contextlib.nullcontext():
            t0 = time.perf_counter()
            if loader is not None:
                batches = ((x.to(dev), y.to(dev)) for x, y in loader)
            else:
                perm = torch.randperm(n, device=dev)
                batches = ((Xtr[perm[i:i + a.batch]], Ytr[perm[i:i + a.batch]])
                           for i in range(0, n, a.batch))
            for data, target in batches:
                opt.zero_grad()
                with autocast():
                    loss = crit(step_model(data), target)
                loss.backward()
                opt.step()
            sync()
            dt = time.perf_counter() - t0
        model.eval()
        correct, tl = 0, 0.0
        with torch.no_grad():
            for i in range(0, Xte.shape[0], 1000):
                out = model(Xte[i:i + 1000])
                tl += F.cross_entropy(out, Yte[i:i + 1000], reduction="sum").item()
                correct += (out.argmax(1) == Yte[i:i + 1000]).sum().item()
        line = {"peer": "pytorch-" + torch.__version__, "device": dev.type, "mode": a.mode,
                "compile": a.compile, "batch": a.batch, "epoch": epoch + 1, "train_s": round(dt, 3),
                "images_per_s": round(n / dt, 1), "test_acc": correct / Xte.shape[0],
                "test_loss": tl / Xte.shape[0]}
        if a.precision is not None:
            line["precision"] = a.precision
        if busy is not None:
            line["gpu_busy_percent"] = busy.mean()
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()

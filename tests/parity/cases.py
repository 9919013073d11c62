"""The parity cases, shared by test_parity.py (CPU backend) and test_parity_cuda.py (CUDA backend):
architectures, data, trajectories, and the cached PyTorch oracle for each."""
from pathlib import Path

import numpy as np
import torch

import parity_lib as pl
import safetensors_io

FASHION_MEAN, FASHION_STD = [0.286], [0.353]
CIFAR_MEAN, CIFAR_STD = [0.5, 0.29, 0.45], [0.29, 0.1, 0.2]

ARCHS = {
    "tutorial-28": dict(input=(1, 28, 28), layers=pl.TUTORIAL, data="fashion"),
    "tutorial-32x3": dict(input=(3, 32, 32), layers=pl.TUTORIAL, data="cifar"),
    "pooled-28": dict(input=(1, 28, 28), layers=pl.POOLED, data="fashion"),
    "linear-28": dict(input=(1, 28, 28), layers=pl.LINEAR_ONLY, data="fashion"),
}

# name: (arch, init seed, train images, batch, epochs, lr, momentum, weight decay, nesterov)
TRAJECTORIES = {
    # the acceptance case: 16 steps, lr 0.01, momentum 0.5, batch 64, the first 1024 images in order
    "accept":            ("tutorial-28", 1, 1024, 64, 1, 0.01, 0.5, 0.0, False),
    "sgd-plain":         ("tutorial-28", 2, 256, 64, 1, 0.05, 0.0, 0.0, False),
    "momentum-wd":       ("tutorial-28", 3, 256, 64, 1, 0.05, 0.5, 0.05, False),
    "nesterov":          ("tutorial-28", 4, 256, 64, 1, 0.02, 0.9, 0.0, True),
    # 200 = 4*48 + 8: the last step is 8 images
    "nesterov-wd-partial": ("tutorial-28", 5, 200, 48, 1, 0.02, 0.9, 0.01, True),
    # 1000 = 15*64 + 40: the acceptance setting with a partial last batch of 40
    "partial-1000":      ("tutorial-28", 6, 1000, 64, 1, 0.01, 0.5, 0.0, False),
    # 96 = 64 + 32, twice: momentum carries over the epoch boundary, partial batch mid-run
    "epochs-2":          ("tutorial-28", 7, 96, 64, 2, 0.02, 0.5, 0.01, False),
    # 100 images over CIFAR files of 40 records: data_batch_1, _2 and half of _3; last batch 4
    "tutorial-32x3":     ("tutorial-32x3", 8, 100, 32, 1, 0.01, 0.5, 0.0, False),
    "pooled-28":         ("pooled-28", 9, 300, 64, 1, 0.05, 0.9, 0.001, True),
    "linear-28":         ("linear-28", 10, 300, 64, 1, 0.05, 0.5, 0.001, False),
}


class Env:
    """Files shared by one test module: the CIFAR set and one config per architecture."""

    def __init__(self, root):
        self.root = Path(root)
        self.cifar_dir = pl.write_cifar(str(self.root / "cifar"), per_batch=40, test=64)
        self.configs = {}
        for name, a in ARCHS.items():
            if a["data"] == "fashion":
                self.configs[name] = pl.write_config(self.root / f"{name}.yaml", a["input"], a["layers"], pl.FASHION_DIR)
            else:
                self.configs[name] = pl.write_config(self.root / f"{name}.yaml", a["input"], a["layers"],
                                                     self.cifar_dir, "cifar10")
        self._oracle = {}

    def data(self, arch, split, n):
        if ARCHS[arch]["data"] == "fashion":
            return pl.fashion(split, n)
        return pl.cifar(self.cifar_dir, split, n)

    def norm(self, arch):
        return (FASHION_MEAN, FASHION_STD) if ARCHS[arch]["data"] == "fashion" else (CIFAR_MEAN, CIFAR_STD)

    def init_weights(self, arch, seed, metadata=None):
        """PyTorch's default init under torch.manual_seed(seed), written with our writer in reverse
        state_dict order (gputrain must go by name, not position), as (path, state)."""
        a = ARCHS[arch]
        state = pl.state_numpy(pl.make_net(a["input"], a["layers"], seed))
        path = self.root / f"init-{arch}-{seed}{'-meta' if metadata else ''}.safetensors"
        meta = {"format": "pt"}
        meta.update(metadata or {})
        safetensors_io.write(path, state, metadata=meta, order=list(reversed(list(state))))
        return path, state

    # ---- forward -------------------------------------------------------------------------------
    def forward_oracle(self, arch, seed, count=64, mutant=None, mean=None, std=None):
        a = ARCHS[arch]
        m, s = self.norm(arch)
        m, s = mean if mean is not None else m, std if std is not None else s
        x, y = self.data(arch, "test", count)
        net = pl.make_net(a["input"], a["layers"], seed, mutant=mutant if mutant in ("flatten_hwc", "conv_flipped_kernel") else None)
        norm_mutant = mutant if mutant in ("no_normalization", "normalize_raw_pixels", "mean_only") else None
        logits = pl.torch_logits(net, pl.normalize(x, m, s, norm_mutant))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y)).item()
        return logits.numpy(), y, loss

    # ---- trajectories --------------------------------------------------------------------------
    def trajectory_inputs(self, case):
        arch, seed, n, batch, epochs, lr, mu, wd, nest = TRAJECTORIES[case]
        x, y = self.data(arch, "train", n)
        m, s = self.norm(arch)
        return pl.normalize(x, m, s), torch.from_numpy(y)

    def trajectory_oracle(self, case, mutant=None, manual=False, dtype=torch.float32):
        key = (case, mutant, manual, dtype)
        if key not in self._oracle:
            arch, seed, n, batch, epochs, lr, mu, wd, nest = TRAJECTORIES[case]
            a = ARCHS[arch]
            _, init = self.init_weights(arch, seed)
            x, y = self.trajectory_inputs(case)
            self._oracle[key] = pl.torch_train(a["input"], a["layers"], init, x, y, batch=batch, lr=lr,
                                               momentum=mu, weight_decay=wd, nesterov=nest, epochs=epochs,
                                               mutant=mutant, manual=manual, dtype=dtype)
        return self._oracle[key]

    def trajectory_gputrain(self, case, device="cpu", extra_args=()):
        arch, seed, n, batch, epochs, lr, mu, wd, nest = TRAJECTORIES[case]
        init_path, _ = self.init_weights(arch, seed)
        m, s = self.norm(arch)
        out = self.root / f"run-{case}-{device}{''.join(a.strip('-') for a in extra_args)}"
        tensors, meta = pl.train(self.configs[arch], out, init=init_path, device=device, extra_args=extra_args,
                                 train__shuffle=False, data__train_limit=n, data__test_limit=64,
                                 data__mean=m, data__std=s, train__epochs=epochs, train__batch_size=batch,
                                 optimizer__lr=lr, optimizer__momentum=mu, optimizer__weight_decay=wd,
                                 optimizer__nesterov=nest)
        return tensors, meta


def steps_of(case):
    arch, seed, n, batch, epochs, *_ = TRAJECTORIES[case]
    return epochs * -(-n // batch)


def check_eval(case, result, dump, ref_logits, ref_labels, ref_loss, tol):
    """gputrain eval's JSON and logits dump against PyTorch's logits on the same images."""
    n, classes = ref_logits.shape
    assert result.get("samples") == n, f"eval samples {result.get('samples')} != {n}"
    assert "logits" in dump and "labels" in dump, f"dump holds {sorted(dump)}, expected logits and labels"
    logits, labels = dump["logits"], dump["labels"]
    assert logits.dtype == np.float32 and logits.shape == (n, classes), f"logits {logits.dtype} {logits.shape}"
    assert labels.shape == (n,), f"labels shape {labels.shape}"
    assert np.array_equal(labels.astype(np.int64), ref_labels), "dumped labels differ from the data set's"
    r = pl.report(case, "logits max rel diff", pl.rel(logits, ref_logits), tol)
    assert r <= tol, f"{case}: logits rel diff {r:.3g} > {tol:.3g}"
    lr_ = pl.report(case, "mean CE loss rel diff", abs(result["loss"] - ref_loss) / abs(ref_loss), tol)
    assert lr_ <= tol, f"{case}: eval loss {result['loss']!r} vs PyTorch {ref_loss!r} (rel {lr_:.3g})"
    # predictions: equal except where PyTorch itself has a near-tie between the top two logits
    pred_t, pred_g = ref_logits.argmax(1), logits.argmax(1)
    top2 = np.sort(ref_logits, axis=1)[:, -2:]
    margin = (top2[:, 1] - top2[:, 0]) / np.abs(ref_logits).max()
    bad = np.nonzero((pred_t != pred_g) & (margin > 10 * tol))[0]
    assert bad.size == 0, f"{case}: predictions differ on samples {bad[:10].tolist()} (not near-ties)"
    pred = pred_g if np.any(pred_t != pred_g) else pred_t
    acc = float(np.mean(pred == ref_labels))
    assert abs(result["accuracy"] - acc) <= 1e-9, f"{case}: eval accuracy {result['accuracy']!r}, PyTorch {acc!r}"
    conf = np.zeros((classes, classes), np.int64)
    np.add.at(conf, (ref_labels, pred), 1)
    assert np.array_equal(np.asarray(result["confusion"], np.int64), conf), \
        f"{case}: confusion [true][pred] {result['confusion']} != {conf.tolist()}"
    pca = result["per_class_accuracy"]
    assert len(pca) == classes, f"per_class_accuracy has {len(pca)} entries, expected {classes}"
    for c in range(classes):
        if conf[c].sum():
            assert abs(pca[c] - conf[c, c] / conf[c].sum()) <= 1e-9, f"{case}: per_class_accuracy[{c}] = {pca[c]}"
    return r

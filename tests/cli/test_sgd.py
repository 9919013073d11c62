"""torch.optim.SGD semantics end to end: a linear model (flatten -> linear) started from --init
weights, trained a few steps in file order, against the same steps computed here in NumPy."""


import numpy as np
import pytest

import cli_helpers as h

LAYERS = [{"type": "flatten"}, {"type": "linear", "name": "fc", "out_features": 10}]
MEAN, STD = 0.4, 0.3
LIMIT, BATCH = 80, 32  # batches of 32, 32 and 16: the last holds the remainder


def reference_sgd(w, b, x, y, lr, momentum, weight_decay, nesterov, epochs):
    w, b = w.astype(np.float64), b.astype(np.float64)
    buf = None
    for _ in range(epochs):
        for first in range(0, len(y), BATCH):
            xb, yb = x[first:first + BATCH], y[first:first + BATCH]
            z = xb @ w.T + b
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(yb)), yb] -= 1.0
            p /= len(yb)  # mean over the batch's own samples
            grads = [p.T @ xb, p.sum(axis=0)]
            params = [w, b]
            grads = [g + weight_decay * q for g, q in zip(grads, params)]
            if momentum:
                buf = [g.copy() for g in grads] if buf is None else \
                    [momentum * m + g for m, g in zip(buf, grads)]
                grads = [g + momentum * m for g, m in zip(grads, buf)] if nesterov else buf
            w, b = w - lr * grads[0], b - lr * grads[1]
    return w, b


@pytest.mark.parametrize("momentum,nesterov,weight_decay", [
    (0.0, False, 0.0), (0.9, False, 0.0), (0.9, True, 0.0), (0.5, False, 0.01), (0.8, True, 0.05)])
def test_sgd_steps_match_reference(momentum, nesterov, weight_decay, make_config, dataset,
                                   tmp_path):
    rng = np.random.default_rng(21)
    w0 = rng.uniform(-0.05, 0.05, size=(10, h.SIDE * h.SIDE)).astype(np.float32)
    b0 = rng.uniform(-0.05, 0.05, size=10).astype(np.float32)
    init = tmp_path / "init.safetensors"
    h.write_safetensors(init, {"fc.weight": w0, "fc.bias": b0})
    cfg = make_config(layers=LAYERS, mean=[MEAN], std=[STD], lr=0.1, momentum=momentum,
                      weight_decay=weight_decay, epochs=2, batch_size=BATCH, shuffle=False,
                      train_limit=LIMIT)
    cfg.write_text(cfg.read_text().replace("nesterov: false", f"nesterov: {str(nesterov).lower()}"))
    out = tmp_path / "out"
    h.assert_ok(h.run_gputrain(["train", "--config", cfg, "--out", out, "--quiet", "--init", init],
                               cwd=tmp_path))
    x = (dataset.arrays["train_images"][:LIMIT].reshape(LIMIT, -1) / 255.0 - MEAN) / STD
    y = dataset.arrays["train_labels"][:LIMIT].astype(np.int64)
    w, b = reference_sgd(w0, b0, x, y, 0.1, momentum, weight_decay, nesterov, epochs=2)
    st = h.read_safetensors(out / "model.safetensors")
    assert np.abs(w - w0).max() > 1e-3, "the reference moved the weights too little to compare"
    np.testing.assert_allclose(st.tensors["fc.weight"], w, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(st.tensors["fc.bias"], b, rtol=1e-4, atol=2e-5)
    metrics = h.read_metrics(out / "metrics.jsonl")
    assert [m["steps"] for m in metrics][0] == 3

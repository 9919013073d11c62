"""Parity of the training recipes (issue 10) with PyTorch: AdamW, SGD under each schedule with warmup,
label smoothing, gradient clipping and a resume in the middle of a warmup — worst relative weight
difference after >= 16 steps from the same initial weights and image order — and the learning rate
of every step of every schedule against torch.optim.lr_scheduler's get_last_lr().

The PyTorch side is the reference recipe written the ordinary way: torch.optim.AdamW / SGD,
F.cross_entropy(label_smoothing=…), torch.nn.utils.clip_grad_norm_, LinearLR (warmup) stepped per
iteration with StepLR / MultiStepLR stepped per epoch, or LinearLR then CosineAnnealingLR in a
SequentialLR stepped per iteration.
"""
import json
import os
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cases
import parity_lib as pl

TRAJ_TOL = 1e-4
LR_TOL = 1e-7
ARCH = "tutorial-28"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return cases.Env(tmp_path_factory.mktemp("parity-recipes"))


# ------------------------------------------------------------------------------------------------
# the PyTorch reference
def make_schedulers(opt, schedule, steps_per_epoch, total_steps):
    """(per-iteration schedulers, per-epoch schedulers) for gputrain's `schedule` section."""
    if not schedule:
        return [], []
    kind = schedule.get("type", "constant")
    f = schedule.get("warmup_start_factor", 0.1)
    W = int(round(schedule.get("warmup_epochs", 0.0) * steps_per_epoch))
    sched = torch.optim.lr_scheduler
    per_iter, per_epoch = [], []
    if kind == "cosine":
        cosine_args = dict(T_max=total_steps - W, eta_min=schedule.get("eta_min", 0.0))
        if W > 0:
            warm = sched.LinearLR(opt, start_factor=f, end_factor=1.0, total_iters=W)
            cos = sched.CosineAnnealingLR(opt, **cosine_args)
            per_iter.append(sched.SequentialLR(opt, [warm, cos], milestones=[W]))
        else:
            per_iter.append(sched.CosineAnnealingLR(opt, **cosine_args))
        return per_iter, per_epoch
    if W > 0:
        per_iter.append(sched.LinearLR(opt, start_factor=f, end_factor=1.0, total_iters=W))
    if kind == "step":
        per_epoch.append(sched.StepLR(opt, step_size=schedule["step_size"],
                                      gamma=schedule.get("gamma", 0.1)))
    elif kind == "multistep":
        per_epoch.append(sched.MultiStepLR(opt, milestones=schedule["milestones"],
                                           gamma=schedule.get("gamma", 0.1)))
    return per_iter, per_epoch


def torch_recipe(init, x, y, *, batch, epochs, lr, optimizer="sgd", momentum=0.0, weight_decay=0.0,
                 nesterov=False, betas=(0.9, 0.999), eps=1e-8, schedule=None, label_smoothing=0.0,
                 grad_clip=0.0, dtype=torch.float32):
    """Trains the tutorial net from `init` on x, y in order; returns (state as float64 numpy,
    list of the global gradient norms, list of the lr of every step). dtype=torch.float64: the
    same recipe in double, the exact trajectory that float32 runs approximate."""
    a = cases.ARCHS[ARCH]
    net = pl.SpecNet(a["input"], a["layers"])
    pl.load_state(net, init)
    net = net.to(dtype)
    x = x.to(dtype)
    net.train()
    params = list(net.parameters())
    if optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                              nesterov=nesterov)
    n = x.shape[0]
    spe = -(-n // batch)
    per_iter, per_epoch = make_schedulers(opt, schedule, spe, spe * epochs)
    norms, lrs = [], []
    for _ in range(epochs):
        for i in range(0, n, batch):
            out = net(x[i:i + batch])
            loss = F.cross_entropy(out, y[i:i + batch], label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                norms.append(float(torch.nn.utils.clip_grad_norm_(params, grad_clip)))
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            for s in per_iter:
                s.step()
        for s in per_epoch:
            s.step()
    return {k: v.detach().double().numpy() for k, v in net.state_dict().items()}, norms, lrs


def gputrain_settings(n, batch, epochs, lr, optimizer="sgd", momentum=0.0, weight_decay=0.0,
                      nesterov=False, betas=(0.9, 0.999), eps=1e-8, schedule=None,
                      label_smoothing=0.0, grad_clip=0.0):
    m, s = cases.FASHION_MEAN, cases.FASHION_STD
    out = dict(train__shuffle=False, data__train_limit=n, data__test_limit=64, data__mean=m,
               data__std=s, train__epochs=epochs, train__batch_size=batch, optimizer__type=optimizer,
               optimizer__lr=lr, optimizer__momentum=momentum, optimizer__weight_decay=weight_decay,
               optimizer__nesterov=nesterov, optimizer__betas=list(betas), optimizer__eps=eps,
               optimizer__grad_clip=grad_clip, loss__label_smoothing=label_smoothing)
    for k, v in (schedule or {}).items():
        out["schedule__" + k] = v
    return out


# name: (init seed, train images, batch, epochs, recipe)
RECIPES = {
    "adamw": (21, 1024, 64, 1, dict(optimizer="adamw", lr=1e-3, weight_decay=0.0)),
    "adamw-wd": (22, 1024, 64, 1, dict(optimizer="adamw", lr=2e-3, weight_decay=0.05,
                                       betas=(0.8, 0.99), eps=1e-6)),
    # 512 images, batch 64, 2 epochs: 16 steps; the decays happen at the epoch boundary
    "sgd-step-warmup": (23, 512, 64, 2, dict(lr=0.05, momentum=0.9, schedule=dict(
        type="step", step_size=1, gamma=0.5, warmup_epochs=0.5, warmup_start_factor=0.2))),
    "sgd-multistep-warmup": (24, 512, 64, 2, dict(lr=0.05, momentum=0.5, weight_decay=0.01, schedule=dict(
        type="multistep", milestones=[1], gamma=0.3, warmup_epochs=0.75))),
    # 1000 = 15*64 + 40: a partial last batch; cosine over 16 steps after 4 of warmup
    "sgd-cosine-warmup": (25, 1000, 64, 1, dict(lr=0.05, momentum=0.9, nesterov=True, schedule=dict(
        type="cosine", warmup_epochs=0.25, eta_min=0.005))),
    "sgd-constant-warmup": (26, 1024, 64, 1, dict(lr=0.05, momentum=0.5, schedule=dict(
        type="constant", warmup_epochs=0.5))),
    "label-smoothing": (27, 1024, 64, 1, dict(lr=0.05, momentum=0.5, label_smoothing=0.1)),
    "adamw-cosine-smoothing": (28, 1024, 64, 1, dict(optimizer="adamw", lr=2e-3, label_smoothing=0.2,
                                                     schedule=dict(type="cosine", warmup_epochs=0.25))),
}


# Why some cases cannot meet TRAJ_TOL, and what they are held to instead (measured on this CPU,
# 2 threads, OpenBLAS; the figures of the issue-10 notes):
#
# 1. ReLU kinks. A batch of 64 puts ~2.4M pre-activations through ReLUs per step; about one of them
#    lies within float32 rounding of 0, and any two float32 implementations (different summation
#    orders) may put it on different sides. That passes or blocks one gradient term: the gradient
#    of every layer before that ReLU moves by about one term of its sum (~1e-3 of its largest
#    element), and an fc1 flip moves fc1.bias by several 1e-3 of its (small) scale. Measured: in
#    sgd-constant-warmup PyTorch's own float32 run leaves its float64 run at step 13 (1.1e-4 ->
#    2.8e-3, fc1.bias) while gputrain is still 5e-6 from float64; at step 16 all three are ~5.5e-3
#    apart. grad-clip (6.1e-3) and label-smoothing (1.9e-4) likewise: gputrain's distance to
#    PyTorch float32 equals PyTorch float32's own distance to float64 (ratio 1.0, 1.0, 1.0).
#    Rule for SGD: a case over TRAJ_TOL passes if it is within 2x the distance between PyTorch's
#    float32 and float64 runs of the same recipe (no float32 implementation can be expected closer
#    to PyTorch than PyTorch is to exact arithmetic); the test measures that distance each time.
#
# 2. AdamW (the "eps region"). The update lr * m/(sqrt(v) + eps) normalizes each element:
#    an element whose gradient is near zero (a sum that cancels to ~its rounding error, or that a
#    flipped ReLU changes) moves by up to ~lr whatever its gradient's size, so rounding-level
#    differences become lr-sized weight differences in a few elements. Measured: adamw (eps 1e-8)
#    differs from PyTorch by 2.1e-3, PyTorch float32 from float64 by 2.6e-3, with the same
#    per-element distribution (median 5e-7, 99th percentile 2e-5 in both comparisons); for
#    adamw-cosine-smoothing PyTorch float32 vs float64 is 9.4e-2 (gputrain vs PyTorch 1.4e-3). In
#    adamw-wd (seed 22) one conv2 pre-activation of step 1 is 3.7e-8 (2.6e-8 of the layer's
#    largest): gputrain's sums put it below 0; the float64 gradient with that single ReLU mask
#    flipped equals gputrain's first gradient to 5e-7 (unflipped: 5e-4), and AdamW turns the flip
#    into 1.2e-2 after 16 steps (2.1e-3 after step 1), while 1-ulp perturbations of the initial
#    weights move PyTorch's own float32 run by 1e-4 .. 7e-4 (no flip that large) — the flip
#    happened only in gputrain's rounding, since a BLAS build change (it was 5.9e-5 before).
#    Float64 is no yardstick for AdamW (its eps region differs systematically), so AdamW cases are
#    held to two bounds: worst element <= ADAMW_WORST_TOL, and the median element difference per
#    tensor <= ADAMW_MEDIAN_TOL. The bulk of the elements (gradients well away from 0) follow
#    PyTorch to float32 rounding; any wrong rule moves them all. Mutants of adamw-wd in PyTorch
#    itself (weight decay 0.05 -> 0.04, lr x1.02, beta2 0.99 -> 0.995, eps 1e-6 -> 1e-7) give
#    worst 0.41 .. 0.90 and median 2.7e-4 .. 8.6e-3; gputrain: worst <= 1.2e-2, median <= 6e-6.
#    The bounds sit between the two, about 10x from the mutants and 4x from gputrain's figures.
ADAMW_WORST_TOL = 5e-2
ADAMW_MEDIAN_TOL = 3e-5
SGD_SENSITIVITY_FACTOR = 2.0


def median_rel(got, ref):
    """Max over tensors of the median element |got - ref| / max|ref| (per tensor)."""
    got, ref = pl.as_numpy_state(got), pl.as_numpy_state(ref)
    return max(float(np.median(np.abs(got[k] - ref[k]))) / float(np.max(np.abs(ref[k]))) for k in ref)


def check_weights(case, tensors, ref, init, steps, recipe, exact=None):
    """gputrain's weights against PyTorch's float32 run `ref` of `recipe`. exact(): PyTorch's
    float64 run of the same recipe, computed only when an SGD case is over TRAJ_TOL."""
    moved = min(pl.rel(ref[k], init[k]) for k in ref)
    assert moved >= 10 * TRAJ_TOL, f"{case}: the case must move every tensor beyond the tolerance"
    worst, where = pl.worst_rel(tensors, ref)
    what = f"max rel weight diff after {steps} steps"
    if recipe.get("optimizer") == "adamw":
        pl.report(f"recipe {case}", what, worst, ADAMW_WORST_TOL, f"({where}; AdamW, see above)")
        median = pl.report(f"recipe {case}", "median element rel diff (worst tensor)",
                           median_rel(tensors, ref), ADAMW_MEDIAN_TOL)
        assert worst <= ADAMW_WORST_TOL, f"{case}: weights differ from PyTorch's by {worst:.3g} ({where})"
        assert median <= ADAMW_MEDIAN_TOL, f"{case}: the median element differs by {median:.3g}"
        return
    if worst <= TRAJ_TOL:
        pl.report(f"recipe {case}", what, worst, TRAJ_TOL, f"({where})")
        return
    sensitivity = pl.worst_rel(ref, exact())[0]
    limit = SGD_SENSITIVITY_FACTOR * sensitivity
    pl.report(f"recipe {case}", what, worst, limit,
              f"({where}; over {TRAJ_TOL:.0e}: PyTorch float32 vs float64 {sensitivity:.3g})")
    assert worst <= limit, (f"{case}: weights differ from PyTorch's by {worst:.3g} ({where}), more "
                            f"than {SGD_SENSITIVITY_FACTOR}x PyTorch's own float32 error {sensitivity:.3g}")


def inputs(env, n):
    x, y = env.data(ARCH, "train", n)
    return pl.normalize(x, cases.FASHION_MEAN, cases.FASHION_STD), torch.from_numpy(y)


@pytest.mark.parametrize("case", list(RECIPES))
def test_recipe_trajectory(env, case):
    seed, n, batch, epochs, recipe = RECIPES[case]
    init_path, init = env.init_weights(ARCH, seed)
    x, y = inputs(env, n)
    ref, _, _ = torch_recipe(init, x, y, batch=batch, epochs=epochs, **recipe)
    tensors, _ = pl.train(env.configs[ARCH], env.root / f"recipe-{case}", init=init_path,
                          **gputrain_settings(n, batch, epochs, **recipe))
    exact = lambda: torch_recipe(init, x, y, batch=batch, epochs=epochs, dtype=torch.float64,
                                 **recipe)[0]
    check_weights(case, tensors, ref, init, epochs * -(-n // batch), recipe, exact)


def test_grad_clip_active_on_some_steps(env):
    seed, n, batch, epochs = 29, 1024, 64, 1
    recipe = dict(lr=0.1, momentum=0.5)
    init_path, init = env.init_weights(ARCH, seed)
    x, y = inputs(env, n)
    # The clip value: the median of the unclipped run's norms, so that some steps clip and some not.
    _, norms, _ = torch_recipe(init, x, y, batch=batch, epochs=epochs, grad_clip=1e9, **recipe)
    clip = float(np.median(norms))
    ref, norms, _ = torch_recipe(init, x, y, batch=batch, epochs=epochs, grad_clip=clip, **recipe)
    clipped = sum(1 for v in norms if v > clip)
    pl.report("recipe grad-clip", f"steps clipped of {len(norms)} (max_norm {clip:.4g})", clipped)
    assert 0 < clipped < len(norms), f"clipping must be active on some steps only: {norms}"
    out = env.root / "recipe-grad-clip"
    tensors, _ = pl.train(env.configs[ARCH], out, init=init_path,
                          **gputrain_settings(n, batch, epochs, grad_clip=clip, **recipe))
    exact = lambda: torch_recipe(init, x, y, batch=batch, epochs=epochs, grad_clip=clip,
                                 dtype=torch.float64, **recipe)[0]
    check_weights("grad-clip", tensors, ref, init, len(norms), recipe, exact)
    # metrics.jsonl's grad_norm: the epoch's mean norm before clipping
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    r = pl.report("recipe grad-clip", "grad_norm mean rel diff",
                  abs(last["grad_norm"] - np.mean(norms)) / np.mean(norms), TRAJ_TOL)
    assert r <= TRAJ_TOL, (last, norms)


def test_resume_in_the_middle_of_a_warmup(env):
    """4 epochs of 4 steps, a warmup of 3 epochs: early stopping (min_delta 1: nothing improves)
    ends the run after epoch 2, then after epoch 3, each time in the warmup; each stop is resumed
    from its checkpoint. The resumed run's weights equal PyTorch's uninterrupted 16 steps."""
    seed, n, batch, epochs = 30, 256, 64, 4
    recipe = dict(optimizer="adamw", lr=3e-3, weight_decay=0.01, schedule=dict(
        type="step", step_size=2, gamma=0.5, warmup_epochs=3, warmup_start_factor=0.1))
    init_path, init = env.init_weights(ARCH, seed)
    x, y = inputs(env, n)
    ref, _, _ = torch_recipe(init, x, y, batch=batch, epochs=epochs, **recipe)
    out = env.root / "recipe-resume-warmup"
    settings = gputrain_settings(n, batch, epochs, **recipe)
    settings.update(train__early_stopping__patience=1, train__early_stopping__min_delta=1.0)
    pl.train(env.configs[ARCH], out, init=init_path, **settings)
    ckpt = out / "checkpoint.safetensors"
    stops = []
    for _ in range(3):
        _, meta = pl.safetensors_io.read(ckpt)
        stops.append(int(meta["epoch"]))
        if int(meta["epoch"]) >= epochs:
            break
        pl.run(["train", "--resume", ckpt, "--quiet", "--set", f"train.threads={pl.THREADS}"])
    pl.report("recipe resume-in-warmup", "epochs at which the run stopped and resumed",
              float(len(stops)), note=str(stops))
    assert stops[:2] == [2, 3] and stops[-1] == epochs, stops
    tensors, _ = pl.safetensors_io.read(out / "model.safetensors")
    check_weights("resume-in-warmup", tensors, ref, init, epochs * n // batch, recipe)


# ------------------------------------------------------------------------------------------------
# the learning rate of every step against get_last_lr()
SCHEDULES = {
    "constant-warmup": dict(type="constant", warmup_epochs=1.4, warmup_start_factor=0.25),
    "step-warmup": dict(type="step", step_size=1, gamma=0.5, warmup_epochs=0.6),
    "multistep-warmup": dict(type="multistep", milestones=[1, 2], gamma=0.2, warmup_epochs=1.4),
    "cosine-warmup": dict(type="cosine", warmup_epochs=0.6, eta_min=0.001),
    "cosine": dict(type="cosine", eta_min=0.0),
    "step": dict(type="step", step_size=2, gamma=0.1),
}


def schedule_table(env, settings, images):
    tool = os.environ.get("GPUTRAIN_SCHEDULE_BIN")
    if not tool:
        cand = pl.REPO / "build" / "tests" / "gputrain_schedule_table"
        tool = str(cand) if cand.exists() else None
    if not tool:
        pytest.fail("set GPUTRAIN_SCHEDULE_BIN (ctest does) or build tests/tools/schedule_table")
    args = [tool, str(env.configs[ARCH]), str(images)]
    for k, v in settings.items():
        args.append(f"{k.replace('__', '.')}={pl.yaml_value(v)}")
    p = subprocess.run(args, capture_output=True, text=True, check=True)
    rows = [line.split() for line in p.stdout.splitlines()]
    return [float(r[1]) for r in rows], [float(r[2]) for r in rows]


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_lr_sequence_equals_pytorch_schedulers(env, name):
    # 200 images at batch 48: 5 steps per epoch, the last one of 8 images; 3 epochs
    n, batch, epochs, lr = 200, 48, 3, 0.1
    schedule = SCHEDULES[name]
    lrs, stored = schedule_table(env, gputrain_settings(n, batch, epochs, lr=lr, schedule=schedule), n)
    spe = -(-n // batch)
    assert len(lrs) == spe * epochs
    # PyTorch's schedulers alone, on a dummy parameter: get_last_lr() before each step
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    per_iter, per_epoch = make_schedulers(opt, schedule, spe, spe * epochs)
    want = []
    # get_last_lr() of the scheduler that stepped last (the last one built, before any step)
    last = (per_iter + per_epoch)[-1] if per_iter + per_epoch else None
    for _ in range(epochs):
        for _ in range(spe):
            want.append(last.get_last_lr()[0] if last is not None else opt.param_groups[0]["lr"])
            # the lr actually in the optimizer is the same value
            assert abs(opt.param_groups[0]["lr"] - want[-1]) <= 1e-15 * abs(want[-1]) + 1e-18
            opt.step()
            for s in per_iter:
                s.step()
                last = s
        for s in per_epoch:
            s.step()
            last = s
    worst = max(abs(a - b) / abs(b) for a, b in zip(lrs, want))
    pl.report(f"schedule {name}", f"max rel lr diff over {len(want)} steps", worst, LR_TOL)
    assert worst <= LR_TOL, f"{name}: gputrain {lrs} vs PyTorch {want}"
    # the table's float32 entries are the double values rounded
    assert all(abs(s - d) <= 6e-8 * abs(d) for s, d in zip(stored, lrs)), (stored, lrs)


# ------------------------------------------------------------------------------------------------
# the explanation of adamw-wd's figure, checked: its first gradient is exact up to the ReLU kinks
def relu_masks_gradient(init, x, y, flip=()):
    """The tutorial net's gradient of F.cross_entropy in float64, with each pre-activation's ReLU
    mask as computed except at `flip` ((layer, flat index) pairs, mask inverted); also returns the
    pre-activations scaled by their layer's largest |value|."""
    w = {k: torch.from_numpy(v).double().requires_grad_(True) for k, v in init.items()}
    scaled = []

    def relu(z, name):
        mask = (z > 0).double().reshape(-1)
        for layer, i in flip:
            if layer == name:
                mask[i] = 1.0 - mask[i]
        scaled.append((name, (z.detach() / z.detach().abs().max()).reshape(-1)))
        return z * mask.reshape(z.shape)

    h = relu(F.conv2d(x.double(), w["conv1.weight"], w["conv1.bias"], padding=1), "conv1")
    h = relu(F.conv2d(h, w["conv2.weight"], w["conv2.bias"], padding=1), "conv2")
    h = relu(F.linear(h.reshape(h.shape[0], -1), w["fc1.weight"], w["fc1.bias"]), "fc1")
    F.cross_entropy(F.linear(h, w["fc2.weight"], w["fc2.bias"]), y).backward()
    return {k: v.grad.numpy() for k, v in w.items()}, scaled


def test_first_gradient_is_exact_up_to_relu_kinks(env):
    """adamw-wd's first batch: gputrain's gradient equals the float64 gradient to float32 rounding
    once the ReLU decisions at pre-activations within float32 rounding of 0 are taken as gputrain
    took them (on this machine one conv2 pre-activation, 2.6e-8 of its layer's largest, falls on
    the other side: 5e-4 as computed, 5e-7 with that mask flipped). A wrong gradient matches
    neither way."""
    seed, n, batch, epochs, recipe = RECIPES["adamw-wd"]
    init_path, init = env.init_weights(ARCH, seed)
    x, y = inputs(env, batch)
    # gputrain's first gradient: one SGD step with momentum from v = 0 leaves v = g exactly.
    out = env.root / "recipe-adamw-wd-first-gradient"
    pl.train(env.configs[ARCH], out, init=init_path,
             **gputrain_settings(batch, batch, 1, lr=1e-9, momentum=0.9))
    state, _ = pl.safetensors_io.read(out / "checkpoint.safetensors")
    got = {k: state["momentum." + k] for k in init}
    exact, scaled = relu_masks_gradient(init, x, y)
    # The pre-activations within float32 rounding of 0 (relative to their layer's largest).
    kinks = sorted((float(z.abs()[i]), name, int(i)) for name, z in scaled
                   for i in torch.argsort(z.abs())[:4] if float(z.abs()[i]) < 3e-7)
    best = pl.report("recipe first-gradient", "vs float64, ReLU decisions as computed",
                     pl.worst_rel(got, exact)[0], note=f"({len(kinks)} pre-activations within "
                     "float32 rounding of 0)")
    for size, name, i in kinks:
        flipped = relu_masks_gradient(init, x, y, flip=[(name, i)])[0]
        best = min(best, pl.report("recipe first-gradient", f"vs float64 with the ReLU of {name}[{i}] "
                                   "flipped", pl.worst_rel(got, flipped)[0],
                                   note=f"(pre-activation {size:.2g} of the layer's largest)"))
    assert best <= 2e-6, f"gputrain's first gradient matches no ReLU resolution of float64's: {best:.3g}"

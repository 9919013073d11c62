"""The forward and trajectory parity cases against gputrain's CUDA backend (--device cuda). Skipped
where `gputrain info` reports no usable CUDA device (no GPU, or a build without the CUDA backend).
The oracle is the same PyTorch float32 CPU computation as for the CPU backend.

Tolerances (FP32 throughout; gputrain's CUDA backend does not use TF32):
  forward logits / loss   3e-5   cuDNN may pick Winograd/FFT/implicit-GEMM convolutions and cuBLAS
                                 split-K GEMMs: other summation orders and, for Winograd/FFT, transform
                                 rounding of a few ulp per output; over K = 25088-term dot products
                                 (fc1) that is ~1e-6..1e-5 of max|logit|, so 3e-5 leaves headroom
                                 without hiding a convention error (mutants differ by >= 0.3).
  weights after 16 steps  1e-4   the acceptance bar of the CPU backend: weights are dominated by the
                                 init, and PyTorch fp32 vs fp64 already differs by up to 1.6e-5 here.
  updates w - w0          2e-3   twice the CPU bar: per-step gradient noise of the convolution
                                 algorithms enters the updates directly.

train.precision tf32 / bf16 against the same FP32 oracle. Forward: relative to max |reference|, as
above. Trajectories: per tensor, relative L2 norm ||got - ref|| / ||ref|| (worst tensor), see below.
  tf32 forward            1e-2   TF32 rounds each conv/GEMM input to 10 mantissa bits (relative error
                                 <= 2^-11 = 4.9e-4 per input, ~1e-3 per product); with FP32
                                 accumulation the errors of a K-term dot product add up like a random
                                 walk, so a layer's output is off by ~1e-3 of its scale and 4-5
                                 layers compound to a few 1e-3: 1e-2 is the bound PyTorch's own TF32
                                 notes give for convnets, still 30x below a convention error (>= 0.3).
  bf16 forward            5e-2   BF16 keeps 8 significant bits: each conv/GEMM input is rounded by up
                                 to 2^-8 = 3.9e-3 (8x TF32's 2^-11), a product by 7.8e-3; convolutions
                                 also write their output as BF16 (cuDNN's BF16 configuration: another
                                 2^-8) before bias and ReLU in FP32. Sums stay FP32, so a layer is off
                                 by a few 1e-3 of its scale, and the net by about 1e-2 at most: 5e-2
                                 is 6x below a convention error.
  weights after the steps 1e-2 / 3e-2   relative L2 norm per tensor. Element-wise bounds do not hold
  updates w - w0          1.5e-1 / 3e-1  in reduced precision: a ReLU whose input lies within rounding
                                 of 0 takes the other branch, which moves one sample's whole term of a
                                 gradient sum (fc1's bias, 256 units, shows it most); once that
                                 happens the trajectories differ by an amount that no longer scales
                                 with the rounding (on the CPU, for one initialization, conv/GEMM
                                 inputs rounded to 14 mantissa bits gave the same fc1 difference as
                                 TF32's 10). The L2 norm spreads such a flip over the tensor.
Measured by emulating the arithmetic on the CPU (tests/tools/precision_emulation.cpp: the CPU ops
with BF16- or TF32-rounded conv and GEMM operands, BF16 conv outputs and conv gradients in bf16) for
the "accept" case's setup (tutorial net, Fashion-MNIST, 16 steps of 64, lr 0.01, momentum 0.5) over
10 uniform fan-in initializations (`OMP_NUM_THREADS=1 build/tests/gputrain_precision_emulation 16
SEED`, SEED 1..10), worst of the 10: forward 7.8e-4 (tf32) / 7.2e-3 (bf16); weights 3.7e-3 / 1.0e-2
relative L2 (element-wise: 7.3e-2 / 1.1e-1); updates 3.7e-2 / 1.0e-1 relative L2 (element-wise:
0.26 / 0.47); after 4 steps updates up to 5.7e-2 / 8.2e-2 (6 initializations). The bounds leave
2-3x over those. Not yet measured on a GPU; the first GPU run reports the actual values.
"""
import re
import subprocess

import numpy as np
import pytest
import torch

import cases
import parity_lib as pl
import test_parity_layers as layers_parity   # the issue-11 layer nets and their PyTorch oracles

FWD_TOL_CUDA = 3e-5
TRAJ_TOL_CUDA = 1e-4
UPDATE_TOL_CUDA = 2e-3
# train.precision -> bounds against FP32 PyTorch: forward (max element difference over max |ref|),
# weights after the trajectory and updates w - w0 (relative L2 norm per tensor; see the docstring).
PRECISION_TOLS = {"tf32": (1e-2, 1e-2, 1.5e-1), "bf16": (5e-2, 3e-2, 3e-1)}


def _cuda_available():
    try:
        p = subprocess.run([pl.gputrain_bin(), "info"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"gputrain info failed: {e}"
    text = p.stdout + p.stderr
    if p.returncode != 0:
        return False, f"gputrain info exited {p.returncode}: {text.strip()[:300]}"
    m = re.search(r"^cuda:\d+\s.*$", p.stdout, re.M)      # "cuda:0  NVIDIA H100 ...  compute capability 9.0"
    if m:
        return True, m.group(0)
    return False, text.strip()[:300]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    ok, why = _cuda_available()
    if not ok:
        pytest.skip(f"no CUDA device for gputrain: {why}")
    pl.report("cuda", "devices found", 1, note=why)
    return cases.Env(tmp_path_factory.mktemp("parity-cuda"))


@pytest.mark.parametrize("arch", list(cases.ARCHS))
def test_forward_cuda(env, arch, tmp_path):
    seed = 100 + list(cases.ARCHS).index(arch)
    w, _ = env.init_weights(arch, seed)
    m, s = env.norm(arch)
    logits, y, loss = env.forward_oracle(arch, seed)
    res, dump = pl.evaluate(env.configs[arch], w, tmp_path / "logits.safetensors", device="cuda",
                            data__test_limit=64, data__train_limit=64, data__mean=m, data__std=s)
    cases.check_eval(f"cuda forward {arch}", res, dump, logits, y, loss, FWD_TOL_CUDA)


CUDA_TRAJ = ["accept", "partial-1000", "nesterov-wd-partial", "epochs-2", "tutorial-32x3", "pooled-28", "linear-28"]


@pytest.mark.parametrize("graph", [True, False], ids=["graph", "no-graph"])
@pytest.mark.parametrize("case", CUDA_TRAJ)
def test_trajectory_cuda(env, case, graph):
    if not graph and case != "accept":
        pytest.skip("--no-graph only for the acceptance case")
    arch, seed, *_ = cases.TRAJECTORIES[case]
    tensors, _ = env.trajectory_gputrain(case, device="cuda", extra_args=() if graph else ("--no-graph",))
    ref = env.trajectory_oracle(case)
    _, init = env.init_weights(arch, seed)
    tag = f"cuda trajectory {case}{'' if graph else ' --no-graph'}"
    worst, where = pl.worst_rel(tensors, ref)
    pl.report(tag, f"max rel weight diff after {cases.steps_of(case)} steps", worst, TRAJ_TOL_CUDA, f"({where})")
    upd, uwhere = pl.worst_rel({k: tensors[k].astype(np.float64) - init[k] for k in init},
                               {k: ref[k] - init[k] for k in init})
    pl.report(tag, "max rel update diff", upd, UPDATE_TOL_CUDA, f"({uwhere})")
    assert worst <= TRAJ_TOL_CUDA, f"{case}: CUDA weights differ from PyTorch's by {worst:.3g} ({where})"
    assert upd <= UPDATE_TOL_CUDA, f"{case}: CUDA updates differ from PyTorch's by {upd:.3g} ({uwhere})"


@pytest.mark.parametrize("precision", list(PRECISION_TOLS))
@pytest.mark.parametrize("arch", list(cases.ARCHS))
def test_forward_cuda_reduced_precision(env, arch, precision, tmp_path):
    seed = 100 + list(cases.ARCHS).index(arch)
    w, _ = env.init_weights(arch, seed)
    m, s = env.norm(arch)
    logits, y, loss = env.forward_oracle(arch, seed)
    res, dump = pl.evaluate(env.configs[arch], w, tmp_path / "logits.safetensors", device="cuda",
                            data__test_limit=64, data__train_limit=64, data__mean=m, data__std=s,
                            train__precision=precision)
    cases.check_eval(f"cuda {precision} forward {arch}", res, dump, logits, y, loss,
                     PRECISION_TOLS[precision][0])


@pytest.mark.parametrize("precision", list(PRECISION_TOLS))
@pytest.mark.parametrize("case", ["accept", "tutorial-32x3"])
def test_trajectory_cuda_reduced_precision(env, case, precision):
    _, traj_tol, update_tol = PRECISION_TOLS[precision]
    arch, seed, *_ = cases.TRAJECTORIES[case]
    tensors, _ = env.trajectory_gputrain(case, device="cuda",
                                         extra_args=("--set", f"train.precision={precision}"))
    ref = env.trajectory_oracle(case)
    _, init = env.init_weights(arch, seed)
    tag = f"cuda {precision} trajectory {case}"
    worst, where = pl.worst_rel(tensors, ref, metric=pl.rel_l2)
    pl.report(tag, f"worst relative L2 weight diff after {cases.steps_of(case)} steps", worst, traj_tol,
              f"({where}; element-wise {pl.worst_rel(tensors, ref)[0]:.3g})")
    upd, uwhere = pl.worst_rel({k: tensors[k].astype(np.float64) - init[k] for k in init},
                               {k: ref[k] - init[k] for k in init}, metric=pl.rel_l2)
    pl.report(tag, "worst relative L2 update diff", upd, update_tol, f"({uwhere})")
    assert worst <= traj_tol, f"{case} {precision}: weights differ from PyTorch's by {worst:.3g} in L2 ({where})"
    assert upd <= update_tol, f"{case} {precision}: updates differ from PyTorch's by {upd:.3g} in L2 ({uwhere})"


# ---- the issue-11 layers (batchnorm2d, avgpool2d, global_avgpool, dropout) on the CUDA backend ----
# The nets and the PyTorch oracles of test_parity_layers.py, run with --device cuda. Bounds as above:
# the eval forward at FWD_TOL_CUDA; the trajectories at TRAJ_TOL_CUDA against float64 PyTorch, the
# batch-norm buffers (running statistics, num_batches_tracked) included: the batch statistics and
# their gradients are summed in double on the GPU too (kernels/batchnorm.cuh), so the only new
# difference to the CPU backend is the convolutions' summation order.


def test_layers_forward_cuda(env, tmp_path):
    net = layers_parity.randomized_bn_net(201, p=0.5)
    init, _ = layers_parity.write_init(tmp_path, net, "forward")
    config = pl.write_config(tmp_path / "bn-forward.yaml", layers_parity.INPUT, layers_parity.bn_layers(0.5),
                             pl.FASHION_DIR)
    x, y = pl.fashion("test", 64)
    mean, std = layers_parity.MEAN, layers_parity.STD
    logits = pl.torch_logits(net, pl.normalize(x, mean, std))   # eval: running stats, no dropout
    loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y)).item()
    res, dump = pl.evaluate(config, init, tmp_path / "logits.safetensors", device="cuda", data__test_limit=64,
                            data__train_limit=64, data__mean=mean, data__std=std)
    cases.check_eval("cuda layers forward (eval: running stats, dropout identity)", res, dump, logits.numpy(), y,
                     loss, FWD_TOL_CUDA)


def _train_layers(tmp_path, name, layers, init_path, n, batch, device, extra_args=(), **settings):
    config = pl.write_config(tmp_path / f"{name}.yaml", layers_parity.INPUT, layers, pl.FASHION_DIR)
    return pl.train(config, tmp_path / f"run-{name}-{device}", init=init_path, device=device,
                    extra_args=extra_args, train__shuffle=False, data__train_limit=n, data__test_limit=64,
                    data__mean=layers_parity.MEAN, data__std=layers_parity.STD, train__epochs=1,
                    train__batch_size=batch, **settings)[0]


@pytest.mark.parametrize("graph", [True, False], ids=["graph", "no-graph"])
@pytest.mark.parametrize("case", list(layers_parity.TRAJECTORIES))
def test_layers_trajectory_cuda(env, tmp_path, case, graph):
    if not graph and case != "bn-sgd-momentum":
        pytest.skip("--no-graph only for the first case")
    seed, n, batch, lr, mu, wd, decay_all = layers_parity.TRAJECTORIES[case]
    layers = layers_parity.bn_layers(0.0)
    init_path, init = layers_parity.write_init(tmp_path, layers_parity.randomized_bn_net(seed, p=0.0), case)
    x, y = pl.fashion("train", n)
    ref = layers_parity.torch_train(layers, init, pl.normalize(x, layers_parity.MEAN, layers_parity.STD),
                                    torch.from_numpy(y), dtype=torch.float64, batch=batch, lr=lr, momentum=mu,
                                    weight_decay=wd, decay_norm_and_bias=decay_all)
    tensors = _train_layers(tmp_path, case, layers, init_path, n, batch, "cuda",
                            extra_args=() if graph else ("--no-graph",), optimizer__lr=lr,
                            optimizer__momentum=mu, optimizer__weight_decay=wd,
                            optimizer__decay_norm_and_bias=decay_all)
    steps = -(-n // batch)
    for bn in ("bn1", "bn2", "bn3"):
        assert tensors[f"{bn}.num_batches_tracked"].dtype == np.int64
        assert int(tensors[f"{bn}.num_batches_tracked"]) == 7 + steps == int(ref[f"{bn}.num_batches_tracked"])
    tag = f"cuda layers trajectory {case}{'' if graph else ' --no-graph'}"
    worst, where = pl.worst_rel(tensors, ref)
    pl.report(tag, f"max rel diff to fp64 after {steps} steps (weights, BN buffers)", worst, TRAJ_TOL_CUDA,
              f"({where})")
    assert worst <= TRAJ_TOL_CUDA, f"{case}: CUDA state differs from PyTorch's by {worst:.3g} ({where})"


def test_dropout_drops_the_same_units_on_cpu_and_cuda(env, tmp_path):
    """Dropout's units are keyed by (train.seed, epoch, sample, layer, unit), not by a device's
    generator: 16 training steps with p = 0.5 give the same weights on both backends (to the
    trajectory bound), while another train.seed (the only thing it changes here: no shuffling, no
    augmentation, weights from --init) drops other units and gives other weights."""
    layers = layers_parity.bn_layers(0.5)
    init_path, _ = layers_parity.write_init(tmp_path, layers_parity.randomized_bn_net(221, p=0.5), "dropout")
    common = dict(optimizer__lr=0.05, optimizer__momentum=0.5)
    cuda = _train_layers(tmp_path, "dropout", layers, init_path, 512, 32, "cuda", train__seed=5, **common)
    cpu = _train_layers(tmp_path, "dropout", layers, init_path, 512, 32, "cpu", train__seed=5, **common)
    other = _train_layers(tmp_path, "dropout-seed6", layers, init_path, 512, 32, "cpu", train__seed=6, **common)
    same, where = pl.worst_rel(cuda, cpu)
    pl.report("cuda dropout", "CUDA vs CPU after 16 steps, p = 0.5, same seed", same, TRAJ_TOL_CUDA, f"({where})")
    apart = pl.report("cuda dropout", "CPU seed 5 vs seed 6 (other units dropped)", pl.worst_rel(other, cpu)[0],
                      10 * TRAJ_TOL_CUDA)
    assert same <= TRAJ_TOL_CUDA, f"CUDA and CPU trajectories with dropout differ by {same:.3g} ({where})"
    assert apart >= 10 * TRAJ_TOL_CUDA, "the dropout case cannot tell other masks apart"

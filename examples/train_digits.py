"""Train a LeNet-style CNN on scikit-learn's 8x8 handwritten digits with jaxconv's ops.

    python examples/train_digits.py                       # jaxconv ops, default epochs
    python examples/train_digits.py --ops both --plot loss.png
    python examples/train_digits.py --devices 4           # data parallel over 4 devices

The model (conv -> max_pool -> conv -> avg_pool -> dense) is written once, against a small
table of ops: ``--ops jaxconv`` runs it with ``jaxconv.conv``/``max_pool``/``avg_pool``,
``--ops lax`` with ``lax.conv_general_dilated``/``lax.reduce_window`` and JAX's own
gradients. From the same seed both train to the same loss curve up to float32 rounding.

``--devices N`` trains data parallel: the step is jitted with ``NamedSharding``s over a
one-axis ``jax.sharding.Mesh`` -- the batch split along it, parameters and optimiser state
replicated -- and JAX's partitioner adds the gradient all-reduce.
"""

# ruff: noqa: E402  (jax is imported after the command line is read; see below)

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

DEFAULT_EPOCHS = 10
DEFAULT_BATCH_SIZE = 64
DEFAULT_LR = 3e-3
SPLIT_SEED = 0  # the train/test split never changes, whatever --seed says
HOST_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train_digits.py",
        description=(
            "Train a LeNet-style CNN (conv -> max_pool -> conv -> avg_pool -> dense) with optax "
            "on scikit-learn's bundled 8x8 digits (no download), with jaxconv's ops or lax's, "
            "and print the test accuracy."
        ),
        epilog=(
            "Several devices on a CPU-only machine: XLA shows one CPU device unless "
            f"XLA_FLAGS={HOST_DEVICES_FLAG}=N is set before jax is imported. Run as a script, "
            "train_digits.py sets it for --devices N > 1 (it leaves an XLA_FLAGS that already "
            "names the flag alone); on a GPU machine the flag changes nothing and the first N "
            "accelerators are used."
        ),
    )
    parser.add_argument(
        "--ops",
        choices=("jaxconv", "lax", "both"),
        default="jaxconv",
        help="whose conv and pooling ops the model uses; 'both' trains the two from the same "
        "seed and reports how far their loss curves differ (default: %(default)s)",
    )
    parser.add_argument(
        "--epochs", type=_positive_int, default=DEFAULT_EPOCHS, help="default: %(default)s"
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=DEFAULT_BATCH_SIZE,
        help="a multiple of --devices (default: %(default)s)",
    )
    parser.add_argument(
        "--lr",
        type=_positive_float,
        default=DEFAULT_LR,
        help="Adam's learning rate (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds the initial weights and the batch order; the train/test split is fixed "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--plot", metavar="PATH", type=Path, help="write the loss curve(s) to this PNG file"
    )
    parser.add_argument(
        "--devices",
        type=_positive_int,
        default=1,
        metavar="N",
        help="train data parallel over N devices (default: %(default)s); see below for CPUs",
    )
    parser.add_argument(
        "--json",
        metavar="PATH",
        type=Path,
        help="write each run's per-step training losses and test accuracy to this JSON file",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def request_host_devices(n: int) -> None:
    """Ask XLA's CPU backend for ``n`` devices. Only takes effect before jax is imported."""
    flags = os.environ.get("XLA_FLAGS", "")
    if n > 1 and HOST_DEVICES_FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {HOST_DEVICES_FLAG}={n}".strip()


if __name__ == "__main__":
    # XLA reads XLA_FLAGS once, when jax starts: --devices must be known before `import jax`.
    # (Bad arguments and --help also exit here, before the slow imports.)
    request_host_devices(build_parser().parse_args().devices)

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxconv

# ---------------------------------------------------------------------------------------
# The model, written once against an ops table. Layout: NCHW activations, OIHW kernels.


class Ops(NamedTuple):
    conv: Callable  # (x (N, C, H, W), w (O, C, 3, 3), b (O,)) -> (N, O, H, W), "SAME" padding
    max_pool: Callable  # (N, C, H, W) -> (N, C, H // 2, W // 2), 2x2 windows, stride 2
    avg_pool: Callable  # the same windows, averaged


def _lax_conv(x, w, b):
    y = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
    return y + b.reshape(1, -1, 1, 1)


def _lax_pool(x, init, reducer):
    # A scalar `init` with lax.max / lax.add is what JAX recognises (and differentiates) as
    # max / sum pooling.
    return lax.reduce_window(x, init, reducer, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")


OPS = {
    "jaxconv": Ops(
        conv=lambda x, w, b: jaxconv.conv(x, w, b, padding="SAME"),
        max_pool=lambda x: jaxconv.max_pool(x, 2),
        avg_pool=lambda x: jaxconv.avg_pool(x, 2),
    ),
    "lax": Ops(
        conv=_lax_conv,
        max_pool=lambda x: _lax_pool(x, -jnp.inf, lax.max),
        avg_pool=lambda x: _lax_pool(x, 0.0, lax.add) / 4,
    ),
}


def init_params(seed: int) -> dict:
    """He-normal weights, zero biases: conv 1->16, conv 16->32, dense 32*2*2 -> 10.

    Drawn with NumPy, as JAX's own from-scratch MNIST example does: a few thousand numbers
    once, where `jax.random` would compile a threefry kernel per shape first.
    """
    rng = np.random.default_rng(seed)

    def he(shape, fan_in):
        return (rng.standard_normal(shape) * (2.0 / fan_in) ** 0.5).astype(np.float32)

    def zeros(n):
        return np.zeros(n, np.float32)

    return {
        "conv1": {"w": he((16, 1, 3, 3), 1 * 9), "b": zeros(16)},
        "conv2": {"w": he((32, 16, 3, 3), 16 * 9), "b": zeros(32)},
        "dense": {"w": he((32 * 2 * 2, 10), 32 * 2 * 2), "b": zeros(10)},
    }


def logits(params: dict, x: jax.Array, ops: Ops) -> jax.Array:
    """``x``: ``(N, 1, 8, 8)`` images -> ``(N, 10)`` class scores."""
    x = jax.nn.relu(ops.conv(x, params["conv1"]["w"], params["conv1"]["b"]))  # (N, 16, 8, 8)
    x = ops.max_pool(x)  # (N, 16, 4, 4)
    x = jax.nn.relu(ops.conv(x, params["conv2"]["w"], params["conv2"]["b"]))  # (N, 32, 4, 4)
    x = ops.avg_pool(x)  # (N, 32, 2, 2)
    return x.reshape(x.shape[0], -1) @ params["dense"]["w"] + params["dense"]["b"]


def loss_fn(params: dict, x: jax.Array, y: jax.Array, ops: Ops) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits(params, x, ops), y).mean()


# ---------------------------------------------------------------------------------------
# Data and training.


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """1437 training and 360 test images ``(N, 1, 8, 8)``, standardised, and their labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.2, random_state=SPLIT_SEED, stratify=labels
    )
    # Standardise with the training set's statistics. Centring also keeps the blank background
    # off the kinks of relu (a pre-activation of exactly 0) and max (exact ties): there an
    # FFT's rounding noise, which `auto` may pick for the first conv, would flip a derivative
    # and the jaxconv and lax curves would drift apart by more than rounding.
    mean, std = x_train.mean(), x_train.std()
    return (x_train - mean) / std, y_train, (x_test - mean) / std, y_test


class TrainResult(NamedTuple):
    ops: str
    losses: np.ndarray  # the training loss of every step, (epochs * steps_per_epoch,)
    steps_per_epoch: int
    test_accuracy: float
    seconds: float


def make_mesh(n_devices: int) -> Mesh:
    """A one-axis mesh ``("batch",)`` over the first ``n_devices`` devices."""
    devices = jax.devices()
    if len(devices) < n_devices:
        raise ValueError(
            f"`devices` asks for {n_devices} devices but jax sees {len(devices)}; on a CPU, set "
            f"XLA_FLAGS={HOST_DEVICES_FLAG}={n_devices} before importing jax"
        )
    return Mesh(np.array(devices[:n_devices]), ("batch",))


@functools.cache
def make_functions(ops: str, lr: float, mesh: Mesh) -> tuple:
    """The optimiser, the jitted training step and the jitted accuracy: built (and compiled)
    once per ops, learning rate and mesh, however many runs reuse them."""
    model_ops = OPS[ops]
    optimizer = optax.adam(lr)
    replicated = NamedSharding(mesh, P())
    batch_split = NamedSharding(mesh, P("batch"))

    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y, model_ops)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    # Parameters and optimiser state replicated, the batch split: JAX's partitioner inserts
    # the all-reduce of the gradients. (One sharding for a pytree applies to all its leaves.)
    step = jax.jit(
        step,
        in_shardings=(replicated, replicated, batch_split, batch_split),
        out_shardings=replicated,
        donate_argnums=(0, 1),
    )
    accuracy = jax.jit(lambda params, x, y: (logits(params, x, model_ops).argmax(-1) == y).mean())
    return optimizer, step, accuracy


def train(
    ops: str = "jaxconv",
    *,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    seed: int = 0,
    devices: int = 1,
    progress: bool = True,
) -> TrainResult:
    """Train from ``seed`` with ``OPS[ops]``; the last partial batch of each epoch is dropped."""
    start = time.perf_counter()
    x_train, y_train, x_test, y_test = load_data()
    mesh = make_mesh(devices)
    replicated = NamedSharding(mesh, P())
    batch_split = NamedSharding(mesh, P("batch"))  # split the leading (batch) axis
    optimizer, step, accuracy = make_functions(ops, lr, mesh)

    params = jax.device_put(init_params(seed), replicated)
    opt_state = jax.device_put(optimizer.init(params), replicated)
    rng = np.random.default_rng(seed)
    steps_per_epoch = len(x_train) // batch_size
    losses = []
    with _progress_bars(progress) as bars:
        for epoch in range(1, epochs + 1):
            task = bars.add_task(f"{ops} epoch {epoch}/{epochs}", total=steps_per_epoch, loss=0.0)
            order = rng.permutation(len(x_train))
            for i in range(steps_per_epoch):
                idx = order[i * batch_size : (i + 1) * batch_size]
                x = jax.device_put(x_train[idx], batch_split)
                y = jax.device_put(y_train[idx], batch_split)
                params, opt_state, loss = step(params, opt_state, x, y)
                losses.append(float(loss))
                bars.update(task, advance=1, loss=losses[-1])
    test_accuracy = float(accuracy(params, x_test, y_test))
    return TrainResult(
        ops,
        np.array(losses, np.float32),
        steps_per_epoch,
        test_accuracy,
        time.perf_counter() - start,
    )


def _progress_bars(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        disable=not enabled,
    )


def plot_losses(results: list[TrainResult], path: Path) -> None:
    """The per-step training loss of each run against epochs, log scale, as a PNG."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    for result, style in zip(results, ("-", "--"), strict=False):
        epochs = np.arange(1, len(result.losses) + 1) / result.steps_per_epoch
        ax.plot(
            epochs,
            result.losses,
            style,
            linewidth=1,
            label=f"{result.ops} ops (test accuracy {result.test_accuracy:.1%})",
        )
    ax.set(
        xlabel="epoch",
        ylabel="training loss (cross-entropy)",
        yscale="log",
        title="LeNet-style CNN on the 8x8 digits",
    )
    ax.legend()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size % args.devices:
        parser.error(
            f"--batch-size {args.batch_size} must be a multiple of --devices {args.devices}"
        )
    for option, path in (("--plot", args.plot), ("--json", args.json)):
        if path is not None and not path.parent.is_dir():
            parser.error(f"{option} {path}: directory {path.parent} does not exist")
    if len(jax.devices()) < args.devices:
        parser.error(
            f"--devices {args.devices}: jax sees {len(jax.devices())} device(s); run this file "
            f"as a script, or set XLA_FLAGS={HOST_DEVICES_FLAG}={args.devices} before jax starts"
        )

    names = ("jaxconv", "lax") if args.ops == "both" else (args.ops,)
    results = []
    for name in names:
        result = train(
            name,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            devices=args.devices,
            progress=not args.quiet,
        )
        print(
            f"{name} ops: test accuracy {result.test_accuracy:.2%} after {args.epochs} epochs "
            f"on {args.devices} device(s), final training loss {result.losses[-1]:.4f} "
            f"({result.seconds:.1f} s)"
        )
        results.append(result)
    if len(results) == 2:
        a, b = (r.losses for r in results)
        print(f"loss curves: largest relative difference {np.max(np.abs(a - b) / np.abs(b)):.1e}")
    if args.plot is not None:
        plot_losses(results, args.plot)
        print(f"wrote {args.plot}")
    if args.json is not None:
        runs = {
            r.ops: {
                "devices": args.devices,
                "epochs": args.epochs,
                "steps_per_epoch": r.steps_per_epoch,
                "losses": r.losses.tolist(),
                "test_accuracy": r.test_accuracy,
            }
            for r in results
        }
        args.json.write_text(json.dumps(runs, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The digits CNN as a Flax NNX module, with jaxconv's convolution and pooling.

    python examples/flax_nnx_cnn.py --steps 200

``nnx.Conv`` takes the convolution function as an argument: pass
``jaxconv.conv_general_dilated`` and the layer keeps its parameters, layout and initialisers
but differentiates with jaxconv's hand-derived VJPs. Flax is channels-last, hence
``channels_last=True`` on the pools.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

import jax
import numpy as np
import optax
from flax import nnx
from train_digits import load_data  # the same data, split and scaling

import jaxconv


class CNN(nnx.Module):
    """``(N, 8, 8, 1)`` images -> ``(N, 10)`` class scores."""

    def __init__(self, *, rngs: nnx.Rngs):
        conv = partial(
            nnx.Conv,
            kernel_size=(3, 3),
            padding="SAME",
            rngs=rngs,
            conv_general_dilated=jaxconv.conv_general_dilated,
        )
        self.conv1 = conv(1, 16)
        self.conv2 = conv(16, 32)
        self.dense = nnx.Linear(2 * 2 * 32, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jaxconv.max_pool(nnx.relu(self.conv1(x)), 2, channels_last=True)  # (N, 4, 4, 16)
        x = jaxconv.avg_pool(nnx.relu(self.conv2(x)), 2, channels_last=True)  # (N, 2, 2, 32)
        return self.dense(x.reshape(x.shape[0], -1))


def loss_fn(model: CNN, x: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


@nnx.jit
def train_step(model: CNN, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array) -> jax.Array:
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def accuracy(model: CNN, x: jax.Array, y: jax.Array) -> jax.Array:
    return (model(x).argmax(-1) == y).mean()


def train(steps: int, seed: int = 0, batch_size: int = 64) -> tuple[CNN, float]:
    """Train ``steps`` Adam steps on random batches; return the model and its test accuracy."""
    x_train, y_train, x_test, y_test = load_data()
    x_train, x_test = np.moveaxis(x_train, 1, -1), np.moveaxis(x_test, 1, -1)  # NCHW -> NHWC
    model = CNN(rngs=nnx.Rngs(seed))
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.choice(len(x_train), batch_size, replace=False)
        train_step(model, optimizer, x_train[idx], y_train[idx])
    return model, float(accuracy(model, x_test, y_test))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="Adam steps (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    _, accuracy = train(args.steps, args.seed)
    print(f"Flax NNX + jaxconv: test accuracy {accuracy:.2%} after {args.steps} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The digits CNN as a Flax linen module, with jaxconv's convolution and pooling.

    python examples/flax_linen_cnn.py --steps 200

``nn.Conv`` takes the convolution function as an argument: pass
``jaxconv.conv_general_dilated`` and the layer keeps its parameters, layout and initialisers
but differentiates with jaxconv's hand-derived VJPs. Flax is channels-last, hence
``channels_last=True`` on the pools.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

import flax.linen as nn
import jax
import numpy as np
import optax
from train_digits import load_data  # the same data, split and scaling

import jaxconv

Conv = partial(
    nn.Conv, kernel_size=(3, 3), padding="SAME", conv_general_dilated=jaxconv.conv_general_dilated
)


class CNN(nn.Module):
    """``(N, 8, 8, 1)`` images -> ``(N, 10)`` class scores."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = jaxconv.max_pool(nn.relu(Conv(16)(x)), 2, channels_last=True)  # (N, 4, 4, 16)
        x = jaxconv.avg_pool(nn.relu(Conv(32)(x)), 2, channels_last=True)  # (N, 2, 2, 32)
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


def loss_fn(params, x: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(CNN().apply(params, x), y).mean()


def train(steps: int, seed: int = 0, batch_size: int = 64) -> tuple[dict, float]:
    """Train ``steps`` Adam steps on random batches; return the parameters and test accuracy."""
    x_train, y_train, x_test, y_test = load_data()
    x_train, x_test = np.moveaxis(x_train, 1, -1), np.moveaxis(x_test, 1, -1)  # NCHW -> NHWC
    params = CNN().init(jax.random.key(seed), x_train[:1])
    optimizer = optax.adam(3e-3)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        grads = jax.grad(loss_fn)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.choice(len(x_train), batch_size, replace=False)
        params, opt_state = step(params, opt_state, x_train[idx], y_train[idx])
    accuracy = jax.jit(lambda params, x, y: (CNN().apply(params, x).argmax(-1) == y).mean())
    return params, float(accuracy(params, x_test, y_test))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="Adam steps (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    _, accuracy = train(args.steps, args.seed)
    print(f"Flax linen + jaxconv: test accuracy {accuracy:.2%} after {args.steps} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The digits CNN as an Equinox module, with jaxconv's convolution and pooling.

    python examples/equinox_cnn.py --steps 200

``eqx.nn.Conv2d`` has no hook for the convolution function, so the layer here is a small
``eqx.Module`` of its own whose ``__call__`` calls ``jaxconv.conv``. jaxconv's ops take a
batch, so these modules do too (no ``jax.vmap``); the layout is PyTorch's, channels first.
"""

from __future__ import annotations

import argparse
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from train_digits import load_data  # the same data, split and scaling

import jaxconv


class Conv2d(eqx.Module):
    """A "SAME" 3x3 convolution: ``(N, C_in, H, W)`` -> ``(N, C_out, H, W)``."""

    weight: jax.Array  # (C_out, C_in, 3, 3)
    bias: jax.Array  # (C_out,)

    def __init__(self, c_in: int, c_out: int, *, key: jax.Array):
        bound = (c_in * 9) ** -0.5  # PyTorch's (and eqx.nn.Conv's) uniform initialisation
        wkey, bkey = jax.random.split(key)
        self.weight = jax.random.uniform(wkey, (c_out, c_in, 3, 3), minval=-bound, maxval=bound)
        self.bias = jax.random.uniform(bkey, (c_out,), minval=-bound, maxval=bound)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jaxconv.conv(x, self.weight, self.bias, padding="SAME")


class CNN(eqx.Module):
    """``(N, 1, 8, 8)`` images -> ``(N, 10)`` class scores."""

    conv1: Conv2d
    conv2: Conv2d
    dense: eqx.nn.Linear

    def __init__(self, key: jax.Array):
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv1 = Conv2d(1, 16, key=k1)
        self.conv2 = Conv2d(16, 32, key=k2)
        self.dense = eqx.nn.Linear(32 * 2 * 2, 10, key=k3)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jaxconv.max_pool(jax.nn.relu(self.conv1(x)), 2)  # (N, 16, 4, 4)
        x = jaxconv.avg_pool(jax.nn.relu(self.conv2(x)), 2)  # (N, 32, 2, 2)
        return jax.vmap(self.dense)(x.reshape(x.shape[0], -1))


def loss_fn(model: CNN, x: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


@eqx.filter_jit
def accuracy(model: CNN, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(model(x).argmax(-1) == y)


def train(steps: int, seed: int = 0, batch_size: int = 64) -> tuple[CNN, float]:
    """Train ``steps`` Adam steps on random batches; return the model and its test accuracy."""
    x_train, y_train, x_test, y_test = load_data()
    model = CNN(jax.random.key(seed))
    optimizer = optax.adam(3e-3)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model, opt_state, x, y):
        grads = eqx.filter_grad(loss_fn)(model, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, model)
        return eqx.apply_updates(model, updates), opt_state

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.choice(len(x_train), batch_size, replace=False)
        model, opt_state = step(model, opt_state, x_train[idx], y_train[idx])
    return model, float(accuracy(model, x_test, y_test))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="Adam steps (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    _, accuracy = train(args.steps, args.seed)
    print(f"Equinox + jaxconv: test accuracy {accuracy:.2%} after {args.steps} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Every script under ``examples/`` runs for real, at small size.

``train_digits.py``: its default run reaches the accuracy its docstring promises; the same
model with lax ops follows the same loss curve up to float32 rounding (a wrong gradient moves
it by 1e-3 within a few steps); ``--plot`` writes a PNG; ``--devices 2``, run as a script so
that it must set ``XLA_FLAGS`` itself, gives the single-device curve; bad arguments exit 2
with argparse's one-line message. The Flax NNX, Flax linen and Equinox versions of the model
train, and their gradients equal those of the same network written with ``lax`` ops.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from jaxconv.testing import assert_allclose_rel

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))  # the examples import each other as sibling modules

import equinox_cnn  # noqa: E402
import flax_linen_cnn  # noqa: E402
import flax_nnx_cnn  # noqa: E402
import train_digits  # noqa: E402

# Measured: the jaxconv and lax curves differ by <= 3e-7 over two epochs, one and two
# devices by <= 2e-7 over one; the three framework models' gradients by <= 1e-6.
CURVE_RTOL = 1e-5
GRAD_RTOL = 1e-5


def _relative_gap(actual: np.ndarray, expected: np.ndarray) -> float:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return float(np.max(np.abs(actual - expected) / np.abs(expected)))


def _run_script(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"  # the host-device flag is a CPU feature
    return subprocess.run(
        [sys.executable, str(EXAMPLES / "train_digits.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module", autouse=True)
def _default_promotion_rules():
    """The examples are user code on optax and Flax, which rely on JAX's default promotion
    rules (optax's Adam raises a float to an int32 power); conftest's strict rules are for
    jaxconv's own code."""
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        yield


@pytest.fixture(scope="module")
def default_run() -> train_digits.TrainResult:
    """jaxconv ops, every default (seed 0, one device); reused as the reference curve."""
    return train_digits.train("jaxconv", progress=False)


def test_default_run_reaches_95_percent(default_run):
    assert default_run.losses.shape == (train_digits.DEFAULT_EPOCHS * default_run.steps_per_epoch,)
    assert default_run.losses[-1] < default_run.losses[0] / 5
    assert default_run.test_accuracy >= 0.95


def test_lax_ops_give_the_same_loss_curve(default_run):
    lax_run = train_digits.train("lax", epochs=2, progress=False)
    # The batch order depends only on the seed, so the first two epochs of the longer run
    # are the same steps.
    jaxconv_losses = default_run.losses[: len(lax_run.losses)]
    assert _relative_gap(jaxconv_losses, lax_run.losses) <= CURVE_RTOL
    assert lax_run.losses[-1] < lax_run.losses[0] / 2  # it trained: the curve is not flat


def test_two_devices_give_the_single_device_curve(default_run, tmp_path):
    out = tmp_path / "runs.json"
    done = _run_script("--devices", "2", "--epochs", "1", "--quiet", "--json", str(out))
    assert done.returncode == 0, done.stderr
    run = json.loads(out.read_text())["jaxconv"]
    assert run["devices"] == 2
    one_epoch = default_run.losses[: default_run.steps_per_epoch]
    assert _relative_gap(np.array(run["losses"], np.float32), one_epoch) <= CURVE_RTOL


def test_plot_writes_a_png(tmp_path, capsys):
    png = tmp_path / "loss.png"
    assert train_digits.main(["--ops", "lax", "--epochs", "1", "--quiet", "--plot", str(png)]) == 0
    assert "lax ops: test accuracy" in capsys.readouterr().out
    from matplotlib.image import imread

    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(png)
    assert image.shape[0] >= 300 and image.shape[1] >= 600  # 7x4 inches at 100 dpi
    assert image.std() > 0.05  # not a blank canvas


def test_help_explains_devices_on_a_cpu(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_digits.main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "XLA_FLAGS=--xla_force_host_platform_device_count=N" in text
    assert "--ops {jaxconv,lax,both}" in text


def test_bad_argument_exits_2_with_one_line_and_no_traceback():
    done = _run_script("--epochs", "0")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        "train_digits.py: error: argument --epochs: expected a positive integer, got '0'"
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--ops", "torch"], "argument --ops: invalid choice: 'torch'"),
        (["--lr", "-1"], "argument --lr: expected a positive number, got '-1'"),
        (["--devices", "3"], "--batch-size 64 must be a multiple of --devices 3"),
        (["--plot", "no/such/dir/loss.png"], "--plot no/such/dir/loss.png: directory no/such/dir"),
    ],
)
def test_bad_arguments_in_process(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_digits.main(argv)
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("train_digits.py: error: ") and message in last, last


def test_too_many_devices_in_process_is_a_clear_error(capsys):
    n = len(jax.devices()) + 1
    with pytest.raises(SystemExit) as exit_info:
        train_digits.main(["--devices", str(n), "--batch-size", str(8 * n)])
    assert exit_info.value.code == 2
    assert f"--devices {n}: jax sees {n - 1} device(s)" in capsys.readouterr().err


# --- the model in Flax NNX, Flax linen and Equinox -------------------------------------


def lax_cnn(params, x, channels_last: bool):
    """The examples' network in lax ops: ``params = (w1, b1, w2, b2, dense_w (in, out),
    dense_b)``, kernels in the layout of ``x`` (NHWC/HWIO or NCHW/OIHW)."""
    w1, b1, w2, b2, wd, bd = params
    if channels_last:
        dn, window, bias_shape = ("NHWC", "HWIO", "NHWC"), (1, 2, 2, 1), (1, 1, 1, -1)
    else:
        dn, window, bias_shape = ("NCHW", "OIHW", "NCHW"), (1, 1, 2, 2), (1, -1, 1, 1)

    def conv(x, w, b):
        y = lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=dn, precision=lax.Precision.HIGHEST
        )
        return y + b.reshape(bias_shape)

    x = lax.reduce_window(jax.nn.relu(conv(x, w1, b1)), -jnp.inf, lax.max, window, window, "VALID")
    x = lax.reduce_window(jax.nn.relu(conv(x, w2, b2)), 0.0, lax.add, window, window, "VALID") / 4
    return x.reshape(x.shape[0], -1) @ wd + bd


def _nnx_grads(x, y):
    from flax import nnx

    model = flax_nnx_cnn.CNN(rngs=nnx.Rngs(0))
    grads = nnx.jit(nnx.grad(flax_nnx_cnn.loss_fn))(model, x, y)
    leaves = [(layer, name) for layer in ("conv1", "conv2", "dense") for name in ("kernel", "bias")]
    params = [getattr(getattr(model, layer), name)[...] for layer, name in leaves]
    return params, [grads[layer][name][...] for layer, name in leaves]


def _linen_grads(x, y):
    params = flax_linen_cnn.CNN().init(jax.random.key(0), x)
    grads = jax.jit(jax.grad(flax_linen_cnn.loss_fn))(params, x, y)
    leaves = [
        (layer, name) for layer in ("Conv_0", "Conv_1", "Dense_0") for name in ("kernel", "bias")
    ]
    return (
        [params["params"][layer][name] for layer, name in leaves],
        [grads["params"][layer][name] for layer, name in leaves],
    )


def _equinox_grads(x, y):
    import equinox as eqx

    model = equinox_cnn.CNN(jax.random.key(0))
    grads = eqx.filter_jit(eqx.filter_grad(equinox_cnn.loss_fn))(model, x, y)

    def flat(m):  # eqx.nn.Linear's weight is (out, in)
        return [
            m.conv1.weight,
            m.conv1.bias,
            m.conv2.weight,
            m.conv2.bias,
            m.dense.weight.T,
            m.dense.bias,
        ]

    return flat(model), flat(grads)


FRAMEWORKS = {
    # name: (example module, gradients of its loss, channels_last)
    "flax-nnx": (flax_nnx_cnn, _nnx_grads, True),
    "flax-linen": (flax_linen_cnn, _linen_grads, True),
    "equinox": (equinox_cnn, _equinox_grads, False),
}


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_framework_model_gradients_equal_lax(name):
    _, grads_of, channels_last = FRAMEWORKS[name]
    rng = np.random.default_rng(0)
    shape = (16, 8, 8, 1) if channels_last else (16, 1, 8, 8)
    x = rng.standard_normal(shape, np.float32)  # distinct values: no max-pool ties
    y = rng.integers(0, 10, 16).astype(np.int32)
    params, grads = grads_of(x, y)

    def lax_loss(params):
        scores = lax_cnn(params, x, channels_last)
        return optax.softmax_cross_entropy_with_integer_labels(scores, y).mean()

    expected = jax.jit(jax.grad(lax_loss))(params)
    names = [
        "conv1 kernel",
        "conv1 bias",
        "conv2 kernel",
        "conv2 bias",
        "dense kernel",
        "dense bias",
    ]
    for what, actual, want in zip(names, grads, expected, strict=True):
        assert float(jnp.abs(want).max()) > 0, f"{what}: a zero gradient proves nothing"
        assert_allclose_rel(actual, want, GRAD_RTOL, what=f"{name} {what}")


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_framework_example_trains(name, capsys):
    module, _, _ = FRAMEWORKS[name]
    assert module.main(["--steps", "30"]) == 0
    accuracy = float(capsys.readouterr().out.split("test accuracy ")[1].split("%")[0])
    assert accuracy > 50  # 30 Adam steps lift it well above chance (10 %)


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_framework_example_bad_argument(name, capsys):
    module, _, _ = FRAMEWORKS[name]
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--steps", "0"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith("error: --steps must be >= 1, got 0")


def _readme_snippets(section: str) -> str:
    readme = (EXAMPLES.parent / "README.md").read_text()
    body = readme.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in body.split("```python\n")[1:]]
    assert len(blocks) == 2, f"expected the NNX and the Equinox snippet, found {len(blocks)}"
    return "\n".join(blocks)


def test_readme_model_snippets_run():
    from flax import nnx

    namespace: dict = {}
    exec(_readme_snippets("In a model"), namespace)
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 1), np.float32)

    model = namespace["CNN"](nnx.Rngs(0))
    kernel, bias = model.conv.kernel[...], model.conv.bias[...]
    h = lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    h = lax.reduce_window(
        jax.nn.relu(h + bias), -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"
    )
    expected = h.reshape(2, -1) @ model.dense.kernel[...] + model.dense.bias[...]
    assert_allclose_rel(model(x), expected, GRAD_RTOL, what="README NNX CNN")

    x = np.moveaxis(x, -1, 1)  # NCHW
    w, b = np.moveaxis(np.asarray(kernel), (2, 3), (1, 0)), np.asarray(bias)  # HWIO -> OIHW
    layer = namespace["Conv2d"](w, b)
    expected = lax.conv_general_dilated(x, w, (1, 1), "SAME") + b.reshape(1, -1, 1, 1)
    assert_allclose_rel(layer(x), expected, GRAD_RTOL, what="README Equinox Conv2d")


def test_property_testing_template_passes_and_catches_a_wrong_rule():
    """``examples/test_your_own_vjp.py`` is a pytest file users copy: it must pass as shipped
    (its third test proves the check catches a wrong rule)."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(EXAMPLES / "test_your_own_vjp.py"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "3 passed" in out.stdout

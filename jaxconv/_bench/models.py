"""The ``models`` suite: a whole train step of three small CNNs, jaxconv against lax and PyTorch.

What is timed: one jitted train step -- the mean softmax cross-entropy of a batch and its
gradients with respect to every parameter (``jax.value_and_grad``; no optimiser update) -- of
the three networks of :mod:`jaxconv._bench.networks` (MobileNetV2-, ConvNeXt- and
ResNet-style; float32, batch 32 of 3x32x32, 10 classes). The network code is written once
against a table of ops, so the contenders compute the same function of the same parameters:

- ``lax``: ``lax.conv_general_dilated``, ``lax.reduce_window``, ``jnp.mean``, differentiated by
  JAX's own transpose rules;
- ``jaxconv``: ``jaxconv.conv`` (``method="auto"``), ``jaxconv.max_pool``,
  ``jaxconv.adaptive_avg_pool``, with their hand-derived VJPs;
- ``torch``: the same network code with ``torch.nn.functional`` ops, eager, channels-first,
  ``torch.autograd.grad`` of the loss (CPU with every core, or CUDA when JAX runs on a GPU).

Activations, layer norm and the dense head are the same ``jnp`` code for lax and jaxconv.
Each JAX network runs channels-first (``NCHW``, kernels ``OIHW``) and channels-last (``NHWC``,
kernels ``HWIO``: the layout XLA's CPU convolution prefers); PyTorch channels-first.

Tables:

1. **train step**: median ms per contender, ``lax/jaxconv`` and ``torch/jaxconv`` (above 1:
   jaxconv is faster), and the worst gradient difference from lax's.
2. **peak memory** of the compiled step, from ``compiled.memory_analysis()``:
   ``argument_size_in_bytes + output_size_in_bytes + temp_size_in_bytes -
   alias_size_in_bytes`` (what XLA's CPU client holds at once for one call: parameters and
   batch, loss and gradients, and the scratch buffer in which every intermediate -- the
   residuals kept for the backward included -- is placed), with ``temp`` on its own.
3. **layer breakdown**, one per network (channels-first): every op the network calls,
   recorded at trace time with its shapes, timed forward+backward on its own (its output
   and its VJP with a random cotangent, w.r.t. every array the step differentiates), summed per
   kind of layer (stem, 1x1, depthwise 3x3 and 3x3/2, 7x7 depthwise, dense 3x3, pools,
   norms/activations, head) for lax, jaxconv and PyTorch, with the method ``auto`` picked
   (``jaxconv.explain_method``). The last rows compare the sum with the whole step: what
   the step costs beyond its layers is glue (layout changes, copies, lost fusion).

Before anything is timed, every contender's loss and gradients are checked against lax's
(relative L2 error per parameter; a float32 network with ReLU6 kinks differs by ~1e-3 between
correct implementations, a wrong gradient by ~1); a contender that disagrees is reported and
not timed. Steps are timed round-robin (:mod:`jaxconv._bench.timing`), the median of
``repeats`` samples (default 10: whole cycles of the balanced order of five contenders).

Goals (issue 11; judged on the CPU, channels-first, not in quick runs): MobileNetV2-style
``lax/jaxconv >= 5`` and faster than PyTorch; ConvNeXt-style ``>= 3`` and faster than
PyTorch; ResNet-style ``>= 1.2`` and within 1.3x of PyTorch; the jaxconv step's peak memory
no more than lax's on every network.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxconv

from . import networks as nets
from . import timing
from .suite import Options, Progress, Table, select_device, torch_for

LAYOUTS = ("NCHW", "NHWC")
GOALS: dict[str, tuple[float, float]] = {
    # network: (lax/jaxconv at least, torch/jaxconv at least)
    "mobilenet": (5.0, 1.0),
    "convnext": (3.0, 1.0),
    "resnet": (1.2, 1.0 / 1.3),
}
TOLERANCE = {"cpu": 1e-2, "gpu": 3e-2}
"""Largest relative L2 gradient difference from lax accepted (GPUs may use TF32)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to run beyond :class:`~jaxconv._bench.suite.Options` (``benchmarks/bench_models.py``
    sets these from its own flags): network short names, JAX layouts, whether to break the
    channels-first step down by layer, and whether to list every layer too."""

    networks: tuple[str, ...] = tuple(nets.NETWORKS)
    layouts: tuple[str, ...] = LAYOUTS
    breakdown: bool = True
    layers: bool = False


_settings = Settings()


@contextlib.contextmanager
def settings(**changes: Any) -> Iterator[Settings]:
    """Run the suite with some :class:`Settings` changed, for the duration of the block."""
    global _settings
    old = _settings
    _settings = dataclasses.replace(old, **changes)
    try:
        yield _settings
    finally:
        _settings = old


# --------------------------------------------------------------------------- contenders


def ops_for(kind: str, layout: str) -> nets.Ops:
    """The ops table of a JAX contender (``"lax"`` or ``"jaxconv"``) in ``layout``."""
    channels_last = layout == "NHWC"
    return nets.lax_ops(channels_last) if kind == "lax" else nets.jaxconv_ops(channels_last)


def step_fn(net: Any, ops: nets.Ops) -> Any:
    """The jitted train step ``(params, x, labels) -> (loss, grads)``."""
    return jax.jit(jax.value_and_grad(nets.loss_fn(net, ops)))


@dataclasses.dataclass
class Problem:
    """One network at one size: its parameters and batch (NumPy, channels-first)."""

    key: str
    net: Any
    params: Any
    x: np.ndarray
    labels: np.ndarray

    def args(self, layout: str) -> tuple[Any, Any, Any]:
        """``(params, x, labels)`` as device arrays in ``layout``."""
        channels_last = layout == "NHWC"
        x = self.x.transpose(0, 2, 3, 1) if channels_last else self.x
        params = nets.to_layout(self.params, channels_last)
        return jax.device_put((params, x, self.labels))


def problem(key: str, spec: nets.Spec) -> Problem:
    net = nets.network(key, spec)
    x, labels = nets.inputs(spec)
    return Problem(key, net, net.init(seed=0), x, labels)


QUICK_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}
"""Quick runs compile without LLVM's optimisations (about 40% faster to compile on the CPU;
the same HLO passes, so the same fusions and layouts): their timings mean nothing anyway."""


def compile_all(
    lowered: Sequence[Any], device: Any, progress: Progress, what: str, quick: bool = False
) -> list[Any]:
    """Compile lowered programs, in parallel on the CPU (XLA's compiler releases the GIL);
    one at a time on a GPU, where compiling autotunes by timing on the device."""
    progress.start(len(lowered), f"models: compiling {what}")
    workers = (os.cpu_count() or 1) if device.platform == "cpu" else 1
    options = QUICK_COMPILER_OPTIONS if quick and device.platform == "cpu" else None
    out = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for exe in pool.map(lambda low: low.compile(options), lowered):
            out.append(exe)
            progress.advance()
    return out


def _blocking(exe: Any, args: Sequence[Any]) -> Callable[[], Any]:
    """A zero-argument call of a compiled program that waits for its result."""
    return lambda: timing.block(exe(*args))


def peak_memory(compiled: Any) -> dict[str, int] | None:
    """``{"temp", "argument", "output", "alias", "peak"}`` bytes of a compiled step, ``peak =
    argument + output + temp - alias``; ``None`` when the backend reports nothing."""
    stats = compiled.memory_analysis()
    if stats is None:
        return None
    out = {
        k: int(getattr(stats, f"{k}_size_in_bytes", 0))
        for k in ("temp", "argument", "output", "alias")
    }
    out["peak"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    return out


def grad_error(actual: Any, expected: Any) -> float:
    """Worst relative L2 difference over the leaves of two pytrees (float64)."""
    worst = 0.0
    for a, e in zip(
        jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected), strict=True
    ):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        scale = max(float(np.linalg.norm(e)), 1e-30)
        worst = max(worst, float(np.linalg.norm(a - e)) / scale)
    return worst


def to_channels_first(grads: Any) -> Any:
    """Gradients of channels-last parameters back in the channels-first layout."""
    return jax.tree_util.tree_map(lambda a: a.transpose(3, 2, 0, 1) if a.ndim == 4 else a, grads)


# --------------------------------------------------------------------------- train step


def _torch_step(torch: Any, where: str, prob: Problem) -> tuple[Callable[[], Any], Any]:
    """A blocking closure running PyTorch's step, and its ``(loss, grads)`` once (NumPy)."""
    from . import torch_networks as tn

    ops = tn.torch_ops()
    params = jax.tree_util.tree_map(
        lambda t: t.to(where).detach().requires_grad_(True), tn.to_torch(prob.params)
    )
    x = torch.from_numpy(prob.x).to(where)
    labels = torch.from_numpy(prob.labels).to(where)
    sync = torch.cuda.synchronize if where == "cuda" else (lambda: None)

    def run():
        out = tn.grad_step(prob.net, ops, params, x, labels)
        sync()
        return out

    loss, grads = run()
    return run, (float(loss.cpu()), jax.tree_util.tree_map(lambda t: t.cpu().numpy(), grads))


def time_steps(
    probs: Sequence[Problem],
    layouts: Sequence[str],
    device: Any,
    torch_dev: tuple[Any, str],
    repeats: int,
    progress: Progress,
    quick: bool,
) -> list[dict[str, Any]]:
    """Compile, check and time every network's step: lax and jaxconv per layout, PyTorch."""
    todo = []
    for prob in probs:
        for layout in layouts:
            args = prob.args(layout)
            for kind in ("lax", "jaxconv"):
                todo.append((prob, layout, kind, args, step_fn(prob.net, ops_for(kind, layout))))
    lowered = [fn.lower(*args) for (*_, args, fn) in todo]
    compiled = compile_all(lowered, device, progress, "train steps", quick)
    tol = TOLERANCE.get(device.platform, TOLERANCE["gpu"])
    results = []
    progress.start(len(probs), "models: timing train steps")
    for prob in probs:
        fns: dict[str, Callable[[], Any]] = {}
        outs: dict[str, tuple[float, Any]] = {}
        memory: dict[str, Any] = {}
        for (p, layout, kind, args, _), exe in zip(todo, compiled, strict=True):
            if p is not prob:
                continue
            name = f"{kind} {layout}"
            fns[name] = _blocking(exe, args)
            loss, grads = fns[name]()
            if layout == "NHWC":
                grads = to_channels_first(grads)
            outs[name] = (float(loss), grads)
            memory[name] = peak_memory(exe)
        torch, where = torch_dev
        if torch is not None:
            fns["torch"], outs["torch"] = _torch_step(torch, where, prob)
        ref_loss, ref_grads = outs[f"lax {layouts[0]}"]
        errors = {
            name: max(abs(loss - ref_loss) / max(abs(ref_loss), 1e-30), grad_error(g, ref_grads))
            for name, (loss, g) in outs.items()
        }
        bad = {name: err for name, err in errors.items() if not err <= tol}
        for name in bad:
            fns.pop(name, None)
        samples = timing.time_round_robin(
            fns, repeats=repeats, warmup=0 if quick else 1, min_sample_s=0.0 if quick else 0.05
        )
        ms = {name: 1e3 * timing.summarize(s)["median"] for name, s in samples.items()}
        results.append(
            {
                "network": prob.key,
                "name": prob.net.name,
                "ms": ms,
                "samples_ms": {k: [1e3 * t for t in s] for k, s in samples.items()},
                "memory": memory,
                "errors": errors,
                "disagree": bad,
            }
        )
        progress.advance(prob.net.name)
    return results


# --------------------------------------------------------------------------- layer breakdown


@dataclasses.dataclass(frozen=True)
class Layer:
    """One distinct op call of a network: the call, its kind, how often the step makes it,
    and whether the step differentiates its first argument (not for the stem's input)."""

    call: nets.Call
    kind: str
    count: int
    needs_dx: bool

    @property
    def label(self) -> str:
        config = ", ".join(f"{k}={v}" for k, v in self.call.config)
        shapes = " ".join("x".join(map(str, s)) for s in self.call.shapes)
        return f"{self.call.op}({shapes}{'; ' + config if config else ''})"


def layers_of(prob: Problem, layout: str) -> list[Layer]:
    """The distinct op calls of ``prob``'s forward pass, in first-seen order, with counts."""
    channels_last = layout == "NHWC"
    params, x, _ = prob.args(layout)
    calls = nets.record(prob.net, ops_for("jaxconv", layout), params, x)
    kinds = nets.kinds_in_order(calls, channels_last)
    counts = Counter(zip(calls, kinds, strict=True))
    out, seen = [], set()
    for call, kind in zip(calls, kinds, strict=True):
        if (call, kind) in seen:
            continue
        seen.add((call, kind))
        out.append(Layer(call, kind, counts[(call, kind)], needs_dx=kind != "stem"))
    return out


def _layer_inputs(layer: Layer, out_shape: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """Random arrays for a layer's arguments, then a cotangent for its output."""
    rng = np.random.default_rng(seed)
    arrays = []
    for i, shape in enumerate(layer.call.shapes):
        a = rng.standard_normal(shape).astype(np.float32)
        if i == 1 and len(shape) >= 2:  # a weight: roughly 1/sqrt(fan-in), outputs O(1)
            a /= np.float32(math.sqrt(max(1, math.prod(shape) // max(shape))))
        arrays.append(a)
    arrays.append(rng.standard_normal(out_shape).astype(np.float32))
    return arrays


def layer_grad(ops: nets.Ops, layer: Layer) -> Any:
    """Jitted ``(*arrays, ct) -> (y, grads)``: the op's output and its VJP with ``ct``.

    The output is returned so that the forward runs: the gradient of a loss linear in ``y``
    (``sum(y * ct)``) does not need ``y``, and XLA would drop the forward of a convolution.
    """
    fn = getattr(ops, layer.call.op)
    config = dict(layer.call.config)
    first = 0 if layer.needs_dx else 1

    def fwd_bwd(*arrays):
        *args, ct = arrays
        fixed = args[:first]
        y, vjp = jax.vjp(lambda *wrt: fn(*fixed, *wrt, **config), *args[first:])
        return y, vjp(ct)

    return jax.jit(fwd_bwd)


def _torch_layer(torch: Any, where: str, layer: Layer, host: Sequence[np.ndarray]):
    from . import torch_networks as tn

    fn = getattr(tn.torch_ops(), layer.call.op)
    config = dict(layer.call.config)
    *args, ct = (torch.from_numpy(a).to(where) for a in host)
    wrt = args[0 if layer.needs_dx else 1 :]
    for t in wrt:
        t.requires_grad_(True)
    sync = torch.cuda.synchronize if where == "cuda" else (lambda: None)

    def run():
        y = fn(*args, **config)
        grads = torch.autograd.grad(y, wrt, grad_outputs=ct)
        sync()
        return y, grads

    _, grads = run()
    return run, [g.cpu().numpy() for g in grads]


def method_of(layer: Layer, layout: str) -> str:
    """What ``conv(method="auto")`` picks for a convolution layer ("" for other ops)."""
    if layer.call.op != "conv":
        return ""
    config = dict(layer.call.config)
    choice = jaxconv.explain_method(
        layer.call.shapes[0],
        layer.call.shapes[1],
        config["stride"],
        config["padding"],
        groups=config["groups"],
        channels_last=layout == "NHWC",
    )
    return str(choice.method)


def time_layers(
    prob: Problem,
    layout: str,
    device: Any,
    torch_dev: tuple[Any, str],
    repeats: int,
    progress: Progress,
    quick: bool,
) -> list[dict[str, Any]]:
    """Every distinct layer of ``prob`` timed forward+backward on its own, per contender."""
    lax_ops = ops_for("lax", layout)
    prepared = []  # (layer, host arrays, device arrays)
    todo = []
    for i, layer in enumerate(layers_of(prob, layout)):
        fn, config = getattr(lax_ops, layer.call.op), dict(layer.call.config)
        out = jax.eval_shape(
            lambda *a, fn=fn, config=config: fn(*a, **config),
            *(jax.ShapeDtypeStruct(s, jnp.float32) for s in layer.call.shapes),
        )
        host = _layer_inputs(layer, tuple(out.shape), seed=i)
        args = jax.device_put(host)
        prepared.append((layer, host, args))
        for kind in ("lax", "jaxconv"):
            todo.append((i, kind, args, layer_grad(ops_for(kind, layout), layer)))
    lowered = [fn.lower(*args) for (_, _, args, fn) in todo]
    compiled = compile_all(lowered, device, progress, f"{prob.net.name} layers", quick)
    exes: dict[tuple[int, str], Any] = {
        (i, kind): exe for (i, kind, _, _), exe in zip(todo, compiled, strict=True)
    }
    tol = TOLERANCE.get(device.platform, TOLERANCE["gpu"])
    results = []
    progress.start(len(prepared), f"models: timing {prob.net.name} layers")
    for i, (layer, host, args) in enumerate(prepared):
        fns = {
            kind: (lambda exe=exes[(i, kind)], args=args: timing.block(exe(*args)))
            for kind in ("lax", "jaxconv")
        }
        outs = {kind: fn()[1] for kind, fn in fns.items()}
        torch, where = torch_dev
        if torch is not None and layout == "NCHW":
            fns["torch"], outs["torch"] = _torch_layer(torch, where, layer, host)
        errors = {k: grad_error(list(v), list(outs["lax"])) for k, v in outs.items()}
        for k, err in errors.items():
            if not err <= tol:
                fns.pop(k, None)
        samples = timing.time_round_robin(
            fns, repeats=repeats, warmup=0, min_sample_s=0.0 if quick else 0.02
        )
        ms = {k: 1e3 * timing.summarize(s)["median"] for k, s in samples.items()}
        results.append(
            {
                "label": layer.label,
                "kind": layer.kind,
                "count": layer.count,
                "method": method_of(layer, layout),
                "ms": ms,
                "errors": errors,
            }
        )
        progress.advance(layer.kind)
    return results


# --------------------------------------------------------------------------- tables


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or not den > 0:
        return None
    return num / den


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _mb(n: int | None) -> float | None:
    return None if n is None else n / 2**20


def step_table(
    results: list[dict[str, Any]],
    layouts: Sequence[str],
    options: Options,
    torch_note: str,
    repeats: int,
    platform: str,
) -> Table:
    rows, chart, verdicts, passed = [], {}, [], True
    for r in results:
        ms = r["ms"]
        t = ms.get("torch")
        for layout in layouts:
            lax_ms, jc_ms = ms.get(f"lax {layout}"), ms.get(f"jaxconv {layout}")
            err = max(r["errors"].get(f"jaxconv {layout}", 0.0), r["errors"].get("torch", 0.0))
            rows.append(
                [
                    f"{r['name']} {layout}",
                    lax_ms,
                    jc_ms,
                    t,
                    _ratio(lax_ms, jc_ms),
                    _ratio(t, jc_ms),
                    err,
                ]
            )
        first = layouts[0]
        lax_ms, jc_ms = ms.get(f"lax {first}"), ms.get(f"jaxconv {first}")
        if lax_ms and jc_ms:
            chart[f"{r['name']}: lax/jaxconv"] = lax_ms / jc_ms
        if t and jc_ms:
            chart[f"{r['name']}: torch/jaxconv"] = t / jc_ms
        # Every layout is judged on its own line, and the table passes only if all do: a
        # network kept channels-last can meet a goal its channels-first twin misses.
        goal_lax, goal_torch = GOALS[r["network"]]
        for layout in layouts:
            lax_ms, jc_ms = ms.get(f"lax {layout}"), ms.get(f"jaxconv {layout}")
            ok_lax = (_ratio(lax_ms, jc_ms) or 0.0) >= goal_lax
            ok_torch = t is None or (_ratio(t, jc_ms) or 0.0) >= goal_torch
            ok = ok_lax and ok_torch and not r["disagree"]
            passed = passed and ok
            verdicts.append(
                f"{'PASS' if ok else 'FAIL'} {r['name']} ({layout}): lax/jaxconv "
                f"{_fmt(_ratio(lax_ms, jc_ms))} (goal >= {goal_lax:g}), torch/jaxconv "
                f"{_fmt(_ratio(t, jc_ms))} (goal >= {goal_torch:.2f})"
                + (f"; disagree with lax: {r['disagree']}" if r["disagree"] else "")
            )
    judged = platform == "cpu" and not options.quick
    return Table(
        title="models: train step time (loss + gradients w.r.t. every parameter)",
        columns=[
            "network",
            "lax ms",
            "jaxconv ms",
            "torch ms",
            "lax/jaxconv",
            "torch/jaxconv",
            "max err",
        ],
        rows=rows,
        ratios=chart,
        notes=[
            f"float32, median of {repeats} round-robin samples; torch: {torch_note} "
            "(channels-first, eager; the same torch time on both layout rows)",
            "ratios above 1: jaxconv is faster; max err: worst relative L2 difference of any "
            "gradient (jaxconv's and torch's) from lax's",
            "PyTorch's OpenMP threads spin-wait: while another process holds a core its step "
            "can take 10-30x longer (measured: 69 ms -> 2.3 s), so read torch columns from a "
            "quiet machine only",
            *verdicts,
            *([] if judged else ["goals not judged (quick run or not on the CPU)"]),
        ],
        passed=passed if judged else None,
        data={"repeats": repeats, "results": results, "goals": GOALS},
    )


def memory_table(results: list[dict[str, Any]], layouts: Sequence[str], quick: bool) -> Table:
    rows: list[list[Any]] = []
    passed, verdicts = True, []
    for r in results:
        for layout in layouts:
            lax_m, jc_m = r["memory"].get(f"lax {layout}"), r["memory"].get(f"jaxconv {layout}")
            if lax_m is None or jc_m is None:
                rows.append([f"{r['name']} {layout}", None, None, None, None, None])
                continue
            rows.append(
                [
                    f"{r['name']} {layout}",
                    _mb(lax_m["peak"]),
                    _mb(jc_m["peak"]),
                    jc_m["peak"] / lax_m["peak"],
                    _mb(lax_m["temp"]),
                    _mb(jc_m["temp"]),
                ]
            )
            if jc_m["peak"] > lax_m["peak"]:
                passed = False
                verdicts.append(f"FAIL {r['name']} {layout}: jaxconv peak above lax's")
    return Table(
        title="models: peak memory of the train step (XLA memory_analysis)",
        columns=[
            "network",
            "lax MB",
            "jaxconv MB",
            "jaxconv/lax",
            "lax temp MB",
            "jaxconv temp MB",
        ],
        rows=rows,
        notes=[
            "peak = argument + output + temp - alias bytes of the compiled step "
            "(compiled.memory_analysis()); temp holds every intermediate, residuals included",
            *(verdicts or ["PASS: jaxconv's peak is at most lax's on every network"]),
        ],
        passed=None if quick else passed,
        data={r["name"]: r["memory"] for r in results},
    )


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def breakdown_table(
    name: str,
    layer_results: list[dict[str, Any]],
    step_ms: dict[str, float],
    layout: str,
    detail: bool,
) -> list[Table]:
    kinds: dict[str, dict[str, Any]] = {}
    for r in layer_results:
        k = kinds.setdefault(r["kind"], {"count": 0, "ms": Counter(), "methods": Counter()})
        k["count"] += r["count"]
        for who, v in r["ms"].items():
            k["ms"][who] += v * r["count"]
        if r["method"]:
            k["methods"][r["method"]] += r["count"]
    who = ("lax", "jaxconv", "torch")
    rows = []
    total: Counter[str] = Counter()
    for kind, k in kinds.items():
        ms = {w: k["ms"].get(w) for w in who}
        for w in who:
            total[w] += k["ms"].get(w, 0.0)
        methods = ", ".join(f"{m} x{c}" for m, c in k["methods"].items())
        rows.append(
            [
                kind,
                k["count"],
                *(ms[w] for w in who),
                _ratio(ms["lax"], ms["jaxconv"]),
                _ratio(ms["torch"], ms["jaxconv"]),
                methods,
            ]
        )
    has_torch = any("torch" in r["ms"] for r in layer_results)
    sums = {w: (total[w] if (w != "torch" or has_torch) else None) for w in who}
    steps = {
        "lax": step_ms.get(f"lax {layout}"),
        "jaxconv": step_ms.get(f"jaxconv {layout}"),
        "torch": step_ms.get("torch") if layout == "NCHW" else None,
    }
    glue = {w: _difference(steps[w], sums[w]) for w in who}
    n_layers = sum(r["count"] for r in layer_results)
    rows.append(
        [
            "sum of layers",
            n_layers,
            *(sums[w] for w in who),
            _ratio(sums["lax"], sums["jaxconv"]),
            _ratio(sums["torch"], sums["jaxconv"]),
            "",
        ]
    )
    rows.append(
        [
            "train step",
            "",
            *(steps[w] for w in who),
            _ratio(steps["lax"], steps["jaxconv"]),
            _ratio(steps["torch"], steps["jaxconv"]),
            "",
        ]
    )
    rows.append(["step - layers", "", *(glue[w] for w in who), None, None, ""])
    tables = [
        Table(
            title=f"models: {name} {layout} layer breakdown (fwd+bwd of each op alone, summed)",
            columns=[
                "kind",
                "layers",
                "lax ms",
                "jaxconv ms",
                "torch ms",
                "lax/jaxconv",
                "torch/jaxconv",
                "auto picks",
            ],
            rows=rows,
            notes=[
                "each distinct op call timed alone (output + VJP), times its count in "
                "the step; 'step - layers' is what the whole step costs beyond its layers",
            ],
            data={"layers": layer_results},
        )
    ]
    if detail:
        tables.append(
            Table(
                title=f"models: {name} {layout} every layer",
                columns=["layer", "kind", "count", "lax ms", "jaxconv ms", "torch ms", "auto"],
                rows=[
                    [r["label"], r["kind"], r["count"], *(r["ms"].get(w) for w in who), r["method"]]
                    for r in layer_results
                ],
            )
        )
    return tables


# --------------------------------------------------------------------------- entry point


def run(options: Options, progress: Progress) -> list[Table]:
    """Run the suite (see the module docstring) with the current :class:`Settings`."""
    s = _settings
    device = select_device(options.device)
    torch_dev = torch_for(device.platform, options.torch)
    torch_note = torch_dev[1] if torch_dev[0] is not None else f"n/a ({torch_dev[1]})"
    spec = nets.Spec.quick() if options.quick else nets.Spec.full()
    n_contenders = 2 * len(s.layouts) + (torch_dev[0] is not None)
    repeats = options.repeats or (1 if options.quick else 2 * n_contenders)
    with jax.default_device(device):
        probs = [problem(key, spec) for key in s.networks]
        results = time_steps(probs, s.layouts, device, torch_dev, repeats, progress, options.quick)
        tables = [
            step_table(results, s.layouts, options, torch_note, repeats, device.platform),
            memory_table(results, s.layouts, options.quick),
        ]
        if s.breakdown:
            layout = s.layouts[0]
            layer_repeats = options.repeats or (1 if options.quick else 6)
            for prob, r in zip(probs, results, strict=True):
                layer_results = time_layers(
                    prob, layout, device, torch_dev, layer_repeats, progress, options.quick
                )
                tables += breakdown_table(prob.net.name, layer_results, r["ms"], layout, s.layers)
    return tables

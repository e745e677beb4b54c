"""train_step against a NumPy transcription of torch.optim's update rules (SGD, Adam, AdamW,
RMSprop, clipping) over 50 steps on a small MLP: f64 on the interpreter to 1e-12, f32 natively
to 1e-5; plus the stats, skipping non-finite steps, monitoring, lr per call, saving the state
and micro-batches."""
from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import graphc
from graphc.elaborate import elaborate_source
from graphc.model import Model
from graphc.optim import SGD, Adam, AdamW, RMSprop

SRC = """
graph net {
    input  x: DT[N, 5]
    input  y: DT[N, 3]
    param  W1: DT[5, 8]
    param  b1: DT[8] = normal(0.1)
    param  W2: DT[8, 3]
    param  b2: DT[3] = normal(0.1)
    h    = tanh(x @ W1 + b1)
    loss = mean(softmax_cross_entropy(h @ W2 + b2, y))
    output loss
    grad loss
}
"""
STEPS = 50


def compile_train(dtype: str = "f64", **options: Any) -> Model:
    """``graphc.compile_source(SRC, optimizer=...)``, through Model until graphc/__init__.py
    passes the training options on."""
    return Model(elaborate_source(SRC.replace("DT", dtype), "net.graph")["net"], **options)


def batches(dtype: str, n: int = STEPS, rows: int = 16) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [(rng.normal(size=(rows, 5)).astype(dtype),
             np.eye(3, dtype=dtype)[rng.integers(0, 3, rows)]) for _ in range(n)]


# ---------------------------------------------------------------------------- the oracle:
# torch.optim's update rules, transcribed from its documentation (single-tensor versions)


def clip(opt: Any, grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if opt.clip_norm is not None:      # torch.nn.utils.clip_grad_norm_
        total = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads.values()))
        coef = min(opt.clip_norm / (total + 1e-6), 1.0)
        grads = {n: g * g.dtype.type(coef) for n, g in grads.items()}
    if opt.clip_value is not None:     # torch.nn.utils.clip_grad_value_
        grads = {n: np.clip(g, -opt.clip_value, opt.clip_value) for n, g in grads.items()}
    return grads


def torch_step(opt: Any, p: dict[str, np.ndarray], grads: dict[str, np.ndarray],
               st: dict[str, Any], lr: float) -> None:
    st["step"] = st.get("step", 0) + 1
    t = st["step"]
    for n, g in clip(opt, grads).items():
        f = g.dtype.type
        if isinstance(opt, SGD):
            if opt.weight_decay:
                g = g + f(opt.weight_decay) * p[n]
            if opt.momentum:
                buf = st.get(n + ".momentum_buffer")
                buf = g.copy() if buf is None else \
                    f(opt.momentum) * buf + f(1 - opt.dampening) * g
                st[n + ".momentum_buffer"] = buf
                g = g + f(opt.momentum) * buf if opt.nesterov else buf
            p[n] = p[n] - f(lr) * g
        elif isinstance(opt, Adam):      # and AdamW
            b1, b2 = opt.betas
            if opt.weight_decay and isinstance(opt, AdamW):
                p[n] = p[n] * f(1 - lr * opt.weight_decay)
            elif opt.weight_decay:
                g = g + f(opt.weight_decay) * p[n]
            m = st.get(n + ".exp_avg", np.zeros_like(g))
            v = st.get(n + ".exp_avg_sq", np.zeros_like(g))
            m = m + (g - m) * f(1 - b1)                       # exp_avg.lerp_(grad, 1 - beta1)
            v = v * f(b2) + f(1 - b2) * g * g
            st[n + ".exp_avg"], st[n + ".exp_avg_sq"] = m, v
            step_size = lr / (1 - b1 ** t)
            bc2_sqrt = np.sqrt(1 - b2 ** t)
            if opt.amsgrad:
                v = np.maximum(st.get(n + ".max_exp_avg_sq", np.zeros_like(g)), v)
                st[n + ".max_exp_avg_sq"] = v
            denom = np.sqrt(v) / f(bc2_sqrt) + f(opt.eps)
            p[n] = p[n] - f(step_size) * (m / denom)
        else:                                                 # RMSprop
            a = opt.alpha
            if opt.weight_decay:
                g = g + f(opt.weight_decay) * p[n]
            sq = st.get(n + ".square_avg", np.zeros_like(g)) * f(a) + f(1 - a) * g * g
            st[n + ".square_avg"] = sq
            if opt.centered:
                ga = st.get(n + ".grad_avg", np.zeros_like(g))
                ga = st[n + ".grad_avg"] = ga + (g - ga) * f(1 - a)
                avg = np.sqrt(sq - ga * ga) + f(opt.eps)
            else:
                avg = np.sqrt(sq) + f(opt.eps)
            if opt.momentum:
                buf = st.get(n + ".momentum_buffer", np.zeros_like(g))
                buf = st[n + ".momentum_buffer"] = f(opt.momentum) * buf + g / avg
                p[n] = p[n] - f(lr) * buf
            else:
                p[n] = p[n] - f(lr) * (g / avg)


def lr_at(i: int, base: float) -> float:
    """A schedule, so that lr per call is tested too: warm-up then decay."""
    return base * min(1.0, (i + 1) / 5) * 0.97 ** i


def run_both(opt: Any, model: Model, oracle: Model, data: list) -> tuple[dict, dict]:
    params = model.init_params(seed=0)
    state = model.init_state(params)
    ref = {n: a.copy() for n, a in params.items()}
    ref_state: dict[str, Any] = {}
    for i, (x, y) in enumerate(data):
        lr = lr_at(i, opt.lr)
        stats = model.train_step(params, state, lr=lr, x=x, y=y)
        out, grads = oracle.value_and_grad(x=x, y=y, **ref)
        assert stats["loss"] == pytest.approx(float(out["loss"]), rel=1e-4)
        torch_step(opt, ref, grads, ref_state, lr)
    assert int(state["step"]) == len(data)
    return params, ref


OPTIMIZERS = [
    SGD(lr=0.3),
    SGD(lr=0.2, momentum=0.9, dampening=0.1, weight_decay=1e-2),
    SGD(lr=0.2, momentum=0.8, nesterov=True, clip_norm=0.05),
    Adam(lr=0.02),
    Adam(lr=0.02, betas=(0.8, 0.99), weight_decay=1e-2, amsgrad=True, clip_norm=0.1),
    AdamW(lr=0.02, clip_value=0.01),
    RMSprop(lr=0.01),
    RMSprop(lr=0.005, momentum=0.5, centered=True, weight_decay=1e-3, clip_norm=0.2),
]


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=repr)
def test_train_step_matches_torch_rules_f64_interp(opt: Any) -> None:
    model = compile_train("f64", backend="interp", optimizer=opt, opt_level=1)   # unfused: fast
    params, ref = run_both(opt, model, model, batches("float64"))
    for n in params:
        np.testing.assert_allclose(params[n], ref[n], rtol=1e-12, atol=1e-14)
        assert not np.allclose(params[n], model.init_params(seed=0)[n])    # it trained


@pytest.fixture(scope="module")
def f32_oracle() -> Model:
    return compile_train("f32", backend="interp")


NATIVE = [OPTIMIZERS[4]]          # more natively in the slow run


@pytest.mark.parametrize("opt", NATIVE, ids=repr)
def test_train_step_matches_torch_rules_f32_native(opt: Any, f32_oracle: Model) -> None:
    model = compile_train("f32", optimizer=opt)
    params, ref = run_both(opt, model, f32_oracle, batches("float32"))
    for n in params:
        np.testing.assert_allclose(params[n], ref[n], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("opt", [OPTIMIZERS[i] for i in (2, 5, 7)], ids=repr)
def test_every_optimizer_matches_natively(opt: Any, f32_oracle: Model) -> None:
    model = compile_train("f32", optimizer=opt)
    params, ref = run_both(opt, model, f32_oracle, batches("float32"))
    for n in params:
        np.testing.assert_allclose(params[n], ref[n], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- the step's API


@pytest.fixture(scope="module")
def adam() -> Model:
    """One native f64 compile shared by the tests below (monitor on)."""
    return compile_train("f64", optimizer=Adam(lr=0.05, clip_norm=1.0), monitor=True)


def test_train_step_matches_torch_rules_f64_native(adam: Model) -> None:
    oracle = compile_train("f64", backend="interp", opt_level=1)
    params, ref = run_both(adam.optimizer, adam, oracle, batches("float64"))
    for n in params:
        np.testing.assert_allclose(params[n], ref[n], rtol=1e-12, atol=1e-14)


def fresh(model: Model) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    params = model.init_params(seed=0)
    return params, model.init_state(params)


def test_state_names_are_pytorchs(adam: Model) -> None:
    params, state = fresh(adam)
    assert list(state) == [f"{n}.{s}" for n in ("W1", "b1", "W2", "b2")
                           for s in ("exp_avg", "exp_avg_sq")] + ["step"]
    assert state["step"].dtype == np.int64 and state["W1.exp_avg"].shape == (5, 8)
    sgd = compile_train("f64", backend="interp", optimizer=SGD(lr=0.1, momentum=0.9))
    assert list(sgd.init_state(params)) == [f"{n}.momentum_buffer"
                                            for n in ("W1", "b1", "W2", "b2")] + ["step"]


def test_stats_and_updates_in_place(adam: Model) -> None:
    params, state = fresh(adam)
    arrays = {**params, **state}
    x, y = batches("float64", 1)[0]
    out, grads = adam.value_and_grad(x=x, y=y, **params)
    stats = adam.train_step(params, state, x=x, y=y)
    assert all(params[n] is arrays[n] for n in params)        # the caller's own arrays
    assert all(state[n] is arrays[n] for n in state)
    assert stats["loss"] == pytest.approx(float(out["loss"]), rel=1e-12)
    norms = {n: np.linalg.norm(g) for n, g in grads.items()}
    assert stats["grad_norm"] == pytest.approx(np.sqrt(sum(v ** 2 for v in norms.values())),
                                               rel=1e-12)
    assert stats["nonfinite"] == 0 and stats["skipped"] is False
    assert stats["grad_norms"] == pytest.approx(norms, rel=1e-12)
    first = adam.init_params(seed=0)
    assert stats["param_norms"] == pytest.approx({n: np.linalg.norm(a) for n, a in
                                                  first.items()}, rel=1e-12)
    assert int(state["step"]) == 1 and np.abs(state["W1.exp_avg"]).sum() > 0
    assert "train_step" in adam.dump_ir(func="train_step")


def test_a_nonfinite_step_is_skipped_bitwise_and_training_goes_on(adam: Model) -> None:
    data = batches("float64", 4)
    bad_x = data[2][0].copy()
    bad_x[3, 1] = np.nan
    params, state = fresh(adam)
    clean_p, clean_s = fresh(adam)
    for i, (x, y) in enumerate(data):
        if i == 2:
            before = {n: a.copy() for n, a in {**params, **state}.items()}
            stats = adam.train_step(params, state, x=bad_x, y=y)
            assert stats["skipped"] is True and stats["nonfinite"] > 0
            for n, a in {**params, **state}.items():
                assert a.tobytes() == before[n].tobytes(), n
        stats = adam.train_step(params, state, x=x, y=y)
        adam.train_step(clean_p, clean_s, x=x, y=y)
        assert stats["skipped"] is False
    for n in params:                  # as if the bad batch had never come
        assert params[n].tobytes() == clean_p[n].tobytes()
    assert int(state["step"]) == 4


def test_without_skip_nonfinite_nan_goes_through() -> None:
    m = compile_train("f64", backend="interp", optimizer=SGD(lr=0.1, skip_nonfinite=False))
    params, state = fresh(m)
    x, y = batches("float64", 1)[0]
    x[0, 0] = np.inf
    stats = m.train_step(params, state, x=x, y=y)
    assert stats["skipped"] is False and stats["nonfinite"] > 0
    assert np.isnan(params["W1"]).any() and int(state["step"]) == 1


def test_nonfinite_counts_the_bad_gradient_elements() -> None:
    m = compile_train("f64", backend="interp", optimizer=SGD(lr=0.1))
    params, state = fresh(m)
    x, y = batches("float64", 1)[0]
    x[5, 2] = np.nan
    _, grads = m.value_and_grad(x=x, y=y, **params)
    stats = m.train_step(params, state, x=x, y=y)
    assert stats["nonfinite"] == sum(int(np.sum(~np.isfinite(g))) for g in grads.values())


def test_lr_zero_leaves_sgd_params_unchanged_and_lr_defaults_to_the_optimizers(
        adam: Model) -> None:
    m = compile_train("f64", backend="interp", optimizer=SGD(lr=0.5))
    params, state = fresh(m)
    x, y = batches("float64", 1)[0]
    before = {n: a.copy() for n, a in params.items()}
    m.train_step(params, state, lr=0.0, x=x, y=y)
    assert all(np.array_equal(params[n], before[n]) for n in params)
    _, grads = m.value_and_grad(x=x, y=y, **params)
    m.train_step(params, state, x=x, y=y)
    np.testing.assert_allclose(params["W1"], before["W1"] - 0.5 * grads["W1"], rtol=1e-12)


def test_state_saves_with_savez_and_training_resumes_identically(adam: Model) -> None:
    data = batches("float64", 6)
    params, state = fresh(adam)
    for x, y in data[:3]:
        adam.train_step(params, state, x=x, y=y)
    buf = io.BytesIO()
    np.savez(buf, **params, **{"state/" + k: v for k, v in state.items()})
    buf.seek(0)
    with np.load(buf) as f:
        loaded = {k: f[k] for k in f.files}
    p2 = {k: v for k, v in loaded.items() if not k.startswith("state/")}
    s2 = {k[len("state/"):]: v for k, v in loaded.items() if k.startswith("state/")}
    for x, y in data[3:]:
        adam.train_step(params, state, x=x, y=y)
        adam.train_step(p2, s2, x=x, y=y)
    for n in params:
        assert params[n].tobytes() == p2[n].tobytes()
    assert int(s2["step"]) == 6


def call_error(fn: Callable[[], Any], *words: str) -> None:
    with pytest.raises(graphc.GraphCallError) as e:
        fn()
    for w in words:
        assert w in str(e.value)


def test_errors_say_what_to_do(adam: Model) -> None:
    params, state = fresh(adam)
    x, y = batches("float64", 1)[0]
    call_error(lambda: adam.train_step(params, {}, x=x, y=y), "init_state")
    call_error(lambda: adam.train_step(params, {**state, "W1.momentum_buffer": state["step"]},
                                       x=x, y=y), "does not keep")
    plain = compile_train("f64", backend="interp")
    call_error(lambda: plain.train_step(params, state, x=x, y=y), "optimizer=")
    call_error(lambda: compile_train("f64", backend="interp", monitor=True), "optimizer")
    call_error(lambda: Adam(betas=(1.0, 0.9)), "betas[0]")
    call_error(lambda: SGD(lr=0.1, nesterov=True), "nesterov")
    call_error(lambda: SGD(lr=-1.0), "lr")
    call_error(lambda: Adam(clip_norm=0.0), "clip_norm")
    with pytest.raises(graphc.GraphArgumentTypeError):
        compile_train("f64", backend="interp", optimizer="adam")
    with pytest.raises(graphc.GraphArgumentTypeError):
        adam.train_step(params, state, lr="fast", x=x, y=y)
    frozen = {n: a.copy() for n, a in params.items()}
    frozen["W1"].flags.writeable = False
    call_error(lambda: adam.train_step(frozen, state, x=x, y=y), "in place", "W1")


# ---------------------------------------------------------------------------- micro-batches


def test_micro_batches_equal_the_full_batch_step() -> None:
    opt = Adam(lr=0.05, clip_norm=0.5)
    full = compile_train("f64", backend="interp", optimizer=opt, opt_level=1)
    micro = compile_train("f64", backend="interp", optimizer=opt, micro_batches=4, opt_level=1)
    p1, s1 = fresh(full)
    p4, s4 = fresh(micro)
    for x, y in batches("float64", 5):
        a = full.train_step(p1, s1, x=x, y=y)
        b = micro.train_step(p4, s4, x=x, y=y)
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-12)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-12)
    for n in p1:
        np.testing.assert_allclose(p4[n], p1[n], rtol=1e-10, atol=1e-14)
    before = {n: a.copy() for n, a in p4.items()}
    x, y = batches("float64", 1, rows=10)[0]
    call_error(lambda: micro.train_step(p4, s4, x=x, y=y), "micro_batches=4", "10 rows")
    assert all(np.array_equal(p4[n], before[n]) for n in p4) and int(s4["step"]) == 5


@pytest.mark.slow
def test_micro_batches_natively() -> None:
    opt = Adam(lr=0.05, clip_norm=0.5)
    full, micro = compile_train("f32", optimizer=opt), \
        compile_train("f32", optimizer=opt, micro_batches=4)
    p1, s1 = fresh(full)
    p4, s4 = fresh(micro)
    for x, y in batches("float32", 10):
        a = full.train_step(p1, s1, x=x, y=y)
        b = micro.train_step(p4, s4, x=x, y=y)
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5)
    for n in p1:
        np.testing.assert_allclose(p4[n], p1[n], rtol=1e-5, atol=1e-6)


def test_micro_batches_hold_the_activations_of_one_slice() -> None:
    models = {k: compile_train("f64", backend="interp", optimizer=SGD(lr=0.1), micro_batches=k)
              for k in (1, 4)}
    plans = {k: m.memory_plan(func="train_step", N=2048) for k, m in models.items()}
    assert plans[4].dims == {"N": 512}        # N names the whole batch: slices of 512
    assert plans[4].peak_bytes <= 0.5 * plans[1].peak_bytes   # activations dominate params here
    call_error(lambda: models[4].memory_plan(func="train_step", N=2047), "does not divide")


def test_init_state_refuses_a_param_of_the_wrong_shape() -> None:
    """It made state shaped as whatever array it was given."""
    m = compile_train("f64", backend="interp", optimizer=Adam(lr=0.1))
    params = fresh(m)[0]
    params["W1"] = np.zeros(3)
    call_error(lambda: m.init_state(params), "W1", "shape (3,)")

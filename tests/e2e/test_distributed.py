"""graphc.distributed: data-parallel train_step. One ``mpiexec -n 2`` launch runs this file as a
script (``worker``) over four scenarios (even shards, uneven shards 33/31, bf16 gradients, one
empty shard) and a one-process reference on the full batch; the tests compare what the ranks
saved. The no-op single-process communicator and bfloat16 rounding are tested in-process."""
from __future__ import annotations

import copy
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphc
import graphc.distributed as dist

SRC = """
graph mlp {
    input  x: f32[N, 8]
    input  y: f32[N, 3]
    param  W1: f32[8, 16] = glorot_uniform
    param  b1: f32[16]    = zeros
    param  W2: f32[16, 3] = glorot_uniform
    param  b2: f32[3]     = zeros
    h      = tanh(x @ W1 + b1)
    logits = h @ W2 + b2
    loss   = mean(softmax_cross_entropy(logits, y))
    output loss
    grad   loss
}
"""
STEPS = 20
BATCH = 64
SCENARIOS = {"even": (None, (32, 32)), "uneven": (None, (33, 31)), "bf16": ("bf16", (33, 31)),
             "empty": (None, (64, 0))}           # rank 1 has no examples: it adds nothing
BF16_RTOL = 3e-2     # params after 20 Adam steps, bf16 vs f32 gradients (measured: at most 8e-3)


def optimizer() -> graphc.optim.Optimizer:
    # clip_norm below the first steps' gradient norm: clipping uses the global norm
    return graphc.optim.Adam(lr=1e-2, clip_norm=0.3)


def batch(step: int) -> tuple[np.ndarray, np.ndarray]:
    """The global batch of a step: the same on every rank."""
    rng = np.random.default_rng(1000 + step)
    x = rng.standard_normal((BATCH, 8)).astype(np.float32)
    return x, np.eye(3, dtype=np.float32)[rng.integers(0, 3, BATCH)]


def train(model: graphc.Model, params: dict, rows: slice) -> dict[str, np.ndarray]:
    """STEPS steps on ``rows`` of each global batch: the final params and state, each step's
    stats."""
    state = model.init_state(params)
    stats = []
    for t in range(STEPS):
        x, y = batch(t)
        stats.append(model.train_step(params, state, x=x[rows], y=y[rows]))
    out = {f"param/{k}": v for k, v in params.items()}
    out.update({f"state/{k}": v for k, v in state.items()})
    for key in ("loss", "grad_norm", "examples", "skipped"):
        if key in stats[0]:
            out[f"stats/{key}"] = np.array([s[key] for s in stats])
    return out


def worker(out: Path) -> None:
    """Under ``mpiexec -n 2``: each rank saves rank<r>.npz."""
    comms = {c: dist.init(compress=c) for c in (None, "bf16")}
    rank = comms[None].rank
    assert comms[None].size == 2, comms[None]
    saved: dict[str, np.ndarray] = {}
    for name, (compress, sizes) in SCENARIOS.items():
        comm = comms[compress]
        model = graphc.compile_source(SRC, optimizer=optimizer(), data_parallel=comm)
        params = model.init_params(seed=rank)            # differs until broadcast
        comm.broadcast_params(params)
        lo = sum(sizes[:rank])
        saved.update({f"{name}/{k}": v for k, v in
                      train(model, params, slice(lo, lo + sizes[rank])).items()})
    if rank == 0:
        model = graphc.compile_source(SRC, optimizer=optimizer())
        saved.update({f"ref/{k}": v for k, v in
                      train(model, model.init_params(seed=0), slice(None)).items()})
    np.savez(out / f"rank{rank}.npz", **saved)


# ---------------------------------------------------------------------------- over MPI


def _mpiexec() -> str | None:
    """The mpiexec beside this Python (the mpich wheel's), else the one on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, np.ndarray]]:
    pytest.importorskip("mpi4py", reason="mpi4py is not installed: pip install -e "
                                         "'.[distributed]' to test data-parallel training")
    mpiexec = _mpiexec()
    if mpiexec is None:
        pytest.skip("no mpiexec on PATH (pip install mpich gives one)")
    out = tmp_path_factory.mktemp("dp")
    env = {**os.environ, "GRAPHC_NUM_THREADS": "1"}
    proc = subprocess.Popen([mpiexec, "-n", "2", sys.executable, "-m", "mpi4py", __file__,
                             str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"mpiexec -n 2 timed out:\n{log}")
    assert proc.returncode == 0, log
    return [dict(np.load(out / f"rank{r}.npz")) for r in (0, 1)]


@pytest.mark.slow
def test_train_digits_dp_example_learns_on_two_ranks() -> None:
    pytest.importorskip("mpi4py", reason="mpi4py is not installed")
    pytest.importorskip("sklearn", reason="the example needs scikit-learn")
    mpiexec = _mpiexec()
    if mpiexec is None:
        pytest.skip("no mpiexec on PATH (pip install mpich gives one)")
    script = Path(__file__).resolve().parents[2] / "examples" / "train_digits_dp.py"
    out = subprocess.run([mpiexec, "-n", "2", sys.executable, "-m", "mpi4py", str(script),
                          "--epochs", "6"], capture_output=True, text=True, timeout=180,
                         check=False, env={**os.environ, "GRAPHC_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout + out.stderr
    epochs = [ln for ln in out.stdout.splitlines() if ln.startswith("epoch")]
    assert "rank 0 of 2" in out.stdout and len(epochs) == 2, out.stdout   # rank 0 alone says
    acc = float(out.stdout.split("test accuracy")[-1].split()[0])
    assert acc > 0.9, out.stdout


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_rank_holds_bitwise_the_same_params_and_stats(ranks, scenario) -> None:
    a, b = ranks
    keys = [k for k in a if k.startswith(scenario + "/")]
    assert keys and keys == [k for k in b if k.startswith(scenario + "/")]
    for k in keys:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k


@pytest.mark.parametrize("scenario", ["even", "uneven", "empty"])
def test_matches_one_process_on_the_full_batch(ranks, scenario) -> None:
    """20 Adam steps (clipped by the global norm) on shards equal the full-batch run: every
    param to 1e-5 of its largest element, each step's loss and gradient norm to 1e-5."""
    got, ref = ranks[0], ranks[0]
    for k in [k[len("ref/"):] for k in ref if k.startswith("ref/")]:
        want = ref[f"ref/{k}"]
        have = got[f"{scenario}/{k}"]
        if k.startswith("param/"):       # relative to the tensor's largest element
            assert np.abs(have - want).max() <= 1e-5 * np.abs(want).max(), k
        elif k in ("stats/loss", "stats/grad_norm"):   # global, not this rank's
            np.testing.assert_allclose(have, want, rtol=1e-5, err_msg=k)
    assert (got[f"{scenario}/stats/examples"] == BATCH).all()
    assert not got[f"{scenario}/stats/skipped"].any()
    assert got[f"{scenario}/state/step"] == STEPS
    # the first step's gradient norm is past clip_norm, so clipping was exercised
    assert got[f"{scenario}/stats/grad_norm"][0] > optimizer().clip_norm


def test_bf16_gradients_stay_close_to_f32(ranks) -> None:
    got = ranks[0]
    for k in [k for k in got if k.startswith("uneven/param/")]:
        want, have = got[k], got[k.replace("uneven/", "bf16/")]
        assert not np.array_equal(have, want), "bf16 made no difference: was it applied?"
        err = np.abs(have - want).max() / np.abs(want).max()
        assert err < BF16_RTOL, (k, err)
    np.testing.assert_allclose(got["bf16/stats/loss"], got["uneven/stats/loss"], rtol=1e-3)


# ---------------------------------------------------------------------------- one process


@pytest.fixture(scope="module")
def models() -> dict[str, graphc.Model]:
    opt = graphc.optim.Adam(lr=1e-2, clip_norm=0.3)
    return {"dp": graphc.compile_source(SRC, optimizer=opt, data_parallel=dist.Local(),
                                        monitor=True),
            "plain": graphc.compile_source(SRC, optimizer=opt, monitor=True)}


def test_local_communicator_trains_as_train_step(models) -> None:
    """Size 1: the two halves (gradient buffer, update) give train_step's params and stats."""
    dp, plain = models["dp"], models["plain"]
    p1, p2 = dp.init_params(seed=0), plain.init_params(seed=0)
    s1, s2 = dp.init_state(p1), plain.init_state(p2)
    for t in range(5):
        x, y = batch(t)
        x, y = x[:37], y[:37]              # not a power of two: the weighting is not exact
        a, b = dp.train_step(p1, s1, x=x, y=y), plain.train_step(p2, s2, x=x, y=y)
        assert a["examples"] == 37 and a.keys() - {"examples"} == b.keys()
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)
        np.testing.assert_allclose(a["grad_norm"], b["grad_norm"], rtol=1e-6)
        for k in b["grad_norms"]:
            np.testing.assert_allclose(a["grad_norms"][k], b["grad_norms"][k], rtol=1e-6)
    for k in p2:
        np.testing.assert_allclose(p1[k], p2[k], rtol=1e-5, atol=1e-7, err_msg=k)
    assert s1["step"] == 5


def test_nonfinite_step_is_skipped_on_the_data_parallel_path(models) -> None:
    dp = models["dp"]
    params = dp.init_params(seed=0)
    state = dp.init_state(params)
    x, y = batch(0)
    dp.train_step(params, state, x=x, y=y)
    before = {k: v.copy() for k, v in {**params, **state}.items()}
    x = x.copy()
    x[3, 2] = np.nan
    stats = dp.train_step(params, state, x=x, y=y)
    assert stats["skipped"] and stats["nonfinite"] > 0
    for k, v in {**params, **state}.items():
        assert v.tobytes() == before[k].tobytes(), k
    assert not dp.train_step(params, state, x=batch(1)[0], y=batch(1)[1])["skipped"]


def test_data_parallel_with_micro_batches_matches(models) -> None:
    plain = models["plain"]
    dp = graphc.compile_source(SRC, optimizer=plain.optimizer, data_parallel=dist.Local(),
                               micro_batches=2)
    p1, p2 = dp.init_params(seed=1), plain.init_params(seed=1)
    s1, s2 = dp.init_state(p1), plain.init_state(p2)
    for t in range(3):
        x, y = batch(t)
        a, b = dp.train_step(p1, s1, x=x, y=y), plain.train_step(p2, s2, x=x, y=y)
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
    for k in p2:
        np.testing.assert_allclose(p1[k], p2[k], rtol=1e-5, atol=1e-7, err_msg=k)
    with pytest.raises(graphc.GraphCallError, match="does not divide"):
        dp.train_step(p1, s1, x=x[:5], y=y[:5])


def test_misuse_is_a_clear_error(models) -> None:
    with pytest.raises(graphc.GraphCallError, match="needs an optimizer"):
        graphc.compile_source(SRC, data_parallel=dist.Local())
    with pytest.raises(graphc.GraphArgumentTypeError, match="graphc.distributed.init"):
        graphc.compile_source(SRC, optimizer=graphc.optim.SGD(), data_parallel="mpi")
    with pytest.raises(graphc.GraphCallError, match="compress"):
        dist.init(compress="fp8")
    with pytest.raises(graphc.GraphCallError, match="cannot be pickled"):
        pickle.dumps(models["dp"])
    comm = models["dp"].data_parallel
    assert copy.deepcopy(comm) is comm
    params = models["dp"].init_params(seed=0)
    with pytest.raises(graphc.GraphCallError, match="unexpected argument 'z'"):
        models["dp"].train_step(params, models["dp"].init_state(params), x=batch(0)[0],
                                y=batch(0)[1], z=1.0)


def test_init_without_mpi(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mpi4py", None)        # import mpi4py fails
    for var in dist._LAUNCHER_SIZE:
        monkeypatch.delenv(var, raising=False)
    comm = dist.init(compress="bf16")
    assert isinstance(comm, dist.Local) and (comm.rank, comm.size) == (0, 1)
    params = {"w": np.arange(3.0)}
    assert comm.broadcast_params(params)["w"].tolist() == [0.0, 1.0, 2.0]
    monkeypatch.setenv("PMI_SIZE", "4")                      # launched by mpiexec -n 4
    with pytest.raises(graphc.GraphCallError, match="mpi4py is not installed"):
        dist.init()


def test_shard_splits_rows_as_array_split() -> None:
    comm = dist.Local()
    x = np.arange(65)
    assert comm.shard(x).tolist() == x.tolist()
    comm.size = 2
    got = []
    for comm.rank in (0, 1):
        a, b = comm.shard(x, x * 2)
        got.append(a)
        assert (b == a * 2).all()
    assert [len(g) for g in got] == [33, 32] and np.concatenate(got).tolist() == x.tolist()


def test_bf16_rounds_to_nearest_even() -> None:
    one = np.float32(1.0)
    ulp = 2.0 ** -7                                   # bfloat16's spacing at 1
    x = np.array([1.0, 1 + ulp / 2, 1 + 1.5 * ulp, 1 + ulp / 2 + 2.0 ** -20, -2.5, 0.0, -0.0,
                  np.inf, -np.inf, np.finfo(np.float32).max], np.float32)
    want = [1.0, 1.0, 1 + 2 * ulp, 1 + ulp, -2.5, 0.0, -0.0, np.inf, -np.inf, np.inf]
    got = dist.from_bf16(dist.to_bf16(x))
    assert got.tolist() == want and np.signbit(got[6])
    assert np.isnan(dist.from_bf16(dist.to_bf16(np.array([np.nan], np.float32))))[0]
    rng = np.random.default_rng(0)
    r = (rng.standard_normal(10_000) * 10.0 ** rng.integers(-20, 20, 10_000)).astype(np.float32)
    back = dist.from_bf16(dist.to_bf16(r)).astype(np.float64)
    err = np.abs(back - r)
    assert (err <= np.abs(r) * 2.0 ** -8).all()          # half a unit in bfloat16's 8 bits
    # nearest: the neighbour on the other side, one bfloat16 step away, is no closer
    step = np.abs(dist.from_bf16(dist.to_bf16(r) + np.uint16(1)).astype(np.float64) - back)
    assert (err <= step / 2).all()
    assert one == dist.from_bf16(dist.to_bf16(np.array([one])))[0]


def test_init_under_mpi_singleton_is_local() -> None:
    """With mpi4py but no mpiexec, a world of one: the no-op communicator."""
    pytest.importorskip("mpi4py")
    env = {k: v for k, v in os.environ.items() if k not in dist._LAUNCHER_SIZE}
    code = "import graphc.distributed as d; print(type(d.init()).__name__)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.stdout.strip() == "Local", out.stderr


if __name__ == "__main__":
    worker(Path(sys.argv[1]))

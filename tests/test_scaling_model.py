"""Arithmetic of the scaling models in benchmarks/scaling_model.py (serial; no MPI, no timing)."""

import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import scaling_model as sm  # noqa: E402


def test_allreduce_time_hand_cases():
    assert sm.allreduce_time(1, 1e9, 1.0, 1.0) == 0.0
    assert sm.allreduce_time(2, 0, 1e-6, 1e-9) == pytest.approx(2e-6)
    # P = 4, 1000 bytes: 2 log2(4) alpha + 2 (3/4) n beta
    assert sm.allreduce_time(4, 1000, 1e-6, 1e-9) == pytest.approx(4e-6 + 1.5e-6)


def test_fit_alpha_beta_recovers_the_network():
    sizes = [8, 1024, 65536, 1 << 20]
    for P in (2, 4, 16):
        times = [sm.allreduce_time(P, s, 1.7e-6, 2.5e-10) for s in sizes]
        a, b = sm.fit_alpha_beta(P, sizes, times)
        assert a == pytest.approx(1.7e-6, rel=1e-6) and b == pytest.approx(2.5e-10, rel=1e-6)


def test_power_fit():
    ps = [2, 4, 8]
    assert sm.power_fit(ps, [3 * p ** 0.5 for p in ps], 7.0) == pytest.approx(0.5)
    assert sm.power_fit([2], [5.0], 7.0) == 7.0  # one point: the default
    assert sm.power_fit([2, 4], [5.0, 0.0], 7.0) == 7.0  # zero counts carry no exponent


def _measured(net2):
    """A 1-rank and a 2-rank measurement consistent with the model (hand-built)."""
    m1 = dict(wall=10.0, time_rounds=6.0, time_schedule=1.0, updates=1000, rounds=10, ar_calls=20, ar_bytes=8000,
              ar_time=0.0, gram_time=0.5, ranks=1)
    c_u, s_u, h = 5.0 / 1000, 0.5 / 1000, 1e-3  # c_u from m1; s_u and h are what m2 will show
    upd, rounds = 1200, 60
    comm_round = sm.allreduce_time(2, 8 * (2 * upd / rounds + 1), *net2)
    t_rounds2 = c_u * upd / 2 + s_u * upd + rounds * (h + comm_round)
    o_div, o_rep = 3.0, 1.0  # m1: wall - rounds = 4 = o_div + o_rep (the Gram sweeps, 0.5 s, are part of o_rep)
    ar_time2 = 20 * sm.allreduce_time(2, 0, *net2) + sm.allreduce_time(2, 8000, 0.0, net2[1])
    m2 = dict(wall=t_rounds2 + o_div / 2 + o_rep + ar_time2, time_rounds=t_rounds2, time_schedule=s_u * upd,
              updates=upd, rounds=rounds, ar_calls=20, ar_bytes=8000, ar_time=ar_time2, gram_time=0.5, ranks=2,
              compute_cpu=c_u * upd / 2 + s_u * upd + o_div / 2 + o_rep)  # CPU outside the collectives
    return m1, m2, dict(c_u=c_u, s_u=s_u, h=h, o_div=o_div, o_rep=o_rep)


def test_strads_inputs_and_time_reproduce_a_hand_built_case():
    net2 = (2e-6, 1e-9)
    m1, m2, truth = _measured(net2)
    inp = sm.strads_inputs(m1, m2, net2)
    for k, v in truth.items():
        assert inp[k] == pytest.approx(v, rel=1e-9), k
    assert sm.strads_time(inp, 1, *net2)[0] == m1["wall"]
    assert sm.strads_time(inp, 2, *net2)[0] == pytest.approx(m2["wall"], rel=1e-9)
    # counts beyond 2 ranks with only 1-2 measured: updates as at 2, rounds of P/2 times the size
    upd, rounds, calls, nbytes = sm.strads_counts(inp, 8)
    assert upd == 1200 and rounds == pytest.approx(60 / 4) and calls == 20 and nbytes == 8000


def test_strads_round_size_is_capped_and_growth_is_fitted():
    net2 = (2e-6, 1e-9)
    m1, m2, _ = _measured(net2)
    m4 = dict(m2, ranks=4, updates=2400, rounds=60)  # twice the updates, same number of rounds
    inp = sm.strads_inputs(m1, m2, net2, [m4])
    assert inp["grow"]["updates"] == pytest.approx(1.0) and inp["grow"]["round"] == pytest.approx(1.0)
    upd, rounds, _, _ = sm.strads_counts(inp, 4)
    assert upd == pytest.approx(2400) and rounds == pytest.approx(60)
    upd, rounds, _, _ = sm.strads_counts(inp, 1 << 20)  # round size stops at the cap: rounds grow
    assert upd / rounds == pytest.approx(inp["round_cap"])


def test_strads_limits():
    net2 = (2e-6, 1e-9)
    m1, m2, _ = _measured(net2)
    inp = sm.strads_inputs(m1, m2, net2)
    # on a free network with no serial part and no per-round overhead, compute alone: T(P) = c_u U / P + o_div / P
    free = dict(inp, s_u=0.0, h=0.0, o_rep=0.0)
    for P in (2, 8, 64):
        assert sm.strads_time(free, P, 0.0, 0.0)[0] == pytest.approx((free["c_u"] * 1200 + free["o_div"]) / P)
    # compute falls with P, communication and scheduling do not: T(P) has a floor and rises at high latency
    ts = [sm.strads_time(inp, P, 1.5e-6, 1e-10)[0] for P in (2, 4, 8, 16, 32, 64, 128, 256)]
    floor = inp["s_u"] * 1200 + inp["o_rep"]
    assert all(t > floor for t in ts)
    capped = dict(inp, round_cap=inp["round2"])  # rounds no longer grow: their count stays, latency grows
    slow = [sm.strads_time(capped, P, 1e-2, 1e-10)[0] for P in (8, 16, 32)]
    assert slow[0] < slow[1] < slow[2]
    parts = sm.strads_time(inp, 16, 1.5e-6, 1e-10)[1]
    assert set(parts) == {"compute", "rounds_comm", "schedule", "other_comm"}


def test_delta_bytes_wire_format():
    # whole rows (MF): dense units of 8 + 100 * 8 bytes, 10 of them
    assert sm.delta_bytes(1000, 100, 8, 0.01, entries=False) == pytest.approx((8080.0, 8080.0, 10.0))
    # 0.1 % of the entries of a 20000 x 1000 int32 table: sparse units, 12 bytes + 6 per entry
    dirty = 20000 * (1 - 0.999 ** 1000)
    s, d, u = sm.delta_bytes(20000, 1000, 4, 0.001)
    assert u == pytest.approx(dirty)
    assert s == pytest.approx(12 * dirty + 6 * 20000)
    assert d == pytest.approx(dirty * 4008)
    # 10 % of 50 int32 columns: a unit with m nonzeros goes sparse (12 + 6 m bytes) only while
    # 12 + 6 m <= 208 / 4, i.e. m <= 6; the binomial tail goes dense (208 bytes)
    pmf = [math.comb(50, m) * 0.1 ** m * 0.9 ** (50 - m) for m in range(51)]
    want = 100 * sum(pmf[m] * (12 + 6 * m if m <= 6 else 208) for m in range(1, 51))
    assert sm.delta_bytes(100, 50, 4, 0.1)[0] == pytest.approx(want)
    # every entry changed: sparse pairs would exceed a quarter of the unit, so units go dense
    s, d, u = sm.delta_bytes(100, 50, 4, 1.0)
    assert s == d == pytest.approx(100 * 208)
    # bytes grow with the density
    b = [sm.delta_bytes(20000, 1000, 4, x)[0] for x in (1e-4, 1e-3, 1e-2, 1e-1)]
    assert b == sorted(b)


def test_bosen_bytes_hand_cases_and_limits():
    R, C, isz = 1000, 100, 8
    table = R * (8 + C * isz)
    assert sm.bosen_bytes(1, R, C, isz, 5e4, 8e4) == (0.0, 0.0, 0.0, 0.0)
    inc_s, pull_s, inc_d, pull_d = sm.bosen_bytes(2, R, C, isz, 5e4, 8e4)
    assert inc_s == pytest.approx(2.5e4 + 64) and inc_d == pytest.approx(4e4 + 64)
    assert pull_s == pytest.approx(5e4) and pull_d == pytest.approx(table / 2)
    # the first whole-table fetch spread over 8 clocks
    assert sm.bosen_bytes(2, R, C, isz, 5e4, 8e4, 8)[1] == pytest.approx(5e4 + table / 2 / 8)
    # an app that fetches in half the clocks, its logs spanning 2 clocks of deltas
    _, pull_s, _, pull_d = sm.bosen_bytes(4, R, C, isz, 5e3, 8e4, 0, 0.5, 2.0)
    assert pull_d == pytest.approx(0.5 * 0.75 * table) and pull_s == pytest.approx(2.0 * 3 * 5e3)
    # a fixed delta per rank: sparse pulls grow ~ P until they reach the dense path's whole remote table
    pulls = [sm.bosen_bytes(P, R, C, isz, 5e4, 8e4) for P in (2, 4, 8, 16, 64, 256)]
    assert [p[1] for p in pulls] == sorted(p[1] for p in pulls)
    assert all(p[1] <= p[3] + 1e-9 for p in pulls)
    assert pulls[-1][1] == pytest.approx(pulls[-1][3])


def test_clock_time_and_its_fit_are_inverse():
    assert sm.clock_messages(1) == 0 and sm.clock_messages(4) == 3 * 3 + 2 * 2
    assert sm.clock_time(0.3, 1, 1e9, 1.0, 1.0, 1.0) == 0.3  # one rank: compute only
    t2 = sm.clock_time(0.4, 2, 2e6, 3e-10, 5e-6, 1e-10)
    assert t2 == pytest.approx(0.2 + 2e6 * 4e-10 + 5 * 5e-6)  # 3 (P-1) + 2 log2 P = 5 latencies
    assert sm.fit_c_byte(t2, 0.4, 2e6, 5e-6, 1e-10) == pytest.approx(3e-10)
    assert sm.fit_c_byte(0.0, 0.4, 2e6, 5e-6, 1e-10) == 0.0  # never negative
    # fixed local work stays at every P and is not taken for per-byte cost
    t2f = sm.clock_time(0.0, 2, 2e6, 3e-10, 5e-6, 1e-10, fixed=0.1)
    assert sm.clock_time(0.0, 1, 0, 3e-10, 5e-6, 1e-10, fixed=0.1) == 0.1
    assert sm.fit_c_byte(t2f, 0.0, 2e6, 5e-6, 1e-10, fixed=0.1) == pytest.approx(3e-10)
    # compute / P falls, the per-clock messages rise: time per clock has a minimum in P
    ts = [sm.clock_time(0.4, P, 1e5, 1e-10, 1.5e-6, 1e-10) for P in (2, 8, 32, 128, 1024, 8192)]
    assert min(ts) < ts[0] and ts[-1] > min(ts)
    assert math.isfinite(sum(ts)) and np.all(np.asarray(ts) > 0)


def test_strads_one_rank_inputs_scale_by_the_cpu_share():
    net2 = (2e-6, 1e-9)
    m1, m2, truth = _measured(net2)
    half = sm.strads_inputs(dict(m1, cpu=0.5 * m1["wall"]), m2, net2)  # the fit got half a core
    assert half["wall1"] == pytest.approx(5.0) and half["cpu_share1"] == pytest.approx(0.5)
    assert half["c_u"] == pytest.approx(0.5 * truth["c_u"])
    assert half["o_div"] + half["o_rep"] == pytest.approx(0.5 * (truth["o_div"] + truth["o_rep"]))
    assert sm.strads_inputs(dict(m1, cpu=2 * m1["wall"]), m2, net2)["c_u"] == pytest.approx(truth["c_u"])  # <= 1
    # the replicated part is never below the timed Gram sweeps, nor above all the work outside the rounds
    low = sm.strads_inputs(m1, dict(m2, compute_cpu=0.0), net2)
    assert low["o_rep"] == pytest.approx(0.5) and low["o_div"] == pytest.approx(3.5)
    high = sm.strads_inputs(m1, dict(m2, compute_cpu=100.0), net2)
    assert high["o_rep"] == pytest.approx(4.0) and high["o_div"] == 0.0

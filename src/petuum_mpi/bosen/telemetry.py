"""Counters of the parameter server (global and per table) and their reports."""

from __future__ import annotations

import numpy as np

HIST_BINS = 32  # staleness 0..30 and ">= 31"
OBS_LO, OBS_BINS = -16, 64  # observed staleness: bins <= -16, -15, ..., 46, >= 47
_SUMMED = ("msgs", "bytes_sent", "bytes_fetched", "gets", "chunks_applied", "torn_reads", "deferred_sends",
           "inc_bytes_sent", "inc_bytes_recv", "pull_bytes_recv")


def new_counters() -> dict:
    """The global counters of one rank (``stats()`` reports them as they are)."""
    return {"wait_s": 0.0, "msgs": 0, "bytes_sent": 0, "bytes_fetched": 0, "gets": 0, "chunks_applied": 0,
            "straggler_sleep_s": 0.0, "torn_reads": 0, "deferred_sends": 0, "snapshots": 0,
            "inc_bytes_sent": 0, "inc_bytes_recv": 0, "pull_bytes_recv": 0}


def per_clock(g: dict, clock: int, elapsed: float) -> dict:
    """Traffic and time per clock of one rank: ``inc_bytes_sent`` (mailbox chunks Put to other
    owners), ``inc_bytes_recv`` (chunks other origins put into my mailboxes, counted when applied),
    ``pull_bytes_recv`` (everything a fetch Gets from other owners: headers, rows, delta logs),
    ``time_s`` (wall time)."""
    n = max(clock, 1)
    return {"inc_bytes_sent": g["inc_bytes_sent"] / n, "inc_bytes_recv": g["inc_bytes_recv"] / n,
            "pull_bytes_recv": g["pull_bytes_recv"] / n, "time_s": elapsed / n}


def rank_stats(rank: int, clock: int, elapsed: float, g: dict, tables) -> dict:
    """``stats()`` of one rank: the counters ``g`` and every table's."""
    out = {"rank": rank, "clock": clock, "elapsed_s": elapsed, **g}
    out["per_clock"] = per_clock(g, clock, elapsed)
    out["tables"] = {t.name: {**t.stats.as_dict(elapsed, clock), "cache_evictions": t.cache.evictions,
                                "oplog_grows": t.log.grows} for t in tables}
    return out


def memory(tables, window_bytes: int) -> dict:
    """Bytes this rank holds: ``window`` (header, mailboxes, delta logs, shards, freshness),
    of which ``shards`` are its part of the tables; ``caches`` (fetched copies and their
    bookkeeping) and ``oplogs`` (unsent and held deltas); ``total`` = window + caches + oplogs."""
    caches = sum(t.cache.nbytes() for t in tables)
    oplogs = sum(t.log.nbytes() for t in tables)
    shards = sum(t.shard.nbytes for t in tables if t.shard is not None)
    return {"window": window_bytes, "shards": shards, "caches": caches, "oplogs": oplogs,
            "total": window_bytes + caches + oplogs}


def merge_ranks(allst: list[dict], names: list[str]) -> dict:
    """``stats_all()``: the ``stats()`` of every rank merged (tables ``names``)."""
    out = {"ranks": len(allst), "clock_min": min(s["clock"] for s in allst), "per_rank": allst}
    for k in ("wait_s", "straggler_sleep_s"):
        out[k + "_max"] = max(s[k] for s in allst)
    for k in _SUMMED:
        out[k] = sum(s[k] for s in allst)
    out["tables"] = {n: merge([s["tables"][n] for s in allst]) for n in names}
    out["per_clock_max"] = {k: max(s["per_clock"][k] for s in allst) for k in allst[0]["per_clock"]}
    out["bytes_per_rank_max"] = {k: max(s["bytes_per_rank"][k] for s in allst) for k in allst[0]["bytes_per_rank"]}
    return out


def figures(stats: dict, table: str) -> dict:
    """Headline figures of one rank for an app's metrics row: staleness of
    ``table``'s reads (mean, max), time spent waiting, bytes and messages sent, and
    bytes per clock (incs sent, pulls received)."""
    t = stats["tables"][table]
    pc = stats["per_clock"]
    return {"staleness_mean": t["staleness_mean"], "staleness_max": t["staleness_max"],
            "observed_staleness_mean": t["observed_mean"], "observed_staleness_var": t["observed_var"],
            "wait_s": stats["wait_s"],
            "bytes_sent": stats["bytes_sent"], "msgs": stats["msgs"],
            "inc_bytes_per_clock": pc["inc_bytes_sent"], "pull_bytes_per_clock": pc["pull_bytes_recv"],
            "bytes_per_rank": stats["bytes_per_rank"]["total"]}


class TableStats:
    """Counters of one table on one rank."""

    def __init__(self) -> None:
        self.reads = 0
        self.cached_reads = 0
        self.st_sum = 0.0
        self.st_sq = 0.0
        self.st_max = 0
        self.hist = np.zeros(HIST_BINS, dtype=np.int64)
        self.wait_s = 0.0
        self.fetch_units = 0
        self.fetch_msgs = 0
        self.fetch_bytes = 0
        self.incs = 0
        self.sent_units = 0
        self.sent_bytes = 0
        self.sent_sparse_units = 0
        self.fetch_log_bytes = 0
        self.fetch_log_units = 0
        self.obs_n = 0
        self.obs_sum = 0.0
        self.obs_sq = 0.0
        self.obs_min = 0
        self.obs_max = 0
        self.obs_hist = np.zeros(OBS_BINS, dtype=np.int64)
        self.managed_units = 0
        self.managed_bytes = 0
        self.spilled_units = 0
        self.pulled_units = 0

    def observed(self, st: int) -> None:
        """A read whose copy's newest data of other workers is ``st`` clocks older than
        the reader's clock (the oldest such unit of the read)."""
        if self.obs_n == 0 or st < self.obs_min:
            self.obs_min = st
        if self.obs_n == 0 or st > self.obs_max:
            self.obs_max = st
        self.obs_n += 1
        self.obs_sum += st
        self.obs_sq += st * st
        self.obs_hist[min(max(st - OBS_LO, 0), OBS_BINS - 1)] += 1

    def read(self, staleness: int, cached: bool) -> None:
        self.reads += 1
        self.cached_reads += cached
        self.st_sum += staleness
        self.st_sq += staleness * staleness
        if staleness > self.st_max:
            self.st_max = staleness
        self.hist[min(max(staleness, 0), HIST_BINS - 1)] += 1

    def as_dict(self, elapsed: float, clocks: int) -> dict:
        n = max(self.reads, 1)
        mean = self.st_sum / n
        on = max(self.obs_n, 1)
        omean = self.obs_sum / on
        return {
            "observed_count": self.obs_n,
            "observed_mean": omean,
            "observed_var": max(self.obs_sq / on - omean * omean, 0.0),
            "observed_min": int(self.obs_min),
            "observed_max": int(self.obs_max),
            "observed_hist": self.obs_hist.tolist(),
            "managed_units": self.managed_units,
            "managed_bytes": self.managed_bytes,
            "spilled_units": self.spilled_units,
            "pulled_units": self.pulled_units,
            "reads": self.reads,
            "cached_reads": self.cached_reads,
            "staleness_mean": mean,
            "staleness_var": max(self.st_sq / n - mean * mean, 0.0),
            "staleness_max": int(self.st_max),
            "staleness_hist": self.hist.tolist(),
            "wait_s": self.wait_s,
            "fetch_units": self.fetch_units,
            "fetch_msgs": self.fetch_msgs,
            "fetch_bytes": self.fetch_bytes,
            "incs": self.incs,
            "sent_units": self.sent_units,
            "sent_bytes": self.sent_bytes,
            "sent_sparse_units": self.sent_sparse_units,
            "fetch_log_bytes": self.fetch_log_bytes,
            "fetch_log_units": self.fetch_log_units,
            "clocks": clocks,
            "clocks_per_s": clocks / elapsed if elapsed > 0 else 0.0,
        }


def merge(dicts: list[dict]) -> dict:
    """Combine the per-rank dicts of one table (sums; staleness pooled; max of max)."""
    out: dict = {}
    reads = sum(d["reads"] for d in dicts)
    for k in ("reads", "cached_reads", "fetch_units", "fetch_msgs", "fetch_bytes", "incs", "sent_units", "sent_bytes",
              "sent_sparse_units", "fetch_log_bytes", "fetch_log_units", "observed_count", "managed_units",
              "managed_bytes", "cache_evictions", "spilled_units", "oplog_grows",
              "pulled_units"):
        out[k] = sum(d[k] for d in dicts)
    if reads:
        mean = sum(d["staleness_mean"] * d["reads"] for d in dicts) / reads
        sq = sum((d["staleness_var"] + d["staleness_mean"] ** 2) * d["reads"] for d in dicts) / reads
    else:
        mean, sq = 0.0, 0.0
    out["staleness_mean"] = mean
    out["staleness_var"] = max(sq - mean * mean, 0.0)
    out["staleness_max"] = max(d["staleness_max"] for d in dicts)
    out["staleness_hist"] = np.sum([d["staleness_hist"] for d in dicts], axis=0).tolist()
    on = out["observed_count"]
    have = [d for d in dicts if d["observed_count"]]
    if on:
        om = sum(d["observed_mean"] * d["observed_count"] for d in have) / on
        osq = sum((d["observed_var"] + d["observed_mean"] ** 2) * d["observed_count"] for d in have) / on
    else:
        om, osq = 0.0, 0.0
    out["observed_mean"] = om
    out["observed_var"] = max(osq - om * om, 0.0)
    out["observed_min"] = min((d["observed_min"] for d in have), default=0)
    out["observed_max"] = max((d["observed_max"] for d in have), default=0)
    out["observed_hist"] = np.sum([d["observed_hist"] for d in dicts], axis=0).tolist()
    out["wait_s_max"] = max(d["wait_s"] for d in dicts)
    out["wait_s_mean"] = float(np.mean([d["wait_s"] for d in dicts]))
    out["clocks_per_s_min"] = min(d["clocks_per_s"] for d in dicts)
    return out

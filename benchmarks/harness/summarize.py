#!/usr/bin/env python3
"""Summarize harness runs: summarize.py RESULTS_DIR [RESULTS_DIR ...]

Per system and phase (warm-up excluded, as the harness does):
  completion/s median (peak), enqueue/s median, claim p50/p95/p99 (medians of
  the adapter's 30-s rolling windows), queue depth median/peak, dead tuples
  median/peak (n_dead_tup summed over the adapter's event tables), dead tuples
  per completed job, jobs_lost and chaos_recovery_time_s (the harness's, on the
  phase after a chaos span).
Held-transaction phases (idle-in-tx): the 5-s sample series over the hold and
  the first sample after it that is back to baseline.
postgres-restart phases: seconds from the server accepting connections again
  to the first claim / completion.

Sources: summary.json (medians, peaks, jobs_lost, chaos_recovery_time_s, all
the harness's own), raw.csv (series, dead tuples, per-job ratios),
manifest.json (adapters, cli args), restart_timing.json (written by
run_cell.sh via restart_timing.py from the server log and the job table),
server.log (the cluster log for the run window, written by run_cell.sh).
Needs only the standard library.
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

BACK_RATE = 0.95  # completion/s >= 95 % of offered
BACK_P99 = 2.0  # claim p99 <= 2 x the pre-hold clean median (and <= its peak if larger)


def iso(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def fmt(v, nd=0, unit=""):
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if abs(v) >= 100 or nd == 0:
        return f"{v:,.0f}{unit}"
    return f"{v:,.{nd}f}{unit}"


def med(xs):
    return statistics.median(xs) if xs else None


def table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def cli_value(cli: list[str], flag: str, default=None):
    for i, a in enumerate(cli):
        if a == flag and i + 1 < len(cli):
            return cli[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return default


class Run:
    def __init__(self, d: Path):
        self.dir = d
        self.summary = json.loads((d / "summary.json").read_text())
        self.manifest = json.loads((d / "manifest.json").read_text()) if (d / "manifest.json").exists() else {}
        self.cli = [str(a) for a in (self.manifest.get("cli") or self.manifest.get("cli_args") or [])]
        self.replicas = int(cli_value(self.cli, "--replicas", 1) or 1)
        self.mode = cli_value(self.cli, "--producer-mode", "fixed")
        self.rows = list(csv.DictReader((d / "raw.csv").open()))
        self.phase_order: list[tuple[str, str]] = []  # (label, type)
        for p in self.summary.get("phases") or []:
            if isinstance(p, dict):
                self.phase_order.append((p.get("label"), p.get("type") or p.get("phase_type")))
        self.systems = list((self.manifest.get("adapters") or {}).keys()) or list(self.summary["systems"])
        self.timing = {}
        if (d / "restart_timing.json").exists():
            self.timing = json.loads((d / "restart_timing.json").read_text())

    def event_tables(self, system: str) -> set[str]:
        a = (self.manifest.get("adapters") or {}).get(system) or {}
        return set(a.get("event_tables") or ["public.aio_async_job"])

    # adapter series: per (rounded) sample time, replicas combined like the
    # harness does (sum for rates, max for depth / latency)
    def adapter_series(self, system: str, metric: str, labels: set[str] | None = None):
        agg: dict[int, dict] = {}
        for r in self.rows:
            if r["system"] != system or r["subject_kind"] != "adapter" or r["metric"] != metric:
                continue
            if labels is not None and r["phase_label"] not in labels:
                continue
            t = iso(r["sampled_at"])
            k = round(t.timestamp())
            v = float(r["value"])
            s = agg.setdefault(k, {"t": t, "label": r["phase_label"], "v": None, "w": float(r["window_s"] or 0)})
            if s["v"] is None:
                s["v"] = v
            elif metric.endswith("_rate") and metric != "producer_target_rate":
                s["v"] += v
            else:
                s["v"] = max(s["v"], v)
        return [agg[k] for k in sorted(agg)]

    def table_series(self, system: str, metric: str):
        """Per metrics-daemon sample: value summed over the event tables."""
        tabs = self.event_tables(system)
        agg: dict[str, dict] = {}
        for r in self.rows:
            if r["system"] != system or r["subject_kind"] != "table" or r["metric"] != metric:
                continue
            if r["subject"] not in tabs:
                continue
            s = agg.setdefault(r["sampled_at"], {"t": iso(r["sampled_at"]), "label": r["phase_label"], "v": 0.0})
            s["v"] += float(r["value"])
        return [agg[k] for k in sorted(agg)]

    def offered(self, system: str, sample: dict) -> float | None:
        if self.mode != "fixed":
            return None
        tr = self._target.get(system) if hasattr(self, "_target") else None
        if tr is None:
            tr = {round(s["t"].timestamp()): s["v"] for s in self.adapter_series(system, "producer_target_rate")}
            self._target = getattr(self, "_target", {})
            self._target[system] = tr
        v = tr.get(round(sample["t"].timestamp()))
        if v is None:
            v = float(cli_value(self.cli, "--producer-rate", 800))
        return v * self.replicas


def dead_per_job(run: Run, system: str, label: str) -> float | None:
    """n_dead_tup growth per completed job over the phase's intervals in which
    n_dead_tup grew and no autovacuum finished (autovacuum_count unchanged)."""
    dead = [s for s in run.table_series(system, "n_dead_tup")]
    avc = {s["t"]: s["v"] for s in run.table_series(system, "autovacuum_count")}
    comp = run.adapter_series(system, "completion_rate")
    d_sum = j_sum = 0.0
    for a, b in zip(dead, dead[1:]):
        if b["label"] != label:
            continue
        if avc.get(a["t"]) != avc.get(b["t"]) or b["v"] <= a["v"]:
            continue
        jobs = sum(c["v"] * c["w"] for c in comp if a["t"] < c["t"] <= b["t"])
        if jobs <= 0:
            continue
        d_sum += b["v"] - a["v"]
        j_sum += jobs
    return d_sum / j_sum if j_sum > 0 else None


def phase_table(run: Run) -> str:
    rows = []
    for system in run.systems:
        sb = run.summary["systems"].get(system)
        if not sb:
            rows.append([system, "(no summary: system did not complete)"] + [""] * 10)
            continue
        dead = run.table_series(system, "n_dead_tup")
        for label, pb in sb["phases"].items():
            m = pb.get("metrics", {})
            g = lambda k, f="median": (m.get(k) or {}).get(f)
            dl = [s["v"] for s in dead if s["label"] == label]
            rows.append([
                system, f"{label} ({pb.get('phase_type')})",
                f"{fmt(g('completion_rate'))} ({fmt(g('completion_rate', 'peak'))})",
                fmt(g("enqueue_rate")),
                " / ".join(fmt(g(k), 1) for k in ("claim_p50_ms", "claim_p95_ms", "claim_p99_ms")),
                f"{fmt(g('queue_depth'))} / {fmt(g('queue_depth', 'peak'))}",
                f"{fmt(med(dl))} / {fmt(max(dl) if dl else None)}",
                fmt(dead_per_job(run, system, label), 2),
                fmt(pb.get("jobs_lost")),
                fmt(pb.get("chaos_recovery_time_s"), 1),
            ])
    return table(
        ["system", "phase", "completion/s median (peak)", "enqueue/s", "claim p50 / p95 / p99 ms",
         "queue depth median / peak", "dead tuples median / peak", "dead tup / job", "jobs_lost",
         "chaos_recovery_time_s"],
        rows,
    )


def ratio_table(run: Run) -> str | None:
    s = [x for x in run.systems if x in run.summary["systems"]]
    if len(s) != 2:
        return None
    a, b = s  # base first, as run_cell.sh orders them
    rows = []
    for label in run.summary["systems"][b]["phases"]:
        ma = run.summary["systems"][a]["phases"].get(label, {}).get("metrics", {})
        mb = run.summary["systems"][b]["phases"][label].get("metrics", {})

        def r(k):
            va, vb = (ma.get(k) or {}).get("median"), (mb.get(k) or {}).get("median")
            return f"{vb / va:.2f}×" if va and vb is not None else "–"

        rows.append([label, r("completion_rate"), r("claim_p50_ms"), r("claim_p99_ms")])
    return f"{b} / {a} (medians):\n\n" + table(["phase", "completion/s", "claim p50", "claim p99"], rows)


def held_tx(run: Run, system: str) -> str | None:
    order = [l for l, t in run.phase_order]
    types = dict(run.phase_order)
    holds = [l for l in order if types.get(l) == "idle-in-tx"]
    if not holds:
        return None
    out = []
    comp = run.adapter_series(system, "completion_rate")
    p99 = {round(s["t"].timestamp()): s["v"] for s in run.adapter_series(system, "claim_p99_ms")}
    depth = {round(s["t"].timestamp()): s["v"] for s in run.adapter_series(system, "queue_depth")}
    dead = run.table_series(system, "n_dead_tup")

    def dead_at(t):
        best = None
        for s in dead:
            if s["t"] <= t:
                best = s["v"]
        return best

    for hold in holds:
        i = order.index(hold)
        before = next((l for l in reversed(order[:i]) if types.get(l) == "clean"), None)
        after = order[i + 1:]
        hs = [s for s in comp if s["label"] == hold]
        if not hs:
            continue
        t0 = hs[0]["t"] - dt.timedelta(seconds=hs[0]["w"] or 5)
        rows = []
        for s in hs:
            k = round(s["t"].timestamp())
            off = run.offered(system, s)
            rows.append([
                f"{(s['t'] - t0).total_seconds():.0f}",
                fmt(s["v"]),
                fmt(100 * s["v"] / off, 0, " %") if off else "–",
                fmt(p99.get(k), 1),
                fmt(depth.get(k)),
                fmt(dead_at(s["t"])),
            ])
        out.append(f"{system}, held transaction `{hold}` (5-s samples; s = end of sample since hold start):\n")
        out.append(table(["s into hold", "completion/s", "% of offered", "claim p99 ms (30-s window)",
                          "queue depth", "dead tuples"], rows))
        # back to baseline
        bm = run.summary["systems"][system]["phases"].get(before, {}).get("metrics", {}) if before else {}
        base_p99 = (bm.get("claim_p99_ms") or {}).get("median")
        base_p99_peak = (bm.get("claim_p99_ms") or {}).get("peak")
        base_depth = (bm.get("queue_depth") or {}).get("peak")
        lim_p99 = max(BACK_P99 * base_p99, base_p99_peak or 0) if base_p99 is not None else None
        lim_depth = max(base_depth or 0, 10)
        hold_end = hs[-1]["t"]
        first_rate = first_all = None
        for s in comp:
            if s["label"] not in after or s["t"] <= hold_end:
                continue
            k = round(s["t"].timestamp())
            off = run.offered(system, s)
            ok_rate = (off is None or s["v"] >= BACK_RATE * off) and (depth.get(k) is None or depth[k] <= lim_depth)
            if ok_rate and first_rate is None:
                first_rate = s
            if ok_rate and (lim_p99 is None or (p99.get(k) is not None and p99[k] <= lim_p99)):
                first_all = s
                break
        crit = (f"completion/s ≥ {BACK_RATE:.0%} of offered and queue depth ≤ {fmt(lim_depth)} "
                f"(pre-hold `{before}` peak, min 10)")
        def desc(s):
            if s is None:
                return "not reached within the run"
            k = round(s["t"].timestamp())
            return (f"{(s['t'] - hold_end).total_seconds():.0f} s after the hold's last sample "
                    f"(`{s['label']}`, {s['t'].strftime('%H:%M:%S')}Z: {fmt(s['v'])}/s, p99 {fmt(p99.get(k), 1)} ms, "
                    f"depth {fmt(depth.get(k))})")
        out.append(f"\nback to baseline [{crit}]: {desc(first_rate)}")
        out.append(f"back to baseline [same, and claim p99 ≤ {fmt(lim_p99, 1)} ms = max({BACK_P99:g}× pre-hold "
                   f"median {fmt(base_p99, 1)}, pre-hold peak {fmt(base_p99_peak, 1)}); p99 is a 30-s window, "
                   f"so it lags]: {desc(first_all)}\n")
    return "\n".join(out)


LOG_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \S+ \[\d+\] LOG:\s+(.*)$")


def pg_restart(run: Run, system: str) -> str | None:
    types = dict(run.phase_order)
    if "postgres-restart" not in types.values():
        return None
    label = next(l for l, t in run.phase_order if t == "postgres-restart")
    out = [f"{system}, postgres restart (`{label}`):"]
    tm = run.timing.get(system) or {}
    ready = tm.get("server_ready")
    if tm:
        out.append(f"  server stop requested {tm.get('server_stop_requested')}, accepting connections again {ready}"
                   f" [server.log]")
        if "db_error" in tm:
            out.append(f"  job table not readable: {tm['db_error']}")
        else:
            out.append(f"  last completion before stop {tm.get('last_completion_before_stop')}")
            out.append(f"  first claim after ready {tm.get('first_claim_after_ready')}  → "
                       f"{fmt(tm.get('ready_to_first_claim_s'), 1)} s  [aio_async_job.started]")
            out.append(f"  first completion after ready {tm.get('first_completion_after_ready')}  → "
                       f"{fmt(tm.get('ready_to_first_completion_s'), 1)} s  [aio_async_job.finished]")
    else:
        # fall back to server.log in the run dir
        lg = run.dir / "server.log"
        win = [s for s in run.adapter_series(system, "completion_rate") if s["label"] in (label, "recovery")]
        if lg.exists() and win:
            lo = win[0]["t"] - dt.timedelta(seconds=10)
            for line in lg.read_text(errors="replace").splitlines():
                m = LOG_RE.match(line)
                if m and "ready to accept connections" in m.group(2):
                    t = dt.datetime.fromisoformat(m.group(1)).replace(tzinfo=dt.timezone.utc)
                    if lo <= t <= win[-1]["t"]:
                        ready = t.isoformat()
                        break
        out.append(f"  accepting connections again: {ready or 'unknown (no restart_timing.json / server.log)'}")
    if ready:
        r = iso(ready)
        first = next((s for s in run.adapter_series(system, "completion_rate") if s["t"] > r and s["v"] > 0), None)
        if first:
            out.append(f"  first 5-s sample with completions after ready: {first['t'].strftime('%H:%M:%S')}Z "
                       f"({fmt(first['v'])}/s), {(first['t'] - r).total_seconds():.1f} s after ready "
                       f"(upper bound at 5-s resolution) [raw.csv completion_rate]")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    for d in argv:
        run = Run(Path(d))
        print(f"## {run.dir.name}\n")
        print(f"scenario: {run.summary.get('scenario')}; phases: "
              + ", ".join(f"{l} ({t})" for l, t in run.phase_order))
        print(f"cli: {' '.join(run.cli)}")
        for s in run.systems:
            a = (run.manifest.get("adapters") or {}).get(s) or {}
            rv = a.get("revision") or {}
            print(f"{s}: aio_async from {a.get('aio_async_path')}; tree {rv.get('source', '?')} "
                  f"{rv.get('git_short')}{' (dirty)' if rv.get('dirty') else ''}")
        prov = run.dir / "provenance" / "cell.txt"
        if prov.exists():
            print(prov.read_text().splitlines()[0])
        print()
        print(phase_table(run))
        print()
        rt = ratio_table(run)
        if rt:
            print(rt + "\n")
        for s in run.systems:
            if s not in run.summary["systems"]:
                continue
            for part in (held_tx(run, s), pg_restart(run, s)):
                if part:
                    print(part + "\n")
        print("dead tup / job: n_dead_tup growth of the event tables per completed job, over the phase's "
              "metrics-daemon intervals where it grew and no autovacuum finished.\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""``python -m benchmarks``: aio_async and its peers, measured in one run, as ratios.

Sets up what it needs (PostgreSQL started if down, the databases, one virtual environment
per peer in ``.bench/``), runs every scenario ``--runs`` times, and writes
``bench-results/<time>/results.jsonl`` and ``summary.md`` (also printed).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
PEERS: dict[str, dict[str, Any]] = {
    "procrastinate": {
        "python": "3.11",
        "packages": ["procrastinate==3.10.0", "psycopg[binary]==3.3.9", "psycopg-pool==3.3.3"],
        "script": HERE / "peers" / "procrastinate_bench.py",
    },
    "django-tasks-db": {
        "python": "3.12",
        "packages": [
            "Django==6.1.3",
            "django-tasks==0.12.0",
            "django-tasks-db==0.13.0",
            "psycopg[binary]==3.3.9",
        ],
        "script": HERE / "peers" / "djtasks_bench.py",
    },
    "pgqueuer": {
        "python": "3.12",
        "packages": ["pgqueuer==1.6.0", "asyncpg==0.32.0", "psycopg[binary]==3.3.9"],
        "script": HERE / "peers" / "pgqueuer_bench.py",
    },
}


def _run(command: list[str], **kwargs: Any) -> None:
    print("+", " ".join(command), file=sys.stderr, flush=True)
    started = time.monotonic()
    subprocess.run(command, check=True, **kwargs)
    print(f"+ {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)


def ensure_postgres(dsn: str) -> None:
    """Start the local cluster if it is down, and create the databases."""
    host = psycopg.conninfo.conninfo_to_dict(dsn).get("host", "127.0.0.1")
    if (
        shutil.which("pg_isready")
        and subprocess.run(["pg_isready", "-q", "-h", str(host)], check=False).returncode
    ):
        clusters = os.listdir("/etc/postgresql") if os.path.isdir("/etc/postgresql") else []
        if clusters:
            _run(["pg_ctlcluster", "--skip-systemctl-redirect", clusters[0], "main", "start"])
            time.sleep(2)
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    admin = psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as db:
        for name in (str(info["dbname"]), f"{info['dbname']}_peers"):
            if not db.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                db.execute(f'CREATE DATABASE "{name}"')


def find_python(minor: str) -> str:
    """An interpreter of this minor version: on PATH, or installed with pyenv."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for candidate in (
        shutil.which(f"python{minor}"),
        *sorted(glob.glob(f"{root}/versions/{minor}.*/bin/python")),
    ):
        if (
            candidate
            and subprocess.run(
                [candidate, "-c", f"import sys; sys.exit(sys.version.startswith('{minor}') is False)"],
                capture_output=True,
                check=False,
            ).returncode
            == 0
        ):
            return candidate
    raise SystemExit(
        f"Python {minor} is needed for a peer's virtual environment; install it (pyenv install {minor})"
    )


def peer_python(name: str) -> str:
    """The peer's virtual environment (made once, in .bench/), with its pinned packages."""
    peer = PEERS[name]
    venv = ROOT / ".bench" / f"venv-{name}"
    python = venv / "bin" / "python"
    stamp = venv / "pins.txt"
    pins = "\n".join(peer["packages"])
    if not python.exists():
        _run([find_python(peer["python"]), "-m", "venv", str(venv)])
    if not stamp.exists() or stamp.read_text() != pins:
        _run([str(python), "-m", "pip", "install", "-q", *peer["packages"]])
        stamp.write_text(pins)
    return str(python)


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


#: aio_async's systems in the results: the headline on Django's default database settings,
#: then the same code with CONN_MAX_AGE and prepared statements (``benchmarks.settings``).
OURS = "aio_async"
TUNED = "aio_async tuned"
#: The families measured a second time with the tuned settings (``--tuned``): the ones the
#: settings could change, within a run of about 15 minutes on 2 cores.
TUNED_FAMILIES = "enqueue,drain"

#: The targets, on aio_async's default settings: (what, scenario, other system or None, bound,
#: test on the ratio aio_async / other, or on aio_async's value).
TARGETS: list[tuple[str, str, str | None, float, str]] = [
    ("drain no-op sync, concurrency 1: at least 2× procrastinate", "drain_noop_c1", "procrastinate", 2, ">="),
    (
        "drain no-op sync, concurrency 10: at least 2× procrastinate",
        "drain_noop_c10",
        "procrastinate",
        2,
        ">=",
    ),
    (
        "drain no-op sync, concurrency 10, Django's default settings: at least 0.85× tuned",
        "drain_noop_c10",
        TUNED,
        0.85,
        ">=",
    ),
    ("drain no-op: at least 4× django-tasks-db", "drain_noop_c1", "django-tasks-db", 4, ">="),
    ("enqueue one at a time: at least 1.2× procrastinate", "enqueue_single", "procrastinate", 1.2, ">="),
    ("enqueue one at a time: at least 1× django-tasks-db", "enqueue_single", "django-tasks-db", 1, ">="),
    ("enqueue in bulk: at least 1× procrastinate's batch", "enqueue_bulk", "procrastinate", 1, ">="),
    (
        "enqueue one at a time, every job unique: at least 1.2× procrastinate",
        "enqueue_single_unique",
        "procrastinate",
        1.2,
        ">=",
    ),
    (
        "drain no-op sync, every job unique, concurrency 10: at least 2× procrastinate",
        "drain_unique_c10",
        "procrastinate",
        2,
        ">=",
    ),
    ("pick-up latency p50 below 2 ms, coroutine job", "latency_p50", None, 2, "<"),
    ("pick-up latency p95 below 5 ms, coroutine job", "latency_p95", None, 5, "<"),
    ("pick-up latency p50 below 2 ms, sync job", "latency_sync_p50", None, 2, "<"),
    ("pick-up latency p95 below 5 ms, sync job", "latency_sync_p95", None, 5, "<"),
    (
        "pick-up latency p99 while prune deletes 100,000 jobs: below 100 ms",
        "prune_pickup_latency_p99",
        None,
        100,
        "<",
    ),
]


#: aio_async's scenarios that the peers have no twin of, and the peers' scenario they are held to.
COMPARED_WITH = {"enqueue_single_unique": "enqueue_single", "drain_unique_c10": "drain_noop_c10"}


def _index(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(row["system"], row["scenario"]): row for row in rows}


def targets(rows: list[dict[str, Any]]) -> str:
    """Each target of the benchmark with what this run measured, and whether it is met."""
    by = _index(rows)
    lines = ["| target | measured | met |", "|---|---:|:---:|"]

    def add(what: str, shown: str, met: bool) -> None:
        lines.append(f"| {what} | {shown} | {'yes' if met else 'no'} |")

    for what, scenario, other, bound, test in TARGETS:
        ours = by.get((OURS, scenario))
        theirs = by.get((other, COMPARED_WITH.get(scenario, scenario))) if other else None
        if ours is None or (other and not theirs):
            continue
        value = ours["median"] / theirs["median"] if theirs else ours["median"]
        add(
            what,
            f"{value:.2f}×" if theirs else f"{value:.2f} ms",
            value >= bound if test == ">=" else value < bound,
        )
    io = by.get((OURS, "io_async_c100"))
    if io:
        share = io["median"] / io["extra"]["ideal"]
        add(
            "1,000 × 50 ms coroutines at concurrency 100: at least 90 % of ideal",
            f"{share:.0%}",
            share >= 0.9,
        )
    scaled, empty = by.get((OURS, "scale_drain_noop_c10")), by.get((OURS, "drain_noop_c10"))
    if scaled and empty:
        change = scaled["median"] / empty["median"] - 1
        add(
            "drain beside a million finished jobs: within 10 % of an empty table",
            f"{change:+.0%}",
            change > -0.1,
        )
    for colour, job in (("sync", "sync jobs, step()"), ("async", "coroutine jobs, astep()")):
        per_job = by.get((OURS, f"steps_{colour}_per_job_c10"))
        if per_job:
            add(
                f"five-step {job}, concurrency 10: steps cost no more than jobs (steps/s ÷ jobs/s ≥ 1)",
                f"{per_job['median']:.2f}×",
                per_job["median"] >= 1,
            )
        for part, what in (("cpu", "the worker's CPU"), ("wal", "WAL written")):
            step, plain = (by.get((OURS, f"steps_{colour}_{unit}_{part}_c10")) for unit in ("step", "job"))
            if step and plain:
                add(
                    f"five-step {job}: {what} per step no more than per no-op job (step ÷ job ≤ 1)",
                    f"{step['median'] / plain['median']:.2f}×",
                    step["median"] <= plain["median"],
                )
    for figure, what, worse in (
        ("claim_p50", "the worker's claim p50", 1),
        ("claim_select_p50", "the claim's SELECT alone, p50,", 1),
        ("drain_c10", "the no-op drain at concurrency 10", -1),
    ):
        beside, alone = by.get((OURS, f"suspended_{figure}")), by.get((OURS, f"suspended_control_{figure}"))
        if beside and alone:
            change = beside["median"] / alone["median"] - 1
            add(
                f"{what} beside {beside['extra']['suspended_jobs']:,} suspended jobs: within 10 % of an "
                "empty table",
                f"{change:+.0%}",
                change * worse <= 0.1,
            )
    memory = by.get((OURS, "memory_rss_growth"))
    if memory:
        growth = memory["median"]
        add("worker RSS from 10,000 to 100,000 jobs: within 10 %", f"{growth:+.1f} %", abs(growth) <= 10)
    if scaled:
        lines += ["", "The claim query beside the history:", "", "```", scaled["extra"]["claim_plan"], "```"]
    return "\n".join(lines)


def summarize(rows: list[dict[str, Any]]) -> str:
    """A markdown table: aio_async (default settings) beside its tuned run and each peer, with ratios."""
    systems = [OURS, TUNED, *PEERS]
    others = [TUNED, *PEERS]
    by = _index(rows)
    scenarios = list(dict.fromkeys(row["scenario"] for row in rows if row["system"] in systems))
    lines = [
        "| scenario | unit | "
        + " | ".join(systems)
        + " | "
        + " | ".join(f"{OURS} / {other.removeprefix('aio_async ')}" for other in others)
        + " |",
        "|---|---|" + "---:|" * (len(systems) + len(others)),
    ]
    for scenario in scenarios:
        ours = by.get((OURS, scenario))
        unit = next(row["unit"] for row in rows if row["scenario"] == scenario)
        cells = [
            _fmt(by[(system, scenario)]["median"]) if (system, scenario) in by else "–" for system in systems
        ]
        ratios = []
        for other in others:
            theirs = by.get((other, scenario))
            if ours and theirs and theirs["median"]:
                ratio = ours["median"] / theirs["median"]
                ratios.append(f"{ratio:.2f}×")
            else:
                ratios.append("–")
        lines.append(f"| {scenario} | {unit} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    floors = [row for row in rows if row["system"] not in systems]
    if floors:
        lines += ["", "| floor | unit | median | runs |", "|---|---|---:|---|"]
        lines += [
            f"| {row['system']}: {row['scenario']} | {row['unit']} | {_fmt(row['median'])} | "
            + " / ".join(_fmt(value) for value in row["runs"])
            + " |"
            for row in floors
        ]
    return "\n".join(lines)


def held_snapshot(rows: list[dict[str, Any]]) -> str:
    """The held-snapshot drain slice by slice, beside the same drain without a snapshot held."""
    row = _index(rows).get((OURS, "held_snapshot_last_vs_first_slice"))
    if not row:
        return ""
    extra = row["extra"]
    control = {piece["slice"]: piece for piece in extra["control_slices"]}
    lines = [
        f"The no-op drain at concurrency 10, {extra['jobs']:,} jobs, while another connection holds a "
        f"REPEATABLE READ snapshot (with an xid) for {extra['hold_s']:g} s, from the worker's first "
        f"completed job; {extra['before_hold']:,} jobs finished before it. Per slice of "
        f"{extra['slice_s']:g} s: jobs/s from the table's timestamps; the worker's own claims "
        "(`benchmarks.timed_worker`: the store's claim call, round trip included); the claim's SELECT "
        "timed from a side connection about once a second (p99 of about ten probes is their slowest); "
        "`n_dead_tup` at the slice's end. The control is the same drain without a snapshot held, "
        f"just before. The server's autovacuum: {extra.get('autovacuum', '?')}.",
        "",
        "| slice (s) | held | jobs/s | control jobs/s | worker claim p50 / p99 ms | jobs per claim "
        "| probe p50 / p99 ms | control probe p50 ms | dead tuples | control dead tuples |",
        "|---|:---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def ms(value: float | None) -> str:
        """Milliseconds with two decimals, or a dash."""
        return "–" if value is None else f"{value:.2f}"

    for piece in extra["slices"]:
        twin = control.get(piece["slice"], {})
        span = f"{piece['from_s']:g}–{piece['from_s'] + piece['seconds']:g}"
        lines.append(
            f"| {span} | {'yes' if piece['held'] else ''} | {_fmt(piece['rate'])} | "
            f"{_fmt(twin.get('rate'))} | "
            f"{ms(piece['claim_p50_ms'])} / {ms(piece['claim_p99_ms'])} | {ms(piece['jobs_per_claim'])} | "
            f"{ms(piece['probe_p50_ms'])} / {ms(piece['probe_p99_ms'])} | {ms(twin.get('probe_p50_ms'))} | "
            f"{_fmt(piece['dead_tuples'])} | {_fmt(twin.get('dead_tuples'))} |"
        )
    control_ratio = extra.get("control_same_slices")
    lines += [
        "",
        f"Last held slice over the first: {row['median']:.2f}× (the control's same slices: "
        f"{'–' if control_ratio is None else f'{control_ratio:.2f}×'}). Per job over the held drain: "
        + ", ".join(f"{key.replace('_', ' ')} {value:,.1f}" for key, value in extra["per_job_held"].items())
        + ".",
    ]
    return "\n".join(lines)


def _steps_table(by: dict[tuple[str, str], dict[str, Any]]) -> str:
    """The steps family: five-step jobs beside no-op jobs, sync and coroutine; empty if not run."""
    lines = []
    for colour, job in (("sync", "sync job, `step()`"), ("async", "coroutine job, `astep()`")):
        steps, jobs, per_job, job_cpu, step_cpu, job_wal, step_wal = (
            by.get((OURS, f"steps_{colour}{part}_c10"))
            for part in ("", "_jobs", "_per_job", "_job_cpu", "_step_cpu", "_job_wal", "_step_wal")
        )
        if steps and jobs and per_job:
            cost = "– | –"
            if job_cpu and step_cpu and job_wal and step_wal:
                cost = (
                    f"{job_cpu['median']:,.0f} → {step_cpu['median']:,.0f} | "
                    f"{job_wal['median']:,.0f} → {step_wal['median']:,.0f}"
                )
            rates = f"{_fmt(jobs['median'])} | {_fmt(steps['median'])} | {per_job['median']:.2f}×"
            lines.append(f"| {job} | {rates} | {cost} |")
    if not lines:
        return ""
    return (
        "Durable steps, at concurrency 10: N/5 jobs of five no-op steps beside N no-op jobs, "
        "drained back to back in each run (the order swapped every run); the ratio is the median "
        "of each run's own.\n\n"
        "| job | no-op jobs, jobs/s | five-step jobs, steps/s | steps/s ÷ jobs/s "
        "| worker CPU, µs: per job → per step | WAL, bytes: per job → per step |\n"
        "|---|---:|---:|---:|---:|---:|\n" + "\n".join(lines)
    )


def _suspended_table(by: dict[tuple[str, str], dict[str, Any]]) -> str:
    """The suspended family beside its empty table, with the claim's plan; empty if not run."""
    pairs = {
        figure: (by.get((OURS, f"suspended_control_{figure}")), by.get((OURS, f"suspended_{figure}")))
        for figure in ("claim_p50", "claim_p99", "drain_c10", "claim_select_p50", "wake_select_p50")
    }
    alone, beside = pairs["claim_p50"]
    drained_alone, drained_beside = pairs["drain_c10"]
    if not (alone and beside and drained_alone and drained_beside):
        return ""

    def line(what: str, empty: float, full: float) -> str:
        """One figure's row: on the empty table, beside the suspended jobs, and their ratio."""
        return f"| {what} | {_fmt(empty)} | {_fmt(full)} | {full / empty:.2f}× |"

    def wake(row: dict[str, Any]) -> str:
        """The median of the runs' wake-up pass p50s, or a dash when the drains were too short."""
        runs = row["extra"]["wake_p50_ms"]
        return f"{statistics.median(runs):.2f} ms" if runs else "–"

    batches = [statistics.median(row["extra"]["jobs_per_claim"]) for row in (alone, beside)]
    lines = [
        line(what, pair[0]["median"], pair[1]["median"])
        for figure, what in (
            ("claim_p50", "the worker's claim p50, ms"),
            ("claim_p99", "the worker's claim p99, ms"),
        )
        if (pair := pairs[figure])[0] and pair[1]
    ]
    lines.append(line("jobs per claim", batches[0], batches[1]))
    lines.append(line("no-op drain, jobs/s", drained_alone["median"], drained_beside["median"]))
    probes = 0
    for figure, what in (
        ("claim_select_p50", "the claim's SELECT alone, p50, µs"),
        ("wake_select_p50", "the wake-up pass's SELECT alone, p50, µs"),
    ):
        empty, full = pairs[figure]
        if empty and full:
            lines.append(line(what, empty["median"], full["median"]))
            probes = full["extra"]["probes"]
    count = beside["extra"]["suspended_jobs"]
    return (
        f"The no-op drain at concurrency 10, {beside['extra']['jobs']:,} jobs, on an empty table and "
        f"beside {count:,} suspended jobs (each waiting for an event no one sends), in each run, the "
        "order swapped every run; the worker's own claims timed by `benchmarks.timed_worker`. The "
        "wake-up pass (the statement that reads suspended jobs, once a poll interval), p50 in the "
        f"worker: {wake(drained_beside)} beside them, {wake(drained_alone)} on the empty table."
        + (
            f" The SELECTs alone: from a side connection before each drain, {probes} times each."
            if probes
            else ""
        )
        + "\n\n"
        f"| figure | empty table | {count:,} suspended | suspended ÷ empty |\n"
        "|---|---:|---:|---:|\n" + "\n".join(lines) + "\n\nThe claim query beside the suspended jobs:\n\n"
        f"```\n{beside['extra']['claim_plan']}\n```"
    )


def durable_steps(rows: list[dict[str, Any]]) -> str:
    """The durable-steps families: five-step jobs beside no-op jobs, a drain beside suspended jobs."""
    by = _index(rows)
    return "\n\n".join(filter(None, [_steps_table(by), _suspended_table(by)]))


def configurations(rows: list[dict[str, Any]]) -> str:
    """Each system's configuration, as recorded on its lines of the results."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        seen.setdefault((row["system"], row.get("config", "")), row)
    lines = []
    for (system, config), row in seen.items():
        where = " (the `sqlite_` rows)" if config == "sqlite" else ""
        lines.append(
            f"- **{system}**{where}, `{config or '?'}`: {row.get('settings') or '(not recorded)'}; "
            f"{row['version']}"
        )
    return "\n".join(lines)


def machine(dsn: str, seconds: float) -> str:
    """The closing line: how long the run took, and on what."""
    try:
        with psycopg.connect(dsn, autocommit=True) as db:
            row = db.execute("SHOW server_version").fetchone()
        server = f"PostgreSQL {row[0] if row else '?'}"
    except psycopg.Error as exc:
        server = f"PostgreSQL ? ({exc.__class__.__name__})"
    minutes, rest = divmod(round(seconds), 60)
    return (
        f"The run took {minutes} min {rest} s (wall time) on {platform.node()}: {os.cpu_count()} cores "
        f"(os.cpu_count()), {platform.platform()}, {server}, Python {platform.python_version()}, "
        f"Django {version('Django')}, psycopg {version('psycopg')}."
    )


def main() -> None:
    """Set up, measure everything, summarise."""
    started = time.monotonic()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--dsn",
        default=os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/aio_async_bench"),
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--n-io", type=int, default=1000)
    parser.add_argument("--n-lat", type=int, default=50)
    parser.add_argument("--n-memory", type=int, default=100_000)
    parser.add_argument(
        "--n-held", type=int, default=100_000, help="jobs drained with and without a held snapshot (held)"
    )
    parser.add_argument("--hold", type=float, default=60.0, help="seconds the snapshot is held (held)")
    parser.add_argument(
        "--only",
        default="",
        help="scenario families: enqueue,drain,io,latency,scale,memory,prune,held,steps,suspended,floor",
    )
    parser.add_argument(
        "--tuned",
        default=TUNED_FAMILIES,
        help=f"families measured again as '{TUNED}' (CONN_MAX_AGE, prepare_threshold); "
        f"default {TUNED_FAMILIES}; none: --tuned ''",
    )
    parser.add_argument("--peers", default=",".join(PEERS), help="peers to measure (none: --peers '')")
    parser.add_argument(
        "--no-sqlite", dest="sqlite", action="store_false", help="skip aio_async's figures on SQLite"
    )
    options = parser.parse_args()
    ensure_postgres(options.dsn)
    results = ROOT / "bench-results" / time.strftime("%Y%m%d-%H%M%S")
    logs = results / "logs"
    logs.mkdir(parents=True)
    out = str(results / "results.jsonl")
    only = set(filter(None, options.only.split(",")))
    common = [
        "--runs",
        str(options.runs),
        "--n",
        str(options.n),
        "--n-io",
        str(options.n_io),
        "--n-lat",
        str(options.n_lat),
        "--out",
        out,
        "--logs",
        str(logs),
    ]
    aio = [sys.executable, "-m", "benchmarks.aio", "--dsn", options.dsn, *common]
    # First the headline, on Django's default database settings; then the tuned settings.
    held = ["--n-held", str(options.n_held), "--hold", str(options.hold)]
    _run(
        [*aio, "--config", "default", "--n-memory", str(options.n_memory), *held, "--only", options.only],
        cwd=ROOT,
    )
    tuned = set(filter(None, options.tuned.split(",")))
    tuned = (tuned & only) if only else tuned
    if tuned:
        _run([*aio, "--config", "tuned", "--only", ",".join(sorted(tuned))], cwd=ROOT)
    sqlite_families = ({"enqueue", "drain", "io"} & only) if only else {"enqueue", "drain", "io"}
    if options.sqlite and sqlite_families:
        sqlite = ["--sqlite", str(results / "aio_async.sqlite3"), "--only", ",".join(sorted(sqlite_families))]
        _run([*aio, *sqlite], cwd=ROOT)
    peers_dsn = psycopg.conninfo.make_conninfo(
        options.dsn, dbname=f"{psycopg.conninfo.conninfo_to_dict(options.dsn)['dbname']}_peers"
    )
    peer_url = "postgresql://{user}@{host}:{port}/{dbname}".format(
        **{
            "user": "postgres",
            "host": "127.0.0.1",
            "port": 5432,
            **psycopg.conninfo.conninfo_to_dict(peers_dsn),
        }
    )
    peer_families = ",".join(only & {"enqueue", "drain", "io", "latency"}) if only else ""
    for name in filter(None, options.peers.split(",")):
        if only and not peer_families:
            break
        extra = ["--only", peer_families] if peer_families else []
        _run([peer_python(name), str(PEERS[name]["script"]), "--dsn", peer_url, *common, *extra])
    if not only or "floor" in only:
        _run(
            [
                sys.executable,
                "-m",
                "benchmarks.floor",
                "--dsn",
                options.dsn,
                "--runs",
                str(options.runs),
                "--n",
                str(options.n),
                "--out",
                out,
            ],
            cwd=ROOT,
        )
    rows = [json.loads(line) for line in Path(out).read_text().splitlines() if line.strip()]
    sizes = (
        f"{options.n:,} jobs per enqueue and drain, {options.n_io:,} per I/O figure, {options.n_lat} for "
        f"latency, {options.n_memory:,} for memory, {options.n_held:,} for the held snapshot "
        f"(held {options.hold:g} s), {options.n // 5:,} five-step jobs beside {options.n:,} no-op jobs "
        "for steps"
    )
    summary = "\n\n".join(
        [
            f"Measured {time.strftime('%Y-%m-%d')}; median of {options.runs} runs; {sizes}. "
            f"`{OURS}` runs on Django's default database settings; `{TUNED}` on the tuned ones "
            f"({', '.join(sorted(tuned)) or 'not measured'}); a ratio is {OURS} / the other.",
            summarize(rows),
            "Configurations:\n\n" + configurations(rows),
            f"Targets, on {OURS} with Django's default settings:\n\n" + targets(rows),
            held_snapshot(rows),
            durable_steps(rows),
            machine(options.dsn, time.monotonic() - started),
        ]
    )
    (results / "summary.md").write_text(summary + "\n")
    print(summary)
    print(f"results: {out}")


if __name__ == "__main__":
    main()

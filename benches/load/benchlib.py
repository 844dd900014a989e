#!/usr/bin/env python3
"""Helpers for benches/load/run.sh: free ports, /proc accounting, wrk/oha parsing, the report.

Subcommands (all print to stdout):
  freeport                          a TCP port on 127.0.0.1 that was free a moment ago
  wait-http URL [SECONDS]           poll URL until it answers 200 (exit 1 on timeout)
  cpu PID                           utime+stime clock ticks of PID and its direct children
  rss PID                           VmRSS (KiB) of PID and its direct children, VmHWM of PID, open fds
  wait-idle MAX_SECONDS MAX_BUSY_PCT
                                    wait until the whole machine is busier than MAX_BUSY_PCT no more
                                    (2 s samples), at most MAX_SECONDS; prints the busy % it ended on
  snapshot PROXY_PID|- UPSTREAM_PID "proxy,upstream,busy,total" clock ticks: the proxy's and the
                                    upstream's CPU, and the whole machine's busy and total from /proc/stat
  timed OUTFILE CMD...              run CMD with its output in OUTFILE; print its CPU in clock ticks
  record TSV SCENARIO TARGET ROUND SNAPSHOT_BEFORE SNAPSHOT_AFTER WRK_TICKS WRK_OUTPUT
                                    parse one wrk run, append one row to TSV, print a one-line summary.
                                    "other work" = machine busy time not spent in the proxy, the upstream
                                    or wrk, in % of one core (kernel network work and anything else that
                                    ran on the shared machine; a quiet machine shows a small baseline)
  report TSV                        markdown tables, one per scenario, with ratios to nginx and to the floor
  median-rps TSV SCENARIO TARGET    median requests/s of the valid runs (integer, 0 if none)
  latency-table TARGET=FILE...      markdown table of oha's p50/p99/p99.9, added over the first target
  commandstats TSV SCENARIO TARGET[,TARGET…] BEFORE AFTER
                                    Redis commands per request: the calls in two `INFO commandstats`
                                    outputs (commands run inside Lua scripts included) ÷ the requests of
                                    the TARGETs' runs of SCENARIO in TSV, per command and in total
  roundtrips MONITOR_OUTPUT WRK_OUTPUT
                                    Redis round trips per request: the commands clients sent (MONITOR
                                    lines not marked `lua`) ÷ the requests of that wrk run
"""

import os
import re
import socket
import statistics
import sys
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
COLUMNS = [
    "scenario",
    "target",
    "round",
    "requests",
    "seconds",
    "rps",
    "cpu_ticks",
    "non2xx",
    "socket_errors",
    "void",
    "other_work_pct_of_core",
]


def freeport():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def wait_http(url, seconds="15"):
    deadline = time.monotonic() + float(seconds)
    last = "no answer"
    # Never through an HTTP proxy from the environment: the targets are on loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while time.monotonic() < deadline:
        try:
            with opener.open(url, timeout=2) as resp:
                if resp.status == 200:
                    return 0
                last = f"status {resp.status}"
        except Exception as err:  # connection refused while starting, HTTP errors
            last = str(err)
        time.sleep(0.1)
    print(f"{url}: not ready after {seconds}s ({last})", file=sys.stderr)
    return 1


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    # The command name may contain spaces and parentheses: split after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        pass
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(_stat_fields(entry)[1]) == int(pid):
                    kids.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return kids


def _ticks(pid):
    fields = _stat_fields(pid)
    # Fields after the name start at field 3 (state); utime and stime are fields 14 and 15. For a
    # process (not a single task) they already sum every thread, exited ones included.
    return int(fields[11]) + int(fields[12])


def _process_ticks(pid):
    return sum(_ticks(p) for p in [int(pid)] + _children(pid))


def cpu(pid):
    print(_process_ticks(pid))


def _status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def rss(pid):
    pids = [int(pid)] + _children(pid)
    total = sum(_status_kib(p, "VmRSS") for p in pids)
    fds = sum(len(os.listdir(f"/proc/{p}/fd")) for p in pids)
    print(total, _status_kib(pid, "VmHWM"), fds)


def parse_wrk(text):
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)\b", text, re.M)
    if not m:
        raise ValueError("no 'N requests in T' line in wrk output")
    requests = int(m.group(1))
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(3)]
    seconds = float(m.group(2)) * scale
    m = re.search(r"^Requests/sec:\s*([\d.]+)", text, re.M)
    rps = float(m.group(1)) if m else requests / seconds
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    non2xx = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    socket_errors = sum(int(g) for g in m.groups()) if m else 0
    return requests, seconds, rps, non2xx, socket_errors


def _cpu_lines():
    with open("/proc/stat") as f:
        return {line.split()[0]: [int(v) for v in line.split()[1:]] for line in f if line.startswith("cpu")}


def _busy_total(values):
    # user nice system idle iowait irq softirq steal …; guest time is already inside user.
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


def snapshot(proxy_pid, upstream_pid):
    proxy = "-" if proxy_pid == "-" else _process_ticks(proxy_pid)
    busy, total = _busy_total(_cpu_lines()["cpu"])
    print(f"{proxy},{_process_ticks(upstream_pid)},{busy},{total}")


def timed(outfile, *cmd):
    import resource
    import subprocess

    with open(outfile, "w") as out:
        subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(round((usage.ru_utime + usage.ru_stime) * CLK_TCK))


def wait_idle(max_seconds, max_busy_pct):
    deadline = time.monotonic() + float(max_seconds)
    while True:
        b0, t0 = _busy_total(_cpu_lines()["cpu"])
        time.sleep(2)
        b1, t1 = _busy_total(_cpu_lines()["cpu"])
        busy = 100.0 * (b1 - b0) / max(1, t1 - t0)
        if busy <= float(max_busy_pct) or time.monotonic() >= deadline:
            print(f"{busy:.0f}")
            return 0


def record(tsv, scenario, target, rnd, snap_before, snap_after, wrk_ticks, wrk_file):
    with open(wrk_file) as f:
        text = f.read()
    requests, seconds, rps, non2xx, socket_errors = parse_wrk(text)
    measured = not snap_before.startswith("-")
    before = [int(v) for v in snap_before.replace("-", "0", 1).split(",")]
    after = [int(v) for v in snap_after.replace("-", "0", 1).split(",")]
    proxy, upstream, busy, total = (a - b for a, b in zip(after, before))
    ticks = str(proxy) if measured else ""
    reasons = []
    if non2xx:
        reasons.append(f"{non2xx} non-2xx responses")
    if socket_errors:
        reasons.append(f"{socket_errors} socket errors")
    if requests == 0:
        reasons.append("no requests")
    void = "; ".join(reasons)
    ncpu = os.cpu_count() or 1
    other = max(0.0, 100.0 * (busy - proxy - upstream - int(wrk_ticks)) / max(1, total / ncpu))
    row = [
        scenario,
        target,
        rnd,
        str(requests),
        f"{seconds:.2f}",
        f"{rps:.1f}",
        ticks,
        str(non2xx),
        str(socket_errors),
        void,
        f"{other:.0f}",
    ]
    new = not os.path.exists(tsv)
    with open(tsv, "a") as f:
        if new:
            f.write("\t".join(COLUMNS) + "\n")
        f.write("\t".join(row) + "\n")
    cpu_text = ""
    if ticks and requests:
        cpu_text = f", CPU {int(ticks) * 1e6 / CLK_TCK / requests:.2f} µs/req"
    print(
        f"  {scenario}/{target} round {rnd}: {rps:,.0f} req/s ({requests} requests{cpu_text}; "
        f"other work {other:.0f}% of a core)" + (f"  VOID: {void}" if void else "")
    )


def _read_rows(tsv):
    with open(tsv) as f:
        header = f.readline().rstrip("\n").split("\t")
        return [dict(zip(header, line.rstrip("\n").split("\t"))) for line in f if line.strip()]


def _median_range(values, fmt):
    if not values:
        return "—"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(values))}–{fmt(max(values))})"


def report(tsv):
    rows = _read_rows(tsv)
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    for scenario in scenarios:
        srows = [r for r in rows if r["scenario"] == scenario]
        targets = list(dict.fromkeys(r["target"] for r in srows))
        stats = {}
        for target in targets:
            trows = [r for r in srows if r["target"] == target]
            valid = [r for r in trows if not r["void"]]
            rps = [float(r["rps"]) for r in valid]
            cpu = [
                int(r["cpu_ticks"]) * 1e6 / CLK_TCK / int(r["requests"])
                for r in valid
                if r["cpu_ticks"] and int(r["requests"]) > 0
            ]
            other = [float(r.get("other_work_pct_of_core") or 0) for r in trows]
            stats[target] = (len(valid), len(trows), rps, cpu, [r for r in trows if r["void"]], max(other))
        # The references of the same run: nginx (what users compare with) and the floor (what any
        # hyper-based proxy costs; tollgate's own overhead is what it costs above it).
        refs = {}
        for name in ("nginx", "floor"):
            ref = stats.get(name)
            refs[name] = (
                statistics.median(ref[2]) if ref and ref[2] else None,
                statistics.median(ref[3]) if ref and ref[3] else None,
            )

        def ratio(values, name, which):
            ref = refs[name][which]
            return f"{statistics.median(values) / ref:.2f}" if values and ref else "—"

        print(f"\n### scenario: {scenario}\n")
        print(
            "| target | valid runs | requests/s median (min–max) | req/s ÷ nginx | req/s ÷ floor "
            "| CPU µs/request median (min–max) | CPU ÷ nginx | CPU ÷ floor | other work, max (% of a core) |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for target in targets:
            n_valid, n_all, rps, cpu, _, other = stats[target]
            print(
                f"| {target} | {n_valid}/{n_all} | {_median_range(rps, lambda v: f'{v:,.0f}')} | "
                f"{ratio(rps, 'nginx', 0)} | {ratio(rps, 'floor', 0)} | "
                f"{_median_range(cpu, lambda v: f'{v:.2f}')} | {ratio(cpu, 'nginx', 1)} | {ratio(cpu, 'floor', 1)} | "
                f"{other:.0f}% |"
            )
        # The machine is shared: repeat the CPU figures over the runs that overlapped little other work.
        quiet = float(os.environ.get("QUIET_PCT", "15"))
        if any(float(r.get("other_work_pct_of_core") or 0) > quiet for r in srows):
            parts = []
            quiet_cpu = {}
            for target in targets:
                vals = [
                    int(r["cpu_ticks"]) * 1e6 / CLK_TCK / int(r["requests"])
                    for r in srows
                    if r["target"] == target
                    and not r["void"]
                    and r["cpu_ticks"]
                    and int(r["requests"]) > 0
                    and float(r.get("other_work_pct_of_core") or 0) <= quiet
                ]
                if vals:
                    quiet_cpu[target] = statistics.median(vals)
                    parts.append(f"{target} {quiet_cpu[target]:.2f} µs/request (n={len(vals)})")
            if parts:
                line = f"\nCPU per request over the runs with other work ≤ {quiet:.0f}% of a core only: " + ", ".join(parts)
                for name in ("nginx", "floor"):
                    if name in quiet_cpu:
                        ratios = [f"{t} ÷ {name} {v / quiet_cpu[name]:.2f}" for t, v in quiet_cpu.items() if t != name]
                        line += ("; " + ", ".join(ratios)) if ratios else ""
                print(line + ".")
            else:
                print(f"\nNo CPU-measured run had other work ≤ {quiet:.0f}% of a core.")
        print()
        print("<details><summary>every run, in the order run</summary>\n")
        print("| run | target | requests/s | CPU µs/request | other work (% of a core) | void |")
        print("|---|---|---|---|---|---|")
        for r in srows:
            cpu = (
                f"{int(r['cpu_ticks']) * 1e6 / CLK_TCK / int(r['requests']):.2f}"
                if r["cpu_ticks"] and int(r["requests"]) > 0
                else "—"
            )
            print(
                f"| {r['round']} | {r['target']} | {float(r['rps']):,.0f} | {cpu} | "
                f"{r.get('other_work_pct_of_core') or '?'} | {r['void'] or ''} |"
            )
        print("\n</details>")
        voids = [(t, r) for t in targets for r in stats[t][4]]
        if voids:
            print()
            for target, r in voids:
                print(f"- void: {target} round {r['round']}: {r['void']} ({r['requests']} requests)")


def median_rps(tsv, scenario, target):
    rps = [float(r["rps"]) for r in _read_rows(tsv) if r["scenario"] == scenario and r["target"] == target and not r["void"]]
    print(int(statistics.median(rps)) if rps else 0)


def oha_percentiles(text):
    """p50, p99, p99.9 in milliseconds from oha's text output (None where missing)."""
    found = {}
    for pct, value, unit in re.findall(r"([\d.]+)% in ([\d.]+) (secs|ms|us|µs)", text):
        scale = {"secs": 1000.0, "ms": 1.0, "us": 0.001, "µs": 0.001}[unit]
        found[float(pct)] = float(value) * scale
    return [found.get(p) for p in (50.0, 99.0, 99.9)]


def latency_table(*pairs):
    rows = []
    for pair in pairs:
        target, path = pair.split("=", 1)
        with open(path) as f:
            text = f.read()
        statuses = re.findall(r"\[(\d{3})\]\s+(\d+) responses", text)
        bad = sum(int(n) for code, n in statuses if not code.startswith("2"))
        rows.append((target, oha_percentiles(text), bad))
    base = rows[0][1]
    fmt = lambda v: "—" if v is None else f"{v:.3f}"
    added = lambda v, b: "—" if v is None or b is None else f"{v - b:+.3f}"
    print()
    print(f"| target | p50 ms | p99 ms | p99.9 ms | added p50 | added p99 | added p99.9 | non-2xx |")
    print("|---|---|---|---|---|---|---|---|")
    for target, p, bad in rows:
        print(
            f"| {target} | {fmt(p[0])} | {fmt(p[1])} | {fmt(p[2])} | {added(p[0], base[0])} | "
            f"{added(p[1], base[1])} | {added(p[2], base[2])} | {bad} |"
        )


def _commandstats(path):
    calls = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"cmdstat_([^:]+):calls=(\d+)", line.strip())
            if m:
                calls[m.group(1)] = int(m.group(2))
    return calls


def commandstats(tsv, scenario, target, before, after):
    b, a = _commandstats(before), _commandstats(after)
    # The snapshot commands themselves (INFO) are not the gateway's.
    delta = {c: a.get(c, 0) - b.get(c, 0) for c in a if c != "info" and a.get(c, 0) - b.get(c, 0) > 0}
    targets = target.split(",")
    requests = sum(
        int(r["requests"]) for r in _read_rows(tsv) if r["scenario"] == scenario and r["target"] in targets
    )
    if requests == 0:
        print(f"- commandstats: no {target} requests recorded for {scenario}")
        return
    total = sum(delta.values())
    parts = ", ".join(f"{c} {n / requests:.3f}" for c, n in sorted(delta.items(), key=lambda kv: -kv[1]))
    print(
        f"- Redis commands per request over the measured {target} runs ({requests} requests, INFO "
        f"commandstats; commands that Lua scripts run are counted too): **{total / requests:.3f}** ({parts})"
    )


def roundtrips(monitor_file, wrk_file):
    with open(wrk_file) as f:
        requests = parse_wrk(f.read())[0]
    sent, in_scripts, by_command = 0, 0, {}
    with open(monitor_file, errors="replace") as f:
        for line in f:
            m = re.match(r"^\d+\.\d+ \[\d+ ([^\]]+)\] \"([^\"]+)\"", line)
            if not m:
                continue
            if m.group(1) == "lua":
                in_scripts += 1
                continue
            sent += 1
            name = m.group(2).lower()
            by_command[name] = by_command.get(name, 0) + 1
    if requests == 0:
        print("- round trips: the MONITOR run served no requests")
        return
    parts = ", ".join(f"{c} {n}" for c, n in sorted(by_command.items(), key=lambda kv: -kv[1]))
    print(
        f"- Redis round trips per request (MONITOR during a separate 3 s run of {requests} requests: "
        f"commands sent by clients, not those run inside scripts): **{sent / requests:.3f}** "
        f"({sent} sent: {parts}; {in_scripts} more ran inside scripts)"
    )


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[0], argv[1:]
    if cmd == "freeport":
        freeport()
    elif cmd == "wait-http":
        return wait_http(*args)
    elif cmd == "cpu":
        cpu(*args)
    elif cmd == "rss":
        rss(*args)
    elif cmd == "snapshot":
        snapshot(*args)
    elif cmd == "timed":
        timed(*args)
    elif cmd == "wait-idle":
        return wait_idle(*args)
    elif cmd == "record":
        record(*args)
    elif cmd == "report":
        report(*args)
    elif cmd == "median-rps":
        median_rps(*args)
    elif cmd == "latency-table":
        latency_table(*args)
    elif cmd == "commandstats":
        commandstats(*args)
    elif cmd == "roundtrips":
        roundtrips(*args)
    else:
        print(f"unknown command {cmd}\n{__doc__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""run-tests.py: builds every test executable in one `cargo test --no-run`, then runs one
group of them several at once, longest first.

Groups: `e2e` = the integration tests of vigil-e2e and vigil-demo (tests/tests/*.rs,
demo/tests/*.rs: picked up automatically), each TEST run as its own process
(`BINARY --exact NAME`); `unit` = every other test executable, each run whole
(--whole-binaries). `cargo test` runs binaries one after another, so one long binary held up
the whole step although most end-to-end tests wait on real time, not CPU.

Each process runs as cargo would run it (working directory = its package; CARGO,
CARGO_MANIFEST_DIR, CARGO_PKG_NAME set), at most --jobs at once, and the running tests'
expected CPU use (cores = cpu-s / wall-s of the last run) summed at most --cpu-budget, so a
test that keeps a core busy is not started beside others that would starve timing-sensitive
tests (with nothing running, any test may start). Times come from the last run (--times,
target/test-logs/e2e-times.tsv) over the committed hints (--hints, tests/e2e-times.tsv); a
test in neither (a new file) starts first, counted as one busy core.

Tests named by --exclusive (prefixes of BINARY::NAME; default `self_judgement::`) judge
real-time traffic shapes (rate surges, bursts, a 5-minute A/A run) and read any CPU stall of
the load generator as a burst: they run only beside each other, never beside other tests
(measured: a Chromium start beside them gave a false surge alarm on a quiet 2-core machine).

Every test's output is printed as one block when it ends (never interleaved), with libtest's
own "test result:" line, so scripts/test-summary.sh counts passed, failed and ignored as
before (a test killed by --timeout counts as failed). Exit status 1 if any test failed or
timed out, or the build or a --list failed; the failures are listed at the end with their
log files, and the longest tests with their wall and CPU seconds.

Usage: run-tests.py [--group e2e|unit] [--cargo-args '--workspace ...'] [--whole-binaries]
                    [--jobs N] [--cpu-budget C] [--timeout S] [--log-dir DIR]
                    [--hints FILE] [--times FILE] [--exclusive PREFIX]... [FILTER...]
"""

import argparse
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time

UNKNOWN_WALL = float("inf")  # unknown tests start first
UNKNOWN_CPU = 1.0  # ... counted as one busy core


def log(msg):
    print(msg, flush=True)


E2E_PACKAGES = ("vigil-e2e", "vigil-demo")


def package_name(package_id):
    """'path+file:///x/tests#vigil-e2e@0.1.0' (or '...#0.1.0', or 'name 0.1.0 (...)')."""
    if "#" in package_id:
        url, frag = package_id.split("#", 1)
        name = frag.split("@", 1)[0]
        if "@" not in frag:  # '#0.1.0': the name is the directory's
            name = url.rstrip("/").rsplit("/", 1)[-1]
        return name
    return package_id.split(" ", 1)[0]


def build(cargo_args, group):
    """cargo test --no-run CARGO_ARGS; the group's test executables:
    [(binary, exe, pkg_dir, pkg)]. One cargo invocation for every step (same package
    selection, so one feature resolution and no crate built twice)."""
    cmd = ["cargo", "test", "--no-run", "--message-format=json-render-diagnostics", *cargo_args]
    log(f"run-tests: {' '.join(cmd)}")
    p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    out = []
    for line in p.stdout.splitlines():
        try:
            m = json.loads(line)
        except ValueError:
            continue
        # Only test harnesses: cargo also reports the plain binaries it built for the
        # integration tests (vigil-control, ...), which are not tests.
        if (m.get("reason") != "compiler-artifact" or not m.get("executable")
                or not m.get("profile", {}).get("test")):
            continue
        pkg = package_name(m["package_id"])
        kind = m["target"]["kind"]
        e2e = kind == ["test"] and pkg in E2E_PACKAGES
        if (group == "e2e") != e2e:
            continue
        name = m["target"]["name"]
        if group == "unit":
            name = f"{pkg}/{'test:' + name if kind == ['test'] else '/'.join(kind) + ':' + name}"
        out.append((name, m["executable"], os.path.dirname(m["manifest_path"]), pkg))
    if p.returncode != 0:
        return None
    return sorted(set(out))


def list_tests(exe, cwd):
    p = subprocess.run([exe, "--list", "--format", "terse"], cwd=cwd,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        return None, p.stdout
    names = [l[: -len(": test")] for l in p.stdout.splitlines() if l.endswith(": test")]
    return names, p.stdout


def read_times(path):
    """{(binary, test): (wall_s, cpu_s)} from a times file (tab-separated, # comments)."""
    times = {}
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("#") or not line.strip():
                    continue
                parts = line.rstrip("\n").split("\t")
                if len(parts) < 5 or parts[2] != "ok":
                    continue
                try:
                    times[(parts[0], parts[1])] = (float(parts[3]), float(parts[4]))
                except ValueError:
                    continue
    except FileNotFoundError:
        pass
    return times


class Job:
    def __init__(self, binary, test, exe, cwd, pkg, wall, cpu):
        self.binary, self.test, self.exe, self.cwd, self.pkg = binary, test, exe, cwd, pkg
        self.est_wall = wall
        # Cores the test keeps busy on average (never more than 2 for ordering purposes).
        self.est_cores = UNKNOWN_CPU if wall in (0, UNKNOWN_WALL) else min(cpu / wall, 2.0)
        self.name = f"{binary}::{test}" if test else binary
        self.proc = None
        self.start = 0.0
        self.logfile = None
        self.timed_out = False
        self.exclusive = False

    def describe(self):
        w = "new" if self.est_wall == UNKNOWN_WALL else f"~{self.est_wall:.0f}s"
        return f"{self.name} ({w}, ~{self.est_cores:.2f} cores)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--group", choices=["e2e", "unit"], default="e2e",
                    help="e2e: integration tests of vigil-e2e and vigil-demo; unit: every "
                         "other test executable")
    ap.add_argument("--cargo-args", default="--workspace --exclude vigil-filter",
                    help="package selection for cargo test --no-run")
    ap.add_argument("--whole-binaries", action="store_true",
                    help="run each binary whole (libtest's own threads) instead of per test")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("E2E_JOBS", "4")))
    ap.add_argument("--cpu-budget", type=float,
                    default=float(os.environ.get("E2E_CPU_BUDGET", "1.2")))
    ap.add_argument("--timeout", type=float,
                    default=float(os.environ.get("E2E_TEST_TIMEOUT", "1500")))
    ap.add_argument("--log-dir", default="target/test-logs/e2e")
    ap.add_argument("--hints", default="tests/e2e-times.tsv")
    ap.add_argument("--times", default="target/test-logs/e2e-times.tsv")
    ap.add_argument("--exclusive", action="append", default=None,
                    help="tests (BINARY::NAME prefix) that run only beside each other "
                         "(default: $E2E_EXCLUSIVE, else self_judgement::)")
    ap.add_argument("filters", nargs="*", help="only tests whose binary::name contains one")
    a = ap.parse_args()
    a.cargo_args = a.cargo_args.split()
    if a.exclusive is None:
        a.exclusive = os.environ.get("E2E_EXCLUSIVE", "self_judgement::").split()

    # Last run's times (if any) over the committed hints.
    times = read_times(a.hints)
    times.update(read_times(a.times))
    os.makedirs(a.log_dir, exist_ok=True)
    cargo = os.environ.get("CARGO") or shutil.which("cargo") or "cargo"

    problems = []
    jobs = []
    t_build = time.monotonic()
    bins = build(a.cargo_args, a.group)
    if bins is None:
        problems.append("cargo test --no-run failed (cargo's output above)")
        bins = []
    for binary, exe, cwd, pkg in bins:
        if a.whole_binaries:
            names = [None]
        else:
            names, text = list_tests(exe, cwd)
            if names is None:
                problems.append(f"{binary}: --list failed:\n{text}")
                continue
        for t in names:
            w, c = times.get((binary, t or "*"), (UNKNOWN_WALL, 0.0))
            j = Job(binary, t, exe, cwd, pkg, w, c)
            if a.filters and not any(f in j.name for f in a.filters):
                continue
            j.exclusive = any(j.name.startswith(x) for x in a.exclusive)
            jobs.append(j)
    log(f"run-tests: built and listed in {time.monotonic() - t_build:.0f}s: "
        f"{len(jobs)} tests; at most {a.jobs} at once within {a.cpu_budget} cores")

    # Longest first (unknown = new tests first), then by name for a stable order.
    jobs.sort(key=lambda j: (-j.est_wall, j.name))
    pending = list(jobs)
    running = []
    done = queue.Queue()
    results = []
    t0 = time.monotonic()
    cpu_total = 0.0
    peak = 0

    def waiter(job):
        _, status, ru = os.wait4(job.proc.pid, 0)
        # Reaped here: tell Popen, so it never waits on the pid (which may be reused).
        job.proc.returncode = os.waitstatus_to_exitcode(status)
        done.put((job, status, ru, time.monotonic()))

    def start(job):
        safe = job.name.replace("::", ".").replace("/", "_").replace(":", "_")
        path = os.path.join(a.log_dir, safe + ".log")
        job.logfile = path
        env = dict(os.environ, CARGO_MANIFEST_DIR=job.cwd, CARGO_PKG_NAME=job.pkg, CARGO=cargo)
        with open(path, "wb") as out:
            job.proc = subprocess.Popen(
                [job.exe, "--exact", job.test, "--nocapture", "--test-threads=1"]
                if job.test else [job.exe],
                cwd=job.cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        job.start = time.monotonic()
        running.append(job)
        threading.Thread(target=waiter, args=(job,), daemon=True).start()
        log(f"[{time.monotonic() - t0:6.0f}s] start {job.describe()}; running {len(running)}")

    def kill_group(job):
        try:
            os.killpg(job.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def on_signal(signum, _frame):
        for j in running:
            kill_group(j)
        sys.exit(128 + signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    while pending or running:
        # Start what fits: the first pending job (longest) that fits the CPU budget; with
        # nothing running, anything fits.
        started = True
        while started and pending and len(running) < a.jobs:
            started = False
            load = sum(j.est_cores for j in running)
            # An --exclusive test runs only beside other exclusive tests.
            kind = running[0].exclusive if running else None
            for j in pending:
                if kind is not None and j.exclusive != kind:
                    continue
                if not running or load + j.est_cores <= a.cpu_budget:
                    pending.remove(j)
                    start(j)
                    started = True
                    break
        peak = max(peak, len(running))
        try:
            job, status, ru, end = done.get(timeout=5)
        except queue.Empty:
            now = time.monotonic()
            for j in running:
                if not j.timed_out and now - j.start > a.timeout:
                    j.timed_out = True
                    log(f"run-tests: {j.name} still running after {a.timeout:.0f}s: killed")
                    kill_group(j)
            continue
        running.remove(job)
        # The test's own Envoy/upstream children are gone with it (each test reaps its
        # children); anything left in its process group is killed here.
        kill_group(job)
        wall = end - job.start
        cpu = ru.ru_utime + ru.ru_stime
        cpu_total += cpu
        code = os.waitstatus_to_exitcode(status)
        ok = code == 0 and not job.timed_out
        results.append((job, ok, code, wall, cpu))
        verdict = "ok" if ok else ("TIMED OUT" if job.timed_out else f"FAILED (exit {code})")
        with open(job.logfile, errors="replace") as f:
            text = f.read()
        print(f"\n==== {job.name}: {verdict} in {wall:.1f}s (cpu {cpu:.1f}s) ====", flush=True)
        sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
        if job.timed_out:
            # No "test result:" line was printed: count it as failed for test-summary.sh.
            print("test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; "
                  "0 filtered out (timed out)")
        print(f"==== end of {job.name} ({len(results)}/{len(jobs)} done, "
              f"{time.monotonic() - t0:.0f}s) ====", flush=True)

    wall_total = time.monotonic() - t0
    with open(a.times, "w") as f:
        f.write("# binary\ttest\tstatus\twall_s\tcpu_s (written by scripts/run-tests.py)\n")
        for job, ok, code, wall, cpu in sorted(results, key=lambda r: r[0].name):
            f.write(f"{job.binary}\t{job.test or '*'}\t{'ok' if ok else 'failed'}\t{wall:.1f}\t{cpu:.1f}\n")

    print("\nrun-tests: longest tests (wall s, cpu s):")
    for job, ok, code, wall, cpu in sorted(results, key=lambda r: -r[3])[:12]:
        print(f"  {wall:7.1f} {cpu:7.1f}  {job.name}{'' if ok else '  FAILED'}")
    serial = sum(r[3] for r in results)
    print(f"run-tests: {len(results)} tests in {wall_total:.0f}s wall "
          f"({serial:.0f}s if run one by one), {cpu_total:.0f} cpu-s, at most {peak} at once; "
          f"times in {a.times}")
    failed = [r for r in results if not r[1]]
    for job, ok, code, wall, cpu in failed:
        problems.append(f"{job.name} failed (exit {code}); log: {job.logfile}")
    if problems:
        print("\nrun-tests: FAILURES:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

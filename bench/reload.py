#!/usr/bin/env python3
"""Load and reload times of large policy sets, on the real binary: the time
`countersign policy validate` takes, the time `countersign serve` takes to
listen (its start-up load), and how long after one file is changed the
sidecar logs the reload: an edit that loads, and a broken edit it refuses
(keeping the last good set). Started by bench/reload.sh, which builds the
binaries first; `--countersign` times another build (an older one, say).

The generated policies (bench/synthetic.rs: five per action) are spread
over files of `--per-file` policies, as teams would keep them. A file is
changed the way a deployment should change it: written beside, renamed in.
A reload's time runs from the rename to the log line, so it includes the
watcher's 200 ms wait for a burst of writes to end and the 100 ms between
the reload's two reads of the directory (a directory being written is not
loaded). Prints one markdown row per set size.
"""
import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")).resolve() / "release"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_in(path, text):
    """Writes `path` whole, at once: beside it, then renamed over it."""
    beside = path.with_name("." + path.name + ".new")
    beside.write_text(text)
    beside.rename(path)


class Sidecar:
    """`countersign serve` on the policy directory, its log in a file."""

    def __init__(self, countersign, policies, tmp, timeout):
        self.port = free_port()
        self.log_path = Path(tmp) / f"serve-{self.port}.log"
        env = {
            **os.environ,
            "COUNTERSIGN_LISTEN": f"127.0.0.1:{self.port}",
            "COUNTERSIGN_POLICY_DIR": str(policies),
            "COUNTERSIGN_METRICS_LISTEN": "off",
            "COUNTERSIGN_LOG": "info",
        }
        env.pop("COUNTERSIGN_CONFIG", None)
        started = time.monotonic()
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen([countersign, "serve"], stdout=log,
                                         stderr=subprocess.STDOUT, env=env)
        deadline = started + timeout
        while True:
            if self.proc.poll() is not None:
                sys.exit(f"countersign serve exited: {self.log()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    sys.exit(f"countersign serve did not listen within {timeout} s")
                time.sleep(0.05)
        self.startup = time.monotonic() - started

    def log(self):
        return self.log_path.read_text(errors="replace")

    def wait_for(self, after, pattern, timeout):
        """Seconds until a log line after offset `after` matches `pattern`,
        and the line."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            for line in self.log()[after:].splitlines():
                if re.search(pattern, line):
                    return time.monotonic() - started, line
            time.sleep(0.02)
        self.stop()
        sys.exit(f"no `{pattern}` in the log within {timeout} s")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def reload_after(sidecar, path, text, pattern, timeout):
    """Writes `path` and times the reload the sidecar logs."""
    mark = len(sidecar.log())
    write_in(path, text)
    return sidecar.wait_for(mark, pattern, timeout)


def row(args, n, tmp):
    policies = Path(tmp) / f"policies-{n}"
    subprocess.run([str(RELEASE / "examples" / "loadgen"), "policies", "--extra", str(n),
                    "--out", str(policies), "--per-file", str(args.per_file)], check=True)
    files = len(list(policies.glob("*.cedar")))

    started = time.monotonic()
    validate = subprocess.run([args.countersign, "policy", "validate", str(policies)],
                              capture_output=True, text=True)
    validate_s = time.monotonic() - started
    if validate.returncode != 0:
        sys.exit(f"policy validate failed: {validate.stderr[-3000:]}")
    total = re.search(r"ok: (\d+) policies", validate.stdout).group(1)

    sidecar = Sidecar(args.countersign, policies, tmp, args.timeout)
    try:
        edited = policies / "synthetic-0.cedar"
        original = edited.read_text()
        edit_s, line = reload_after(sidecar, edited,
                                    original.replace("10.0.0.0/8", "10.1.0.0/16"),
                                    "policies reloaded", args.timeout)
        validated = re.search(r"validated=(\d+)", line)
        broken_s, _ = reload_after(sidecar, edited,
                                   original.replace("context.http.method", "context.http.nope"),
                                   "policy reload failed", args.timeout)
        reload_after(sidecar, edited, original, "policies reloaded", args.timeout)
    finally:
        sidecar.stop()
    return (f"| {total} | {files} | {validate_s:.2f} | {sidecar.startup:.2f} | {edit_s:.2f}"
            f" | {validated.group(1) if validated else '-'} | {broken_s:.2f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--policies", default="1000,10000",
                    help="generated policies, comma-separated set sizes")
    ap.add_argument("--per-file", type=int, default=100, help="generated policies per file")
    ap.add_argument("--countersign", default=str(RELEASE / "countersign"),
                    help="the binary to time")
    ap.add_argument("--timeout", type=float, default=900,
                    help="seconds to wait for start-up or a reload")
    args = ap.parse_args()
    print(f"`{args.countersign}`\n")
    print("| policies | files | `policy validate` s | `serve` listening s"
          " | reload, one file edited s | policies validated | reload, broken edit refused s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="countersign-reload-") as tmp:
        for n in (int(x) for x in args.policies.split(",")):
            print(row(args, n, tmp), flush=True)


if __name__ == "__main__":
    main()

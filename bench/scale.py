#!/usr/bin/env python3
"""The figures in docs/SCALING.md: what the approval store costs Redis per
guarded call and per pending approval, and the checks per second one Redis
and a 3-primary Redis Cluster (a replica each) sustain. Started by
bench/scale.sh, which installs what it needs and builds the binaries first.

Everything listens on 127.0.0.1 on free ports. One countersign sidecar, the
load generator and every Redis node share this machine, so checks/s here is
what this machine sustains. What carries over to other machines is Redis'
own count: commands, bytes, memory and CPU per call, read from its INFO and
/proc. A primary runs commands on one core, so 1 s divided by its CPU per
call is the most one primary can take.
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import RELEASE, ROOT, TOKEN_USES, Procs, cpu_seconds, free_port

# Commands that are not countersign's calls: this script's own INFO and
# CONFIG, the event connection's keep-alive PING, the cluster client's
# topology reads.
NOT_CALLS = {"info", "config", "ping", "cluster", "client", "hello", "readonly"}


def loadgen(*args, env=None):
    r = subprocess.run([str(RELEASE / "examples" / "loadgen"), *args], capture_output=True,
                       text=True, env={**os.environ, **(env or {})})
    if r.returncode != 0:
        sys.exit(f"loadgen {' '.join(args[:1])} failed: {r.stderr.strip()}")
    return r.stdout.strip()


def cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True,
                          text=True, check=True).stdout


def info(port, section):
    out = {}
    for line in cli(port, "INFO", section).splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v.strip()
    return out


def node_port():
    """A free port for a cluster node: at most 55535, because the node also
    listens on its port + 10000 (the cluster bus)."""
    while True:
        port = free_port()
        if port <= 55535:
            try:
                socket.create_server(("127.0.0.1", port + 10000)).close()
                return port
            except OSError:
                pass


class Store:
    """One redis-server, or a cluster of 3 primaries with a replica each."""

    def __init__(self, procs, tmp, cluster):
        self.cluster = cluster
        self.nodes = []
        for _ in range(6 if cluster else 1):
            port = node_port()
            d = Path(tmp) / f"redis-{port}"
            d.mkdir()
            args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "no", "--dir", str(d)]
            if cluster:
                args += ["--cluster-enabled", "yes", "--repl-diskless-sync-delay", "0",
                         "--cluster-require-full-coverage", "no"]
            self.nodes.append((port, procs.start(f"redis-{port}", args, port=port)))
        if cluster:
            subprocess.run(["redis-cli", "--cluster", "create",
                            *[f"127.0.0.1:{p}" for p, _ in self.nodes],
                            "--cluster-replicas", "1", "--cluster-yes"],
                           capture_output=True, check=True)
            self.settle()
        self.primaries = [p for p, _ in self.nodes if info(p, "replication")["role"] == "master"]

    def settle(self):
        deadline = time.time() + 60
        while time.time() < deadline:
            roles = [info(p, "replication") for p, _ in self.nodes]
            if (all("cluster_state:ok" in cli(p, "CLUSTER", "INFO") for p, _ in self.nodes)
                    and sum(r["role"] == "master" for r in roles) == 3
                    and all(r["role"] == "master" or (r.get("master_link_status") == "up"
                            and r.get("master_sync_in_progress") == "0") for r in roles)):
                return
            time.sleep(0.2)
        sys.exit("the cluster did not settle")

    def toml(self):
        """The embedded default configuration (routes, identity) with this
        store: a configuration file replaces the defaults as a whole."""
        url = ",".join(f"redis://127.0.0.1:{p}" for p, _ in self.nodes)
        default = (ROOT / "src" / "default-config.toml").read_text()
        return (default + f'\n[redis]\nurl = "{url}"\n'
                f'cluster = {"true" if self.cluster else "false"}\n')

    def reset(self):
        for p, _ in self.nodes:
            cli(p, "CONFIG", "RESETSTAT")

    def snapshot(self):
        """Commands, client and replication bytes, memory: primaries only
        (replicas repeat the primaries' writes); CPU: every node."""
        calls, client_bytes, repl_bytes, memory = {}, 0, 0, 0
        for p in self.primaries:
            for k, v in info(p, "commandstats").items():
                name = k.removeprefix("cmdstat_")
                if name.split("|")[0] not in NOT_CALLS:
                    n = int(v.split(",")[0].removeprefix("calls="))
                    calls[name] = calls.get(name, 0) + n
            stats = info(p, "stats")
            # Redis counts replication in its output total; kept apart.
            repl = int(stats.get("total_net_repl_output_bytes", 0))
            repl_bytes += repl
            client_bytes += (int(stats["total_net_input_bytes"])
                             + int(stats["total_net_output_bytes"]) - repl)
            memory += int(info(p, "memory")["used_memory"])
        cpu = {p: cpu_seconds(proc.pid) for p, proc in self.nodes}
        return calls, client_bytes, repl_bytes, memory, cpu


def per_call(store, before, after, n):
    """Figures per call between two snapshots, n calls apart."""
    calls = {k: (v - before[0].get(k, 0)) / n for k, v in after[0].items()}
    cpu = {p: (after[4][p] - before[4][p]) * 1e6 / n for p in after[4]}
    return {
        "commands": calls,
        "client_bytes": (after[1] - before[1]) / n,
        "repl_bytes": (after[2] - before[2]) / n,
        "memory": (after[3] - before[3]) / n,
        "cpu_all": sum(cpu.values()),
        "cpu_busiest": max(cpu[p] for p in store.primaries),
    }


def measure(args, tmp, procs, cluster):
    name = "cluster" if cluster else "one"
    store = Store(procs, tmp, cluster)
    policies = Path(tmp) / f"policies-{name}"
    loadgen("policies", "--extra", "0", "--out", str(policies), "--token-uses", TOKEN_USES)
    config = Path(tmp) / f"countersign-{name}.toml"
    config.write_text(store.toml())
    port = free_port()
    env = {
        "COUNTERSIGN_CONFIG": str(config),
        "COUNTERSIGN_LISTEN": f"127.0.0.1:{port}",
        "COUNTERSIGN_POLICY_DIR": str(policies),
        "COUNTERSIGN_METRICS_LISTEN": "off",
        "COUNTERSIGN_LOG": "warn",
    }
    cs = procs.start(f"countersign-{name}", [str(RELEASE / "countersign"), "serve"], env=env,
                     port=port)
    target = f"http://127.0.0.1:{port}"
    # Distinct approved calls, so that uses land on many shards (and, on
    # the cluster, on every primary).
    tokens = loadgen("token", "--target", target, "--count", "16", env=env)

    before = store.snapshot()
    loadgen("pending", "--target", target, "--count", str(args.pending), env=env)
    time.sleep(1)  # replication buffers drain before memory is read
    opened = per_call(store, before, store.snapshot(), args.pending)

    store.reset()
    before = store.snapshot()
    label = "one Redis" if not cluster else "cluster, 3 primaries + 3 replicas"
    row = loadgen("run", "--target", target, "--pid", str(cs.pid), "--warmup", "0s",
                  "--duration", f"{args.seconds}s", "--mix", "token=1", "--token", tokens,
                  "--connections", "2", "--streams", "32", "--label", label)
    checks = int(row.split("|")[2])
    used = per_call(store, before, store.snapshot(), checks)
    return label, opened, used, row


def commands(c):
    return ", ".join(f"{k} {v:.2f}" for k, v in sorted(c.items()) if v >= 0.005)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=20, help="length of each load run")
    ap.add_argument("--pending", type=int, default=5000, help="approval requests to open")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="countersign-scale-")
    procs = Procs(tmp)
    try:
        results = [measure(args, tmp, procs, cluster) for cluster in (False, True)]
    finally:
        procs.stop_all()

    print("## Checks with a valid approval token (each takes one use)\n")
    print(loadgen("header"))
    for _, _, _, row in results:
        print(row)
    print("\n## Redis' cost, counted by Redis\n")
    print("| | " + " | ".join(label for label, *_ in results) + " |")
    print("|---|" + "---:|" * len(results))
    rows = [
        ("commands per use of an approval", lambda o, u: commands(u["commands"])),
        ("client bytes per use", lambda o, u: f"{u['client_bytes']:.0f}"),
        ("replication bytes per use", lambda o, u: f"{u['repl_bytes']:.0f}"),
        ("Redis CPU µs per use, all nodes", lambda o, u: f"{u['cpu_all']:.1f}"),
        ("Redis CPU µs per use, busiest primary", lambda o, u: f"{u['cpu_busiest']:.1f}"),
        ("uses/s before the busiest primary fills its core (1 s / its CPU per use)",
         lambda o, u: f"{1e6 / u['cpu_busiest'] if u['cpu_busiest'] else float('nan'):,.0f}"),
        (f"commands per approval request opened ({args.pending:,} opened)",
         lambda o, u: commands(o["commands"])),
        ("client bytes per request opened", lambda o, u: f"{o['client_bytes']:.0f}"),
        ("replication bytes per request opened", lambda o, u: f"{o['repl_bytes']:.0f}"),
        ("memory per pending request (primaries)", lambda o, u: f"{o['memory']:.0f} B"),
    ]
    for title, cell in rows:
        print(f"| {title} | " + " | ".join(cell(o, u) for _, o, u, _ in results) + " |")


if __name__ == "__main__":
    main()

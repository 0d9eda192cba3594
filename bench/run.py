#!/usr/bin/env python3
"""Measures countersign against the floor of one ext_authz hop, in one run,
and prints markdown tables with ratios. Started by bench/run.sh, which
installs what it needs and builds the binaries first.

Everything listens on 127.0.0.1 on free ports: its own redis-server, an OTLP
sink (telemetry is on for Envoy and countersign throughout), the floor
server, countersign (with its AuthZEN listener on), and Envoy 1.40 with
variants of envoy/envoy.yaml.
"""
import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from envoy_runs import (ENVOY, RELEASE, ROOT, closed_loop_table, disabled_route_table, envoy_config,
                        fixed_rate, fixed_rate_table, hop_table, validate, wrk)

EXPORT_BODY = '{"format": "csv", "rows": 10}'
# An approved export may be replayed this often in the benchmark's policies.
TOKEN_USES = "4000000000"
# The AuthZEN client's bearer token (docs/authzen.md).
AUTHZEN_TOKEN = "bench-pep-token"
# Evaluations per AuthZEN batch (bench/authzen-evaluations.json).
AUTHZEN_BATCH = 10


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Procs:
    """Background processes, logged to files, all stopped at the end."""

    def __init__(self, tmp):
        self.tmp = Path(tmp)
        self.running = []

    def start(self, name, args, env=None, port=None):
        log = open(self.tmp / f"{name}.log", "w")
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, **(env or {})})
        self.running.append(p)
        if port is not None:
            deadline = time.time() + 60
            while True:
                if p.poll() is not None:
                    sys.exit(f"{name} exited with {p.returncode}; see its log:\n"
                             + (self.tmp / f"{name}.log").read_text()[-3000:])
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        sys.exit(f"{name} did not listen on {port}")
                    time.sleep(0.1)
        return p

    def stop(self, p):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self):
        for p in self.running:
            self.stop(p)


def cpu_seconds(pid):
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_spent(pids, load):
    """Runs `load()`; its result, and the CPU seconds each of `pids` (None:
    not measured) spent meanwhile."""
    before = [cpu_seconds(p) if p else 0 for p in pids]
    result = load()
    return result, [cpu_seconds(p) - b if p else None for p, b in zip(pids, before)]


def authzen_config(tmp, port):
    """The embedded configuration with an `[authzen]` listener on `port` and
    one bearer-token client; the environment overrides the rest as before."""
    digest = hashlib.sha256(AUTHZEN_TOKEN.encode()).hexdigest()
    text = (ROOT / "src" / "default-config.toml").read_text() + f"""
[authzen]
listen = "127.0.0.1:{port}"

[[authzen.clients]]
name = "bench"
token_sha256 = "{digest}"
"""
    path = Path(tmp) / "countersign-authzen.toml"
    path.write_text(text)
    return path


def rss_mib(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def demo_token(*args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "demo-token.py"), *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def loadgen(*args, env=None):
    return subprocess.run([str(RELEASE / "examples" / "loadgen"), *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, check=True).stdout.strip()


def first_export(url, bearer):
    """The export's first call through Envoy: its approval id and token."""
    req = urllib.request.Request(url, data=EXPORT_BODY.encode(), method="POST", headers={
        "authorization": f"Bearer {bearer}", "content-type": "application/json"})
    try:
        urllib.request.urlopen(req)
        sys.exit("the export was allowed without an approval")
    except urllib.error.HTTPError as e:
        body = json.loads(e.read())
    return body["approval_id"], body["approval_token"]


def authzen_post(url, body):
    """One AuthZEN call with the benchmark's token; its JSON answer."""
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "authorization": f"Bearer {AUTHZEN_TOKEN}", "content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def authzen_evaluations(port, pid, seconds, connections):
    """wrk on the AuthZEN listener: one evaluation per request, then a batch
    of AUTHZEN_BATCH, every one an allow (checked first); with the server's
    CPU per decision. Each run follows a 2 s warm-up, as loadgen's do."""
    base = f"http://127.0.0.1:{port}"
    auth = f"authorization: Bearer {AUTHZEN_TOKEN}"
    lua = ROOT / "bench" / "authzen.lua"
    rows = []
    for label, path, body, per_request in [
            ("AuthZEN evaluation, single", "/access/v1/evaluation", "authzen-evaluation.json", 1),
            (f"AuthZEN evaluations, batch of {AUTHZEN_BATCH}", "/access/v1/evaluations",
             "authzen-evaluations.json", AUTHZEN_BATCH)]:
        body = ROOT / "bench" / body
        answer = authzen_post(base + path, body.read_bytes())
        decisions = answer["evaluations"] if "evaluations" in answer else [answer]
        if len(decisions) != per_request or any(d.get("decision") is not True for d in decisions):
            sys.exit(f"{path}: expected {per_request} allow(s), got {answer}")
        env = {"AUTHZEN_BODY": str(body)}
        wrk(base + path, 2, connections, [auth], lua, env)
        r, (cpu,) = cpu_spent([pid], lambda: wrk(base + path, seconds, connections, [auth], lua, env))
        r["label"] = label
        r["decisions_per_s"] = r["rps"] * per_request
        r["cpu_us"] = cpu * 1e6 / max(r["requests"] * per_request, 1)
        rows.append(r)
    return rows


def authzen_report(args, cs_row, rows):
    """The AuthZEN rows beside the direct gRPC allow row of the same run."""
    f = [x.strip() for x in cs_row.split("|")]
    ext = {"label": "ext_authz `Check`, allow (direct gRPC, bench/loadgen.rs 2 x 16 streams)",
           "rps": float(f[3]), "decisions_per_s": float(f[3]), "p50": float(f[4]), "p99": float(f[6]),
           "cpu_us": float(f[8]), "bad": int(f[10])}
    out = ["\n## AuthZEN evaluations beside ext_authz checks (one sidecar, one run)\n",
           "The same sidecar and 100 policies. Each evaluation (bench/authzen-evaluation*.json) has the "
           "ext_authz allow path's action, resource and context and is allowed on the same `read` slice "
           "(its subject `User::\"user-1\"` by `synthetic-1`: AuthZEN brings no JWT groups), over HTTP/1.1 "
           "and JSON on the `[authzen]` listener. The load generators differ (gRPC: loadgen over HTTP/2; "
           "AuthZEN: wrk), so compare CPU per decision, not latency.\n",
           "| run | requests/s | decisions/s | p50 ms | p99 ms | server CPU µs/decision | "
           "decisions per CPU-second | non-2xx or errors |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for x in [ext, *rows]:
        label = x["label"] if x is ext else f"{x['label']} (wrk -t1 -c{args.connections})"
        out.append(f"| {label} | {x['rps']:.0f} | {x['decisions_per_s']:.0f} | {x['p50']:.2f} | "
                   f"{x['p99']:.2f} | {x['cpu_us']:.1f} | {1e6 / x['cpu_us']:.0f} | {x['bad']} |")
    out += ["", "| ratio | value |", "|---|---:|"]
    for x in rows:
        out.append(f"| decisions per CPU-second, {x['label']} / ext_authz | "
                   f"{ext['cpu_us'] / x['cpu_us']:.2f} |")
    return "\n".join(out)


def criterion_table(seconds, only=None):
    """Runs the criterion bench briefly and tabulates its estimates; with
    `only="authzen"`, its AuthZEN group and the check it compares with."""
    subprocess.run(["cargo", "bench", "--locked", "--bench", "check", "--",
                    "--warm-up-time", "1", "--measurement-time", str(seconds), "--noplot",
                    *(["^(authzen/|decide/allow/100$)"] if only else [])],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    base = RELEASE.parent / "criterion"

    def median_us(*parts):
        f = base.joinpath(*parts, "new", "estimates.json")
        return json.loads(f.read_text())["median"]["point_estimate"] / 1000

    check = median_us("decide", "allow", "100")
    one, batch = median_us("authzen", "evaluation"), median_us("authzen", f"evaluations-{AUTHZEN_BATCH}")
    authzen = ["| in process, 100 policies (AuthZEN: the router, `oneshot`) | µs per call | µs per decision | "
               "/ ext_authz check |", "|---|---:|---:|---:|",
               f"| ext_authz check, allow path (`decide/allow/100`) | {check:.1f} | {check:.1f} | 1.00 |",
               f"| AuthZEN evaluation (`authzen/evaluation`) | {one:.1f} | {one:.1f} | {one / check:.2f} |",
               f"| AuthZEN batch of {AUTHZEN_BATCH} (`authzen/evaluations-{AUTHZEN_BATCH}`) | {batch:.1f} | "
               f"{batch / AUTHZEN_BATCH:.1f} | {batch / AUTHZEN_BATCH / check:.2f} |"]
    if only:
        return "\n".join(authzen)
    rows = ["| policies | check, allow path µs | Cedar on the whole set µs | Cedar on the action's slice µs |",
            "|---:|---:|---:|---:|"]
    sizes = [20, 100, 1000, 10000]
    for n in sizes:
        rows.append(f"| {n} | {median_us('decide', 'allow', str(n)):.2f} | "
                    f"{median_us('cedar', 'whole-set', str(n)):.2f} | {median_us('cedar', 'slice', str(n)):.2f} |")
    growth = median_us("decide", "allow", "1000") / median_us("decide", "allow", "20")
    whole = median_us("cedar", "whole-set", "1000") / median_us("cedar", "whole-set", "20")
    traced = median_us("decide", "allow-traced", "100") / median_us("decide", "allow", "100")
    rows += ["", "| ratio | value | target |", "|---|---:|---|",
             f"| check time, 1,000 / 20 policies | {growth:.2f} | < 2 |",
             f"| (Cedar on the whole set, 1,000 / 20, before slicing) | {whole:.2f} | |",
             f"| check with telemetry / without, 100 policies | {traced:.2f} | |",
             "", "| approval store (real Redis) | µs |", "|---|---:|",
             f"| check with a valid token (consume script) | {median_us('approval', 'check-with-token'):.1f} |",
             f"| retried call finds its approved request | {median_us('approval', 'check-retry-finds-request'):.1f} |"]
    mcp = {k: median_us("mcp", k) for k in
           ["http-body-1k-allow", "mcp-1k-allow", "http-body-1k-approved", "mcp-1k-approved"]}
    rows += ["", "| MCP check vs HTTP-route check, ~1 KiB body (memory store) | HTTP µs | MCP µs | MCP / HTTP | target |",
             "|---|---:|---:|---:|---|",
             f"| allowed | {mcp['http-body-1k-allow']:.1f} | {mcp['mcp-1k-allow']:.1f} | "
             f"{mcp['mcp-1k-allow'] / mcp['http-body-1k-allow']:.2f} | ≤ 1.3 |",
             f"| guarded, with a valid approval | {mcp['http-body-1k-approved']:.1f} | {mcp['mcp-1k-approved']:.1f} | "
             f"{mcp['mcp-1k-approved'] / mcp['http-body-1k-approved']:.2f} | ≤ 1.3 |"]
    return "\n".join(rows + [""] + authzen)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=10, help="length of each load run")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections")
    ap.add_argument("--no-criterion", action="store_true", help="skip the criterion benches")
    ap.add_argument("--rates", default="1000,5000",
                    help="fixed request rates through Envoy, comma-separated (empty: none)")
    ap.add_argument("--only", choices=["authzen", "hop", "memory"],
                    help="authzen: only the AuthZEN evaluations and the direct gRPC allow run beside them; "
                    "hop: only the runs through Envoy (a, b, b'', c, d, e0, e) and their fixed rates; "
                    "memory: only the memory run (1,000 policies, 10,000 pending)")
    args = ap.parse_args()
    args.rates = [int(r) for r in args.rates.split(",") if r.strip()]
    tmp = tempfile.mkdtemp(prefix="countersign-bench-")
    procs = Procs(tmp)
    try:
        run(args, tmp, procs)
    finally:
        procs.stop_all()


def run(args, tmp, procs):
    secs = args.seconds
    redis_port, otlp_port, floor_port, floor_http_port, cs_port, authzen_port = (free_port() for _ in range(6))
    procs.start("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                          "--save", "", "--appendonly", "no", "--dir", tmp], port=redis_port)
    procs.start("otlp-sink", [str(RELEASE / "examples" / "floor"), "--otlp",
                              f"127.0.0.1:{otlp_port}"], port=otlp_port)
    if args.only != "authzen":
        floor = procs.start("floor", [str(RELEASE / "examples" / "floor"), "--listen",
                                      f"127.0.0.1:{floor_port}", "--http",
                                      f"127.0.0.1:{floor_http_port}"], port=floor_port)

    def sidecar(name, policies, port, config=None, extra_env=None):
        env = {
            "COUNTERSIGN_LISTEN": f"127.0.0.1:{port}",
            "COUNTERSIGN_POLICY_DIR": str(policies),
            "COUNTERSIGN_REDIS_URL": f"redis://127.0.0.1:{redis_port}",
            "COUNTERSIGN_METRICS_LISTEN": "off",
            "COUNTERSIGN_LOG": "warn",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
        }
        if config:
            env["COUNTERSIGN_CONFIG"] = str(config)
        env.update(extra_env or {})
        return procs.start(name, [str(RELEASE / "countersign"), "serve"], env=env, port=port), env

    p100 = Path(tmp) / "policies-100"
    loadgen("policies", "--extra", "80", "--out", str(p100), "--token-uses", TOKEN_USES)
    # The embedded configuration plus an AuthZEN listener, which the
    # ext_authz path does not consult.
    cs, cs_env = sidecar("countersign", p100, cs_port, authzen_config(tmp, authzen_port))

    if args.only == "memory":
        procs.stop(cs)
        report_header(args)
        print(memory_table(memory_run(tmp, sidecar)))
        return

    # Direct gRPC, no Envoy.
    direct = [loadgen("header")]

    def direct_run(label, target, pid, *extra):
        direct.append(loadgen("run", "--target", f"http://127.0.0.1:{target}", "--pid", str(pid),
                              "--duration", f"{secs}s", "--label", label, *extra))
        return direct[-1]

    if args.only == "authzen":
        cs_row = direct_run("countersign, allow", cs_port, cs.pid)
        authzen = authzen_evaluations(authzen_port, cs.pid, secs, args.connections)
        bench = None if args.no_criterion else criterion_table(max(2, secs // 3), args.only)
        report_header(args)
        print(authzen_report(args, cs_row, authzen))
        if bench:
            print("\n## In process (criterion, benches/check.rs; medians)\n")
            print(bench)
        return
    if args.only != "hop":
        token = loadgen("token", "--target", f"http://127.0.0.1:{cs_port}", env=cs_env)
        floor_row = direct_run("floor, allow", floor_port, floor.pid)
        cs_row = direct_run("countersign, allow", cs_port, cs.pid)
        # Right after the allow run it is compared with, on the same sidecar.
        authzen = authzen_evaluations(authzen_port, cs.pid, secs, args.connections)
        direct_run("countersign, token (Redis consume)", cs_port, cs.pid, "--mix", "token=1", "--token", token)
        direct_run("countersign, mix 8 allow : 1 deny : 1 token", cs_port, cs.pid,
                   "--mix", "allow=8,deny=1,token=1", "--token", token)
        # What the spans cost: the same allow path with unguarded spans
        # sampled out (guarded decisions are always recorded), and with
        # telemetry off.
        for label, extra in [
            ("countersign, allow, unguarded spans sampled out (traceidratio 0.01)",
             {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"}),
            ("countersign, allow, telemetry off", {"OTEL_SDK_DISABLED": "true"}),
        ]:
            port = free_port()
            other, _ = sidecar("countersign-" + label.split(", ")[-1].split(" ")[0], p100, port,
                               extra_env=extra)
            direct_run(label, port, other.pid)
            procs.stop(other)
        cpu = lambda row: float(row.split("|")[8])
        floor_cpu, cs_cpu = cpu(floor_row), cpu(cs_row)

    # Through Envoy.
    alice = demo_token("alice", "analysts")
    agent = demo_token("agent-7", "agents", "--claim", "on_behalf_of=alice")
    lua = ROOT / "bench" / "export.lua"
    export_body = Path(tmp) / "export-body.json"
    export_body.write_text(EXPORT_BODY)
    results, fixed, labels = {}, {}, {}

    def through_envoy(key, label, authz, authz_port, ext_authz=True, google=False, guarded=False,
                      http_floor=None, healthz=False, rates=()):
        """wrk (closed loop), then `loadgen http` at each of `rates`, through
        one Envoy with its own variant of the reference config."""
        ports = {10000: free_port(), 8080: free_port(), 9191: authz_port, 9901: free_port(), 4317: otlp_port}
        config = envoy_config(tmp, key, ports, ext_authz, google, http_floor, healthz)
        validate(config)
        envoy = procs.start(f"envoy-{key}", [str(ENVOY), "-c", str(config), "--concurrency", "1",
                                             "--base-id", str(free_port()), "--log-level", "warn"],
                            port=ports[10000])
        base = f"http://127.0.0.1:{ports[10000]}"
        env = {}
        if guarded:
            approval_id, approval = first_export(f"{base}/v1/datasets/sales/export", agent)
            loadgen("approve", approval_id, env=cs_env)
            env["COUNTERSIGN_APPROVAL"] = approval
            url = f"{base}/v1/datasets/sales/export"
            load = lambda: wrk(url, secs, args.connections, [f"authorization: Bearer {agent}"], lua, env)
            # What bench/export.lua sends.
            request = {"method": "POST", "body_file": export_body,
                       "headers": [f"authorization: Bearer {agent}", "content-type: application/json"],
                       "header_env": ["x-countersign-approval=COUNTERSIGN_APPROVAL"]}
        else:
            url = f"{base}/healthz" if healthz else f"{base}/v1/datasets/sales"
            load = lambda: wrk(url, secs, args.connections, [f"authorization: Bearer {alice}"])
            request = {"headers": [f"authorization: Bearer {alice}"]}
        r, (envoy_cpu, authz_cpu) = cpu_spent([envoy.pid, authz.pid if authz else None], load)
        r["envoy_cpu"] = envoy_cpu * 1e6 / max(r["requests"], 1)
        r["authz_cpu"] = authz_cpu * 1e6 / max(r["requests"], 1) if authz else None
        r["label"] = labels[key] = label
        results[key] = r
        for rate in rates:
            fixed[key, rate] = fixed_rate(url, rate, secs, args.connections, envoy.pid,
                                          authz.pid if authz else None, request, env)
        procs.stop(envoy)

    rates = args.rates
    through_envoy("a", "(a) Envoy, no ext_authz", None, floor_port, ext_authz=False, rates=rates)
    through_envoy("b", "(b) Envoy + floor (envoy_grpc)", floor, floor_port, rates=rates)
    through_envoy("bh", "(b'') Envoy + floor over http_service", floor, floor_port,
                  http_floor=floor_http_port, rates=rates)
    through_envoy("c", "(c) Envoy + countersign, allow (envoy_grpc)", cs, cs_port, rates=rates)
    through_envoy("d", "(d) Envoy + countersign, guarded + token (envoy_grpc)", cs, cs_port, guarded=True,
                  rates=rates)
    through_envoy("e0", "(e0) Envoy, no ext_authz, /healthz direct_response", None, floor_port,
                  ext_authz=False, healthz=True, rates=rates)
    through_envoy("e", "(e) Envoy + countersign, /healthz with its check disabled", cs, cs_port,
                  healthz=True, rates=rates)
    def keep_raw():
        raw = Path(tmp) / "through-envoy.json"
        raw.write_text(json.dumps({"closed_loop": results,
                                   "fixed": [{"key": k, **x} for (k, _), x in fixed.items()]}, indent=1))
        print(f"raw figures through Envoy: {raw}", file=sys.stderr)

    if args.only == "hop":
        keep_raw()
        report_header(args)
        print(envoy_report(args, results, fixed, labels))
        return
    through_envoy("bg", "(b') Envoy + floor (google_grpc)", floor, floor_port, google=True)
    through_envoy("cg", "(c') Envoy + countersign, allow (google_grpc)", cs, cs_port, google=True)
    keep_raw()

    procs.stop(cs)
    memory = memory_run(tmp, sidecar)

    bench = None if args.no_criterion else criterion_table(max(2, secs // 3))
    report_header(args)
    report(args, envoy_report(args, results, fixed, labels), direct, floor_cpu, cs_cpu,
           authzen_report(args, cs_row, authzen), memory)
    if bench:
        print("\n## Decision path without the network (criterion, benches/check.rs; medians)\n")
        print(bench)


def memory_run(tmp, sidecar):
    """Peak and final RSS (MiB) of a sidecar with 1,000 policies and 10,000
    pending approvals, after a short allow/deny load."""
    p1000 = Path(tmp) / "policies-1000"
    loadgen("policies", "--extra", "980", "--out", str(p1000))
    big_port = free_port()
    big, big_env = sidecar("countersign-1000", p1000, big_port)
    loadgen("pending", "--target", f"http://127.0.0.1:{big_port}", "--count", "10000", env=big_env)
    loadgen("run", "--target", f"http://127.0.0.1:{big_port}", "--duration", "5s",
            "--mix", "allow=8,deny=1")
    return rss_mib(big.pid, "VmHWM"), rss_mib(big.pid, "VmRSS")


def memory_table(memory):
    return ("\n## Memory\n\n"
            "| policies | pending approvals | peak RSS MiB | RSS after MiB | target |\n|---:|---:|---:|---:|---|\n"
            f"| 1,000 | 10,000 | {memory[0]:.1f} | {memory[1]:.1f} | < 64 MiB |")


def report_header(args):
    cpu_model = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                      if l.startswith("model name")), "unknown")
    version = lambda cmd: subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True).stdout.strip()
    print(f"# countersign benchmark, {time.strftime('%Y-%m-%d')} (commit {rev})\n")
    print(f"Machine: {os.cpu_count()} cores, {cpu_model}. "
          f"{version([str(ENVOY), '--version']).split('version: ')[-1]}; "
          f"{version(['redis-server', '--version'])}. Load runs of {args.seconds} s; "
          f"telemetry on throughout (Envoy and countersign export spans over OTLP to a local sink); "
          f"countersign with 100 policies (20 examples + 80 generated, bench/synthetic.rs).\n")


def envoy_report(args, r, fixed, labels):
    """The tables of the runs through Envoy."""
    keys = [k for k in ["a", "b", "bh", "c", "d", "e0", "e", "bg", "cg"] if k in r]
    out = [closed_loop_table(args, r, keys)]
    if fixed:
        out.append(fixed_rate_table(args, fixed, labels))
    out.append(hop_table(r, fixed, args.rates))
    out.append(disabled_route_table(r, fixed, args.rates))
    return "\n\n".join(out)


def report(args, envoy, direct, floor_cpu, cs_cpu, authzen, memory):
    print(envoy)
    print("\n## Direct gRPC (bench/loadgen.rs: 2 connections x 16 streams, closed loop)\n")
    print("\n".join(direct))
    print("\n| ratio | value | target |\n|---|---:|---|")
    print(f"| CPU per check, countersign / floor (allow path) | {cs_cpu / floor_cpu:.2f} | ≤ 1.5 |")
    print(f"| countersign checks per CPU-second (allow path) | {1e6 / cs_cpu:.0f} | ≥ 40,000 |")
    print(authzen)
    print(memory_table(memory))


if __name__ == "__main__":
    main()

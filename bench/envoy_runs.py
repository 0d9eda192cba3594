"""The Envoy side of bench/run.py: variants of envoy/envoy.yaml, closed-loop
load (wrk), fixed-rate load (`loadgen http`, open loop), and the tables of
the runs through Envoy.
"""
import json
import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The shared target directory when CARGO_TARGET_DIR names one, as cargo does.
RELEASE = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")).resolve() / "release"
ENVOY = ROOT / ".venv" / "bin" / "envoy"
# A fixed rate counts as sustained when at least this share of it was achieved.
SUSTAINED = 0.95

# The ext_authz filter's gRPC service in envoy/envoy.yaml, replaced for the
# HTTP variant (b''); the hold filter keeps its own.
GRPC_SERVICE = """              grpc_service:
                # Envoy's own gRPC client: in bench/run.sh it served about
                # twice the checks per second of google_grpc.
                envoy_grpc: { cluster_name: countersign }
                timeout: 0.5s
"""
HTTP_SERVICE = """              http_service:
                server_uri: {{ uri: "127.0.0.1:{port}", cluster: floor_http, timeout: 0.25s }}
"""
HTTP_CLUSTER = """  - name: floor_http
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: floor_http
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {port} }}
"""
# A health route whose check is off (e), first in the virtual host.
FIRST_ROUTE = '              - match: { prefix: "/v1/datasets/" }\n'
HEALTHZ_ROUTE = """              - match: { path: "/healthz" }
                direct_response: { status: 200, body: { inline_string: "ok\\n" } }
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    disabled: true
"""


def envoy_config(tmp, name, ports, ext_authz=True, google_grpc=False, http_floor=None, healthz=False):
    """envoy/envoy.yaml with free ports, and optionally without ext_authz,
    with Envoy's google_grpc client for the countersign cluster, with the
    filter's gRPC service replaced by an HTTP one on port `http_floor`, or
    with a `/healthz` route whose check is disabled."""
    text = (ROOT / "envoy" / "envoy.yaml").read_text()
    for old, new in ports.items():
        needle = f"port_value: {old} "
        assert needle in text, needle
        text = text.replace(needle, f"port_value: {new} ")
    if not ext_authz:
        # Routes keep their per-filter settings; without the filter they are inert.
        text = drop_blocks(text, "- name: envoy.filters.http.ext_authz")
    if google_grpc:
        old = "envoy_grpc: { cluster_name: countersign }"
        assert old in text
        text = text.replace(
            old, f'google_grpc: {{ target_uri: "127.0.0.1:{ports[9191]}", stat_prefix: countersign }}')
    if http_floor:
        assert text.count(GRPC_SERVICE) == 1, "the ext_authz filter's grpc_service changed"
        text = text.replace(GRPC_SERVICE, HTTP_SERVICE.format(port=http_floor))
        # The clusters are the file's last section.
        assert text.rstrip().splitlines()[-1].startswith("              socket_address:")
        text = text.rstrip("\n") + "\n" + HTTP_CLUSTER.format(port=http_floor)
    if healthz:
        assert text.count(FIRST_ROUTE) == 1, "the first route changed"
        text = text.replace(FIRST_ROUTE, HEALTHZ_ROUTE + FIRST_ROUTE)
    path = Path(tmp) / f"envoy-{name}.yaml"
    path.write_text(text)
    return path


def validate(config):
    """Exits with Envoy's message if it does not accept `config`."""
    r = subprocess.run([str(ENVOY), "--mode", "validate", "-c", str(config), "--log-level", "error"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"envoy --mode validate rejects {config}:\n{r.stdout}{r.stderr}")


def drop_blocks(text, head):
    """Removes each line that reads `head` and the lines nested under it."""
    out, skip = [], None
    for line in text.splitlines(keepends=True):
        indent = len(line) - len(line.lstrip())
        if skip is not None and (not line.strip() or indent > skip):
            continue
        skip = None
        if line.strip() == head:
            skip = indent
            continue
        out.append(line)
    return "".join(out)


def wrk(url, seconds, connections, headers, script=None, env=None):
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    if script:
        cmd += ["-s", str(script)]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})}).stdout

    def latency(pct):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": latency(50), "p90": latency(90), "p99": latency(99),
        "bad": (int(non2xx.group(1)) if non2xx else 0)
        + (sum(int(g) for g in errors.groups()) if errors else 0),
    }


def fixed_rate(url, rate, seconds, connections, envoy_pid, authz_pid, request, env=None):
    """`loadgen http` at `rate` requests/s (open loop, 2 s warm-up); its
    figures with Envoy's and the authz server's CPU µs per request (None
    without an authz server). `request` holds `method`, `headers`,
    `header_env` and `body_file`."""
    cmd = [str(RELEASE / "examples" / "loadgen"), "http", "--url", url, "--rate", str(rate),
           "--duration", f"{seconds}s", "--connections", str(connections), "--json",
           "--method", request.get("method", "GET"), "--pid", str(envoy_pid)]
    if authz_pid:
        cmd += ["--pid", str(authz_pid)]
    for h in request.get("headers", []):
        cmd += ["--header", h]
    for h in request.get("header_env", []):
        cmd += ["--header-env", h]
    if request.get("body_file"):
        cmd += ["--body-file", str(request["body_file"])]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})}).stdout
    r = json.loads(out)
    # None when no request was measured (far over capacity).
    r["envoy_cpu"] = r["cpu_us"][0]
    r["authz_cpu"] = r["cpu_us"][1] if authz_pid else None
    return r


def us(value):
    return "-" if value is None else f"{value:.1f}"


def ms(x, q):
    """Latency `q` of run `x`; far over capacity no request is measured."""
    return f"{x[q]:.2f}" if x.get("requests") else "-"


def closed_loop_table(args, r, keys):
    """The wrk runs through Envoy, and their ratios."""
    out = [f"## Through Envoy (wrk -t1 -c{args.connections}, Envoy --concurrency 1, reference config)\n",
           "| run | req/s | p50 ms | p90 ms | p99 ms | authz server CPU µs/req | Envoy CPU µs/req | "
           "non-2xx or errors |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for k in keys:
        x = r[k]
        authz = "-" if x["authz_cpu"] is None else f"{x['authz_cpu']:.1f}"
        out.append(f"| {x['label']} | {x['rps']:.0f} | {x['p50']:.2f} | {x['p90']:.2f} | {x['p99']:.2f} | "
                   f"{authz} | {x['envoy_cpu']:.1f} | {x['bad']} |")
    ratio = lambda k1, k2, f: r[k1][f] / r[k2][f]
    rows = [("throughput (b)/(a): the cost of the hop", "b", "a", "rps", ""),
            ("throughput (c)/(b)", "c", "b", "rps", "≥ 0.9"),
            ("p99 (c)/(b)", "c", "b", "p99", "≤ 1.2"),
            ("p99 (d)/(c)", "d", "c", "p99", "≤ 1.3"),
            ("throughput http_service / grpc_service, floor (b'')/(b)", "bh", "b", "rps", ""),
            ("Envoy CPU per request http_service / grpc_service, floor (b'')/(b)", "bh", "b", "envoy_cpu", ""),
            ("Envoy CPU per request, check disabled on the route / countersign allow, (e)/(c)",
             "e", "c", "envoy_cpu", ""),
            ("throughput google_grpc / envoy_grpc, floor (b')/(b)", "bg", "b", "rps", ""),
            ("throughput google_grpc / envoy_grpc, countersign (c')/(c)", "cg", "c", "rps", "")]
    out += ["", "| ratio | value | target |", "|---|---:|---|"]
    for label, k1, k2, field, target in rows:
        if k1 in r and k2 in r:
            out.append(f"| {label} | {ratio(k1, k2, field):.2f} | {target} |")
    return "\n".join(out)


def sustained(x):
    return x["rate"] >= SUSTAINED * x["target_rate"] and x["unsent"] == 0


def fixed_rate_table(args, fixed, labels):
    """The open-loop runs: one row per variant and rate."""
    out = [f"## Fixed rates through Envoy (loadgen http: open loop, {args.connections} HTTP/1.1 "
           f"connections, latency from each request's intended send time, {args.seconds} s after 2 s "
           "of warm-up; Envoy --concurrency 1)\n",
           "| run | target req/s | achieved req/s | p50 ms | p99 ms | p99.9 ms | Envoy CPU µs/req | "
           "authz server CPU µs/req | loadgen CPU µs/req | non-2xx or errors |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (k, rate), x in fixed.items():
        achieved = f"{x['rate']:.0f}"
        if not sustained(x):
            achieved += (f" (**not sustained**: {100 * x['rate'] / x['target_rate']:.1f} %"
                         + (f", {x['unsent']} unsent" if x["unsent"] else "") + ")")
        out.append(f"| {labels[k]} | {rate} | {achieved} | {ms(x, 'p50')} | {ms(x, 'p99')} | "
                   f"{ms(x, 'p999')} | {us(x['envoy_cpu'])} | {us(x['authz_cpu'])} | "
                   f"{us(x['loadgen_cpu_us'])} | {x['non_2xx'] + x['errors']} |")
    out.append(f"\nA rate is sustained when at least {SUSTAINED:.0%} of it was achieved and every request "
               "due in the window was sent; the latencies of a rate not sustained grow with the length "
               "of the run (requests queue), so read them as \"over capacity\", not as figures. "
               "The load generator shares the machine's cores with Envoy and the authz server.")
    return "\n".join(out)


def hop_table(r, fixed, rates):
    """Envoy's HTTP ext_authz against its gRPC ext_authz, both to the floor."""
    out = ["## The hop: http_service against grpc_service (both to the floor, same decisions)\n",
           "| load | (b) grpc_service req/s | (b'') http_service req/s | (b) Envoy CPU µs/req | "
           "(b'') Envoy CPU µs/req | (b) floor CPU µs/req | (b'') floor CPU µs/req | "
           "(b) p99 ms | (b'') p99 ms |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    loads = [("closed loop (wrk)", r.get("b"), r.get("bh"), "rps")]
    loads += [(f"{rate} req/s", fixed.get(("b", rate)), fixed.get(("bh", rate)), "rate") for rate in rates]
    for name, g, h, rate_field in loads:
        if g is None or h is None:
            continue
        if rate_field == "rate" and not (sustained(g) and sustained(h)):
            name += " (**not sustained** by " + " and ".join(
                k for k, x in [("(b)", g), ("(b'')", h)] if not sustained(x)) + ")"
        out.append(f"| {name} | {g[rate_field]:.0f} | {h[rate_field]:.0f} | {us(g['envoy_cpu'])} | "
                   f"{us(h['envoy_cpu'])} | {us(g['authz_cpu'])} | {us(h['authz_cpu'])} | "
                   f"{ms(g, 'p99')} | {ms(h, 'p99')} |")
    return "\n".join(out)


def disabled_route_table(r, fixed, rates):
    """Envoy's CPU per request on a route whose check is off (e) beside no
    filter (a, e0) and the countersign allow path (c)."""
    keys = [k for k in ["a", "e0", "e", "c"] if k in r]
    out = ["## A route with its check disabled (`ExtAuthzPerRoute {disabled: true}`)\n",
           "Envoy CPU µs per request; the rows' names are those of the tables above.\n",
           "| load | " + " | ".join(f"{r[k]['label'].split(' ', 1)[0]}" for k in keys) + " |",
           "|---|" + "---:|" * len(keys)]
    out.append("| closed loop (wrk) | " + " | ".join(f"{r[k]['envoy_cpu']:.1f}" for k in keys) + " |")
    for rate in rates:
        cells = [fixed.get((k, rate)) for k in keys]
        out.append(f"| {rate} req/s | " + " | ".join(us(c and c["envoy_cpu"]) for c in cells) + " |")
    return "\n".join(out)

#!/usr/bin/env python3
"""Copies the parts of the reference configs that the Kubernetes examples
share with them, so the ConfigMaps cannot drift:

- envoy.yaml: listener `ingress` (filters, routes, held and body-reading
  routes) from envoy/envoy.yaml, with its address changed to 0.0.0.0;
- countersign.toml: everything from `[identity]` on (identity, request,
  routes, audit) from src/default-config.toml.

Run it from anywhere after changing either source; it rewrites only those
parts and says which files changed. tests/kubernetes_manifests/ fails while
they differ (and also checks the parts written by hand).
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = ROOT / "deploy" / "kubernetes"
VARIANTS = ["sidecar", "shared"]
# The line in each countersign.toml after which src/default-config.toml is copied.
TOML_MARKER = "# ---- copied from src/default-config.toml by refresh.py, from [identity] on ----\n"


def listener_block(lines, name, origin):
    """(start, end) of the list item `  - name: NAME` under
    static_resources.listeners: up to the next line indented two spaces or
    less (the next listener, a comment before it, or `clusters:`)."""
    start = next((i for i, l in enumerate(lines) if l == f"  - name: {name}\n"), None)
    if start is None:
        sys.exit(f"refresh.py: {origin} has no line `  - name: {name}`")
    end = start + 1
    while end < len(lines) and (lines[end].strip() == "" or re.match(r"^ {3,}", lines[end])):
        end += 1
    return start, end


def refresh_envoy(target):
    source = (ROOT / "envoy" / "envoy.yaml").read_text().splitlines(keepends=True)
    s, e = listener_block(source, "ingress", "envoy/envoy.yaml")
    block = source[s:e]
    # The listener's own address is its first socket_address.
    i = next(i for i, l in enumerate(block) if "socket_address:" in l)
    if "address: 127.0.0.1," not in block[i]:
        sys.exit(f"refresh.py: unexpected ingress address line in envoy/envoy.yaml: {block[i]!r}")
    block[i] = block[i].replace("address: 127.0.0.1,", "address: 0.0.0.0,", 1)
    lines = target.read_text().splitlines(keepends=True)
    ts, te = listener_block(lines, "ingress", target)
    return "".join(lines[:ts] + block + lines[te:])


def refresh_toml(target):
    source = (ROOT / "src" / "default-config.toml").read_text()
    at = source.find("\n[identity]\n")
    if at < 0:
        sys.exit("refresh.py: src/default-config.toml has no `[identity]` table")
    text = target.read_text()
    m = text.find(TOML_MARKER)
    if m < 0:
        sys.exit(f"refresh.py: {target} lacks the marker line {TOML_MARKER!r}")
    return text[: m + len(TOML_MARKER)] + source[at + 1 :]


def main():
    changed = []
    for v in VARIANTS:
        for name, refresh in [("envoy.yaml", refresh_envoy), ("countersign.toml", refresh_toml)]:
            target = HERE / v / name
            new = refresh(target)
            if new != target.read_text():
                target.write_text(new)
                changed.append(str(target.relative_to(ROOT)))
    print("refreshed: " + ", ".join(changed) if changed else "up to date")


if __name__ == "__main__":
    main()

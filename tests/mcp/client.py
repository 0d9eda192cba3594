"""MCP test client for the end-to-end test: one session, a list of steps, one JSON line per step.

Usage: client.py URL STEPS_JSON
  STEPS_JSON: [{"op": "list"} | {"op": "call", "tool": NAME, "arguments": {...}}, ...]
  env MCP_BEARER: sent as "Authorization: Bearer ..." on every request, if set
  env MCP_TIMEOUT_SECONDS: read timeout per request (default 30)
Exit code 0 unless the arguments are wrong; failures are reported as JSON lines.
"""

import asyncio
import json
import os
import sys

import httpx2
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client


def leaf(e: BaseException) -> BaseException:
    # anyio task groups wrap the real failure in (nested) ExceptionGroups.
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return e


def failure(op: str, e: BaseException) -> dict:
    e = leaf(e)
    mcp_error = isinstance(e, MCPError)
    return {
        "op": op,
        "exception": type(e).__name__,
        "message": str(e),
        "code": e.code if mcp_error else None,
        "data": e.data if mcp_error else None,
    }


def emit(line: dict) -> None:
    print(json.dumps(line), flush=True)


async def step(session: ClientSession, s: dict) -> dict:
    if s["op"] == "list":
        result = await session.list_tools()
        return {"op": "list", "tools": [t.name for t in result.tools]}
    result = await session.call_tool(s["tool"], s.get("arguments") or {})
    return {
        "op": "call",
        "is_error": bool(result.is_error),
        "text": "\n".join(c.text for c in result.content if c.type == "text"),
        "structured": result.structured_content,
    }


async def run(url: str, steps: list[dict]) -> None:
    timeout = float(os.environ.get("MCP_TIMEOUT_SECONDS", "30"))
    headers = {"Authorization": f"Bearer {os.environ['MCP_BEARER']}"} if os.environ.get("MCP_BEARER") else {}
    # The session's own per-request timeout (MCPError, code REQUEST_TIMEOUT) bounds each step. An httpx
    # read timeout would instead crash the transport's task group and with it the whole session, even
    # when it fires for a request the session has already given up on; so httpx gets none for reads.
    http_timeout = httpx2.Timeout(timeout, read=None)
    current = "initialize"  # the op whose line is not printed yet
    try:
        async with (
            httpx2.AsyncClient(headers=headers, timeout=http_timeout) as http,
            streamable_http_client(url, http_client=http) as (read, write),
            ClientSession(read, write, read_timeout_seconds=timeout) as session,
        ):
            await session.initialize()
            current = None
            for s in steps:
                current = s["op"]
                try:
                    line = await step(session, s)
                except Exception as e:
                    line = failure(current, e)
                emit(line)
                current = None
    except Exception as e:
        # initialize failed, or the transport did (e.g. connection refused), which ends the session: the
        # remaining steps are not run. Reported on the op in progress, or on stderr if every line is out.
        if current is None:
            print(f"after the last step: {failure('close', e)}", file=sys.stderr)
        else:
            emit(failure(current, e))


def valid_step(s: object) -> bool:
    if not isinstance(s, dict):
        return False
    if s.get("op") == "call":
        return isinstance(s.get("tool"), str) and isinstance(s.get("arguments", {}), dict)
    return s.get("op") == "list"


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    try:
        steps = json.loads(sys.argv[2])
    except ValueError as e:
        sys.exit(f"STEPS_JSON is not JSON: {e}")
    if not isinstance(steps, list) or not all(valid_step(s) for s in steps):
        sys.exit('STEPS_JSON must be a JSON array of {"op": "list"} or {"op": "call", "tool": NAME, "arguments": {...}}')
    asyncio.run(run(sys.argv[1], steps))


if __name__ == "__main__":
    main()

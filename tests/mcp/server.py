"""MCP test server for the end-to-end test: three dataset tools over Streamable HTTP.

Usage: server.py PORT  (serves http://127.0.0.1:PORT/mcp; logs go to stderr only)
"""

import copy
import sys

import uvicorn
from mcp.server import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

mcp = MCPServer("countersign-e2e", log_level="WARNING")


@mcp.tool()
def read_dataset(dataset: str) -> str:
    return f"rows of {dataset}"


@mcp.tool()
def export_dataset(dataset: str, format: str, destination: str) -> str:
    return f"exported {dataset} as {format} to {destination}"


@mcp.tool()
def delete_dataset(dataset: str) -> str:
    return f"deleted {dataset}"


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: server.py PORT")
    app = mcp.streamable_http_app(
        # One POST, one application/json answer, no session id: each request stands alone.
        stateless_http=True,
        json_response=True,
        # Requests arrive through Envoy with Host e.g. api.local; the SDK's default for a
        # 127.0.0.1 bind answers those 421 (DNS-rebinding protection).
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    # uvicorn's access log goes to stdout by default; keep stdout clean.
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_config=log_config, log_level="info")


if __name__ == "__main__":
    main()

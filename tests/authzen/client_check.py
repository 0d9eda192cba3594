"""Asks an AuthZEN PDP through two AuthZEN 1.0 clients from PyPI.

Driven by tests/authzen_conformance/, which owns the cases and compares the
answers with its own raw HTTP calls. Reads on stdin:

    {"base": URL, "token": TOKEN, "single": [request, ...], "batch": [request, ...]}

and prints on stdout, for each client, the decisions it reported:

    {"apparitor": {"single": [bool, ...], "batch": [[bool, ...], ...], "bad_token": STATUS},
     "decern": {"single": [bool, ...], "bad_token": STATUS}}

`bad_token` is the HTTP status each client reports for a call with a token
the PDP does not know (None if the call did not fail).
"""

import asyncio
import json
import sys

import httpx
from apparitor import ScannerConfig
from apparitor.client import AuthZENClient
from apparitor.errors import AuthZENClientError
from apparitor.models import BatchEvaluationRequest, EvaluationRequest
from decern import Client as DecernClient
from decern import DecernError


def apparitor_client(base: str, token: str) -> AuthZENClient:
    # The PDP listens on loopback: apparitor refuses that unless told it is
    # a local PDP. No retries, so an error is seen as it is.
    config = ScannerConfig(pdp_url=base, allow_insecure_pdp=True, max_retries=0)
    http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"})
    return AuthZENClient(config, http_client=http)


async def ask_apparitor(cases: dict) -> dict:
    async with apparitor_client(cases["base"], cases["token"]) as client:
        single = [
            (await client.evaluate(EvaluationRequest.model_validate(r))).decision
            for r in cases["single"]
        ]
        batch = []
        for r in cases["batch"]:
            answer = await client.evaluate_batch(BatchEvaluationRequest.model_validate(r))
            batch.append([e.decision for e in answer.evaluations])
    bad_token = None
    async with apparitor_client(cases["base"], "not-the-token") as client:
        try:
            await client.evaluate(EvaluationRequest.model_validate(cases["single"][0]))
        except AuthZENClientError as e:
            bad_token = e.status_code
    return {"single": single, "batch": batch, "bad_token": bad_token}


def ask_decern(cases: dict) -> dict:
    client = DecernClient(cases["base"], token=cases["token"])
    single = []
    for r in cases["single"]:
        d = client.evaluate(r["subject"], r["action"], r["resource"], r.get("context"))
        single.append(d.allowed)
    bad_token = None
    r = cases["single"][0]
    try:
        DecernClient(cases["base"], token="not-the-token").evaluate(
            r["subject"], r["action"], r["resource"]
        )
    except DecernError as e:
        bad_token = e.status_code
    return {"single": single, "bad_token": bad_token}


def main() -> None:
    cases = json.load(sys.stdin)
    answers = {"apparitor": asyncio.run(ask_apparitor(cases)), "decern": ask_decern(cases)}
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main()

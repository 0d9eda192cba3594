-- wrk script: AuthZEN evaluations (docs/authzen.md) with the body in the
-- file AUTHZEN_BODY names: bench/authzen-evaluation.json (one) or
-- bench/authzen-evaluations.json (a batch of 10). The bearer token comes
-- with -H.
local f = assert(io.open(os.getenv("AUTHZEN_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["content-type"] = "application/json"

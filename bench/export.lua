-- wrk script: an agent's dataset export, retried with an approved token
-- (COUNTERSIGN_APPROVAL). The body must be the one that was approved.
wrk.method = "POST"
wrk.body = '{"format": "csv", "rows": 10}'
wrk.headers["content-type"] = "application/json"
wrk.headers["x-countersign-approval"] = os.getenv("COUNTERSIGN_APPROVAL")

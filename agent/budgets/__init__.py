"""Budgets: tokens, steps, tool calls and wall time, per run and per tenant/key/agent per day.

`model` holds the plain types (the datastore maps its rows onto them), `ports` the store the
datastore implements, `gate` what one run checks before each step, model call and tool call,
`directory` which rules apply to a run, and `service` the configuration commands. Nothing is
re-exported here, so the datastore importing `model` pulls in nothing else.
"""

"""Governed actions: declarative, versioned policies judged at tool dispatch.

`document` and `file` read a policy file, `evaluators` and `compiled` turn it into small
composable evaluators (`evaluate(action, ctx) -> Allow | Deny | RequireApproval`), `provenance`
marks arguments that came from untrusted content, `gate` is what the run loop consults per
proposed action, and `service` applies, shows, diffs and tests policies for the CLI.
"""

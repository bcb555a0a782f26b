"""Peer frameworks for the durable per-turn overhead benchmark (`bench.durable_overhead`).

Everything here except `model_server` and `harness` imports a peer framework, and so runs only
in the benchmark's own virtualenv (`bench/.peers-venv`, from `bench/peers/requirements.txt`),
never in Garrison's. `model_server` is standard library only; `harness` needs psycopg, which
both virtualenvs have (each runner hands it the HTTP library its SDK is built on).
"""

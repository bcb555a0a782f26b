"""Garrison's own vLLM engines: their environment, command lines, processes and supervision.

`environment` builds and checks the engine's own virtualenv (never the application's),
`command` turns a deployment into a server command line, `process` and `health` start, find,
stop and probe one server, `manager` does that for a whole registry, `supervisor` restarts
crashed engines while `garrison up` runs, `bundled` and `gguf` provide the small built-in CPU
models. The engines are separate processes spoken to over HTTP; nothing here imports vLLM.
"""

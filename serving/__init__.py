"""Model serving: how Garrison speaks to OpenAI-compatible engines (vLLM) over HTTP.

This package owns the wire adapter (`serving.client`), its typed results (`serving.types`) and
errors (`serving.errors`), the endpoint settings (`serving.settings`), the registry of
deployments (`serving.registry`, loaded by `serving.models_file` and chosen by
`serving.registry_source`), routing by role with retries, fallback, circuit breakers and
in-flight caps (`serving.router`), and the scripted model server for tests (`serving.testing`).
It knows nothing about agents, tools or the datastore: the run loop depends on a narrow port and
this package satisfies it.
"""

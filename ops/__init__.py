"""The `garrison` CLI: thin commands over the services the API uses (see ops.cli)."""

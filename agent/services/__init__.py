"""Use cases shared by the API and the CLI. Routes and commands call these, never the stores."""

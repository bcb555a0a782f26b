"""Repositories: the datastore's implementations of the ports declared in `agent.ports`."""

"""One module per noun of `garrison <noun> <verb>`; each is a thin layer over `agent.services`."""

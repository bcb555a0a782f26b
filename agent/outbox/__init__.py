"""Side effects after their step commits: settings, the egress allow-list, the transports
(SMTP, HTTP), the dispatcher that delivers outbox rows, and the service the CLI and API read
them through. Tools never import the transports: they only queue `OutboxEffect`s."""

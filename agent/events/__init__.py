"""Run events: a run's state changes and committed steps, as a replayable, live stream.

`hub` fans one LISTEN connection's notifications out to watchers in this process; `stream`
turns the event table plus those wake-ups into an ordered, gap-free, duplicate-free stream.
Transports (SSE in `agent.api.routes.events`, `garrison runs watch`) sit on top.
"""

from agent.events.hub import EventHub, Subscription
from agent.events.ports import EventStore, RunEvent
from agent.events.settings import EventSettings
from agent.events.stream import IDLE, EventStream, Idle, Watch, is_terminal

__all__ = [
    "IDLE",
    "EventHub",
    "EventSettings",
    "EventStore",
    "EventStream",
    "Idle",
    "RunEvent",
    "Subscription",
    "Watch",
    "is_terminal",
]

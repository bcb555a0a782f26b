"""One router per resource. Routes parse, call one service, and shape the answer; nothing more."""

"""Who may run what: the one table of CLI commands and the role each one needs.

The CLI's counterpart of the API's route table (`agent.api.roles`): every command is a row of
`COMMAND_ROLES`, keyed by its path below `garrison` ("approvals approve"), and which role holds
which is the API's own rule (`agent.roles`). The table is consulted for every command, with a
key or without: a command without a row fails for every caller (`UndeclaredCommand`), and a
test walks the registered commands so that none is added without one.

The rows, and why:

* `HOST` — the appliance itself: its processes, schema, engines, model deployments, the vector
  index, the tenants, and the audit chain of every tenant. These reach past any one tenant, so
  no key may run them, whatever its roles (`forbidden`): they run as the host's administrator,
  the CLI without a key, who can reach the database anyway. GARRISON_CLI_REQUIRE_KEY does not
  apply to them.
* `admin` — a tenant's governance: its keys, agents, policies and budgets.
* `operator`, `client`, `approver` — what the API grants them, command for command: a client
  submits and reads runs, documents, search and the side effects runs queued; an operator also
  steers runs, manages documents and reads the tenant's agents, policies and budgets; an
  approver decides approvals and nothing else.

Without a key the CLI is the local administrator and may run every command.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Final

import typer

from agent.domain import Role


class Host(Enum):
    """The marker of a host command, in the table beside the roles: not a role a key can hold,
    so that no check of roles (`agent.roles`) can ever let a key through to one."""

    ADMINISTRATOR = "host administrator"


HOST: Final = Host.ADMINISTRATOR
Needed = Role | Host
"""What a command needs: a role of the key's tenant, or the host's administrator (no key)."""

COMMAND_ROLES: Mapping[str, Needed] = {
    # The appliance: the host's administrator only.
    "up": HOST,
    "serve": HOST,
    "worker": HOST,
    "db upgrade": HOST,
    "db status": HOST,
    "engine install": HOST,
    "engine status": HOST,
    "models list": HOST,
    "models sync": HOST,
    "models health": HOST,
    "models import-gguf": HOST,
    "models serve": HOST,
    "models stop": HOST,
    "models status": HOST,
    "models logs": HOST,
    "reindex": HOST,
    "calibrate": HOST,
    "audit verify": HOST,
    "audit export": HOST,
    "tenants create": HOST,
    "tenants list": HOST,
    # A tenant's governance: who may call, what its agents are and may do, what they may spend.
    "keys create": Role.ADMIN,
    "keys list": Role.ADMIN,
    "keys revoke": Role.ADMIN,
    "agents put": Role.ADMIN,
    "agents list": Role.OPERATOR,
    "policies apply": Role.ADMIN,
    "policies show": Role.OPERATOR,
    "policies diff": Role.OPERATOR,
    "policies history": Role.OPERATOR,
    "policies test": Role.OPERATOR,
    "budgets set": Role.ADMIN,
    "budgets clear": Role.ADMIN,
    "budgets show": Role.OPERATOR,
    # Runs and their side effects: a client submits and reads; an operator steers.
    "runs list": Role.CLIENT,
    "runs show": Role.CLIENT,
    "runs watch": Role.CLIENT,
    "runs submit": Role.CLIENT,
    "runs cancel": Role.OPERATOR,
    "runs resume": Role.OPERATOR,
    "runs fork": Role.OPERATOR,
    "runs replay": Role.OPERATOR,
    "outbox list": Role.CLIENT,
    "outbox retry": Role.OPERATOR,
    # Documents: anyone may read and search what agents read; an operator manages it.
    "docs list": Role.CLIENT,
    "docs show": Role.CLIENT,
    "search": Role.CLIENT,
    "docs add": Role.OPERATOR,
    "docs delete": Role.OPERATOR,
    # Approvals: an approver sees and decides them, and nothing else.
    "approvals list": Role.APPROVER,
    "approvals show": Role.APPROVER,
    "approvals approve": Role.APPROVER,
    "approvals deny": Role.APPROVER,
}


class UndeclaredCommand(RuntimeError):
    """A command ran but has no row in `COMMAND_ROLES`: a bug, refused (fail closed)."""


def command_path(ctx: typer.Context) -> str:
    """The path of the command `ctx` runs, below the root: "approvals approve"."""
    names: list[str] = []
    name, parent = ctx.info_name, ctx.parent
    while parent is not None:  # the root's own name is the program's: left out
        names.append(name or "")
        name, parent = parent.info_name, parent.parent
    return " ".join(reversed(names))


def needed_role(command: str) -> Needed:
    role = COMMAND_ROLES.get(command)
    if role is None:
        raise UndeclaredCommand(
            f"`garrison {command}` has no row in ops.command_roles.COMMAND_ROLES; "
            "say which role it needs before it can run"
        )
    return role

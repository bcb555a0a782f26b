"""The demo tenant's records: Northwind Instruments' customers and orders, and one state record.

Small and fixed, so `garrison up` can seed them every time (idempotently) and the README's
examples give the same answers everywhere.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

CUSTOMERS: Final[list[dict[str, Any]]] = [
    {"id": 1, "name": "Helvetia BioLabs", "country": "CH", "segment": "laboratory",
     "contact_email": "purchasing@helvetia-biolabs.example", "since": date(2019, 3, 1)},
    {"id": 2, "name": "Rheinwerk Process GmbH", "country": "DE", "segment": "industry",
     "contact_email": "einkauf@rheinwerk.example", "since": date(2020, 9, 15)},
    {"id": 3, "name": "Nordlys Aquaculture", "country": "NO", "segment": "environment",
     "contact_email": None, "since": date(2022, 1, 10)},
    {"id": 4, "name": "Universidad del Valle", "country": "ES", "segment": "laboratory",
     "contact_email": "compras@uvalle.example", "since": date(2023, 5, 2)},
]  # fmt: skip

_PRODUCTS: Final = (
    ("NW-2100 Benchtop pH meter", 640.00),
    ("NW-4400 Dissolved oxygen probe", 1180.00),
    ("NW-8800 Field data hub", 2950.00),
    ("NW-0100 Calibration kit", 95.00),
)
_STATUSES: Final = ("shipped", "shipped", "shipped", "invoiced", "open")


def _orders() -> list[dict[str, Any]]:
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    rows = []
    for i in range(1, 25):
        product, price = _PRODUCTS[i % len(_PRODUCTS)]
        quantity = 1 + (i * 7) % 5
        rows.append(
            {
                "id": 1000 + i,
                "customer_id": 1 + (i * 3) % len(CUSTOMERS),
                "product": product,
                "quantity": quantity,
                "amount": round(price * quantity, 2),
                "currency": "EUR",
                "status": _STATUSES[i % len(_STATUSES)],
                "ordered_at": start + timedelta(days=9 * i),
            }
        )
    return rows


ORDERS: Final = _orders()

PREFERENCES_KEY: Final = "customer:2:preferences"
PREFERENCES: Final = {"contact_channel": "email", "language": "de", "newsletter": False}

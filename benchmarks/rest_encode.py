"""What encoding a REST answer costs: the json module (as the API did, web.json_response and
json.dumps of to_dict()) against msgspec (as it does now), for a page of 1000 call-log items
and a list of 1000 client cards (the card's REST view built from the directory's values
included). Both sides must give the same JSON; the figures are the best of a few rounds.

    python benchmarks/rest_encode.py [--n 1000] [--rounds 7] [--smoke]
"""

from __future__ import annotations

import argparse
import functools
import json
import timeit
from collections.abc import Callable
from typing import Any

import msgspec

from pbxlink.calls.record import CallRecord, iso_utc
from pbxlink.clients import model
from pbxlink.web import cards

T0 = 1_760_000_000.0


def call_items(n: int) -> list[dict[str, Any]]:
    """What query.page hands the handler: record dicts plus the client's columns."""
    out = []
    for i in range(n):
        record = CallRecord(
            call_id=f"{T0 + i:.2f}", started_at=T0 + i * 60, direction="inbound",
            caller_number=f"+99555512{i % 10_000:04d}", caller_name="Nino Beridze",
            called_number="200", status="answered", offered_at=T0 + i * 60 + 1,
            answered_at=T0 + i * 60 + 9, ended_at=T0 + i * 60 + 190,
            extensions_rung=["101", "102"], answered_by="101", wait_s=8.0, talk_s=181.0,
            hangup_cause=16, queue="sales", recording=f"2026/12/02/{i}.wav",
        )  # fmt: skip
        item = record.to_dict()
        item |= {"client_id": i, "too_long": False, "client_name": "Nino",
                 "client_category": "vip"}  # fmt: skip
        out.append(item)
    return out


def clients(n: int) -> list[model.Client]:
    order = model.Order(1, 1, "A-1", "shipped", "Nino", 120.5, True, T0, T0)
    out = []
    for i in range(n):
        phone = model.Phone(i, i, "0555123456", "+995555123456", "123456", "mobile")
        client = model.Client(
            id=i, name=f"Nino Beridze {i}", company="Sakartvelo Ltd", category="vip",
            category_label="VIP", category_color="#d4a017", notes="calls mornings",
            city="Tbilisi", country="GE", photo=None, responsible="Ana", created_at=T0,
            updated_at=T0, phones=(phone,), open_orders=(order,),
        )  # fmt: skip
        out.append(client)
    return out


def old_client_dict(c: model.Client) -> dict[str, Any]:
    """Client.to_dict() as it was before the REST view moved to web/cards.py."""
    return {
        "id": c.id, "name": c.name, "company": c.company,
        "category": {"name": c.category, "label": c.category_label, "color": c.category_color},
        "notes": c.notes, "city": c.city, "country": c.country,
        "has_photo": c.photo is not None, "photo_url": f"/api/clients/{c.id}/photo",
        "responsible": c.responsible, "created_at": iso_utc(c.created_at),
        "updated_at": iso_utc(c.updated_at),
        "phones": [{"id": p.id, "raw": p.raw, "e164": p.e164, "label": p.label}
                   for p in c.phones],
        "open_orders": [{"id": o.id, "client_id": o.client_id, "number": o.number,
                         "stage": o.stage, "responsible": o.responsible, "debt": o.debt,
                         "open": o.open, "created_at": iso_utc(o.created_at),
                         "updated_at": iso_utc(o.updated_at)} for o in c.open_orders],
    }  # fmt: skip


def best_ms(fn: Callable[[], bytes], rounds: int) -> float:
    return min(timeit.repeat(fn, number=1, repeat=rounds)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--smoke", action="store_true", help="10 items, 1 round: it still runs")
    args = parser.parse_args()
    n, rounds = (10, 1) if args.smoke else (args.n, args.rounds)

    items = call_items(n)
    page = {"items": items, "next_cursor": None}
    found = clients(n)
    ascii_dumps = json.dumps  # web.json_response's default
    utf8_dumps = functools.partial(json.dumps, ensure_ascii=False)  # the client API's
    cases = {
        f"call log page, {n} items": (
            lambda: ascii_dumps(page).encode(),
            lambda: msgspec.json.encode(page),
        ),
        f"client list, {n} cards": (
            lambda: utf8_dumps({"clients": [old_client_dict(c) for c in found]}).encode(),
            lambda: msgspec.json.encode(cards.ClientList([cards.client(c) for c in found])),
        ),
    }
    print(f"{'answer':<28} {'json ms':>9} {'msgspec ms':>11} {'speed-up':>9}")
    for name, (old, new) in cases.items():
        if json.loads(old()) != json.loads(new()):
            raise SystemExit(f"{name}: the two encodings differ")
        before, after = best_ms(old, rounds), best_ms(new, rounds)
        print(f"{name:<28} {before:>9.2f} {after:>11.2f} {before / after:>8.1f}x")


if __name__ == "__main__":
    main()

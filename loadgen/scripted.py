"""Scripted chargers on the minimal asyncio client: for tests and the demo.

These drive a CSMS message by message with simulated timestamps (no waiting), so a whole
charging session takes milliseconds. The load generator's real stations (gevent, physics,
reconnects) live elsewhere; this is the reference script the stub is checked against.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from loadgen.aio_client import OcppClient
from loadgen.fleet import Charger
from loadgen.protocols import v16, v201


@dataclass
class SessionRecord:
    """What a scripted session sent, to compare with what the CSMS stored."""

    transaction_id: str
    start_wh: float
    stop_wh: float
    start_time: float
    end_time: float
    power_samples: list[tuple[float, float]] = field(default_factory=list)  # (time, W)
    replies: list[dict[str, Any]] = field(default_factory=list)

    @property
    def energy_kwh(self) -> float:
        return (self.stop_wh - self.start_wh) / 1000


async def boot(client: OcppClient, charger: Charger, version: str = "2.0.1") -> dict[str, Any]:
    if version == "1.6":
        request = v16.boot_notification(
            charger.vendor, charger.model, charger.serial_number, charger.firmware
        )
    else:
        request = v201.boot_notification(
            charger.vendor, charger.model, charger.serial_number, charger.firmware
        )
    return await client.call(*request)


async def session_201(
    client: OcppClient,
    transaction_id: str,
    power_w: list[float],
    *,
    token: str = "token_user_001",
    start_wh: float = 0.0,
    start_time: float | None = None,
    interval: float = 5.0,
    evse_id: int = 1,
    stopped_reason: str = "Local",
) -> SessionRecord:
    """Started, one Updated per entry of ``power_w`` (each ``interval`` s), then Ended."""
    now = time.time() if start_time is None else start_time
    record = SessionRecord(transaction_id, start_wh, start_wh, now, now)
    register = start_wh
    seq_no = 0

    def reading(at: float, power: float, context: str | None = None) -> list[dict[str, Any]]:
        return [v201.meter_value(at, v201.sampled_values(register, power, context=context))]

    await client.call(*v201.status_notification(evse_id, 1, "Occupied", now))
    record.replies.append(
        await client.call(
            *v201.transaction_event(
                "Started",
                transaction_id,
                seq_no,
                now,
                "Authorized",
                charging_state="Charging",
                evse_id=evse_id,
                connector_id=1,
                token=v201.id_token(token),
                meter_values=reading(now, 0.0, "Transaction.Begin"),
            )
        )
    )
    for power in power_w:
        seq_no += 1
        now += interval
        register += power * interval / 3600
        record.power_samples.append((now, power))
        record.replies.append(
            await client.call(
                *v201.transaction_event(
                    "Updated",
                    transaction_id,
                    seq_no,
                    now,
                    "MeterValuePeriodic",
                    charging_state="Charging",
                    meter_values=reading(now, power),
                )
            )
        )
    seq_no += 1
    now += 1
    record.replies.append(
        await client.call(
            *v201.transaction_event(
                "Ended",
                transaction_id,
                seq_no,
                now,
                "StopAuthorized",
                charging_state="EVConnected",
                stopped_reason=stopped_reason,
                meter_values=reading(now, 0.0, "Transaction.End"),
            )
        )
    )
    await client.call(*v201.status_notification(evse_id, 1, "Available", now))
    record.stop_wh = register
    record.end_time = now
    return record


async def session_16(
    client: OcppClient,
    power_w: list[float],
    *,
    id_tag: str = "token_user_001",
    start_wh: float = 0.0,
    start_time: float | None = None,
    interval: float = 5.0,
    connector_id: int = 1,
) -> SessionRecord:
    """StartTransaction, MeterValues per entry of ``power_w``, StopTransaction."""
    now = time.time() if start_time is None else start_time
    register = start_wh
    await client.call(*v16.status_notification(connector_id, "Preparing", now))
    reply = await client.call(*v16.start_transaction(connector_id, id_tag, int(register), now))
    transaction_id = reply["transactionId"]
    record = SessionRecord(str(transaction_id), start_wh, start_wh, now, now, replies=[reply])
    await client.call(*v16.status_notification(connector_id, "Charging", now))
    for power in power_w:
        now += interval
        register += power * interval / 3600
        record.power_samples.append((now, power))
        sampled = v16.sampled_values(round(register), power)
        record.replies.append(
            await client.call(
                *v16.meter_values(connector_id, [v16.meter_value(now, sampled)], transaction_id)
            )
        )
    now += 1
    record.replies.append(
        await client.call(
            *v16.stop_transaction(
                transaction_id, round(register), now, reason="Local", id_tag=id_tag
            )
        )
    )
    await client.call(*v16.status_notification(connector_id, "Available", now))
    record.stop_wh = round(register)
    record.start_wh = int(start_wh)
    record.end_time = now
    return record


# -- the demo: the seed fleet against a CSMS --------------------------------------------


async def run_demo(csms: str, api: str | None, fleet_path: str | None = None) -> int:
    """Boot the fleet, run one accelerated session per charger (seed scenario 4), a remote
    start/stop through the CSMS's HTTP API when given (scenario 3), then print a summary."""
    import asyncio

    from loadgen import fleet as fleets

    fleet = fleets.load(fleet_path or fleets.SEED_FLEET)
    start = time.time()

    async def charge(charger: Charger) -> SessionRecord:
        async with await OcppClient.connect(f"{csms.rstrip('/')}/{charger.id}") as client:
            reply = await boot(client, charger)
            print(
                f"{charger.id}: BootNotification {reply['status']}, "
                f"heartbeat every {reply['interval']} s"
            )
            await client.call(*v201.heartbeat())
            # 15 s of charging at the rated power, reported every 5 s (seed scenario 4).
            record = await session_201(
                client,
                f"demo-{charger.id}",
                [charger.rated_power_w] * 3,
                token=f"token_{charger.id}",
                start_time=start,
            )
            print(
                f"{charger.id}: charging stopped: {record.transaction_id} "
                f"(total: {record.energy_kwh:.2f} kWh, cost {record.replies[-1]['totalCost']})"
            )
            return record

    records = await asyncio.gather(*(charge(charger) for charger in fleet.chargers.values()))
    if api:
        await _remote_demo(csms, api, next(iter(fleet.chargers.values())))
        await _print_summary(api, records)
    return 0


async def _remote_demo(csms: str, api: str, charger: Charger) -> None:
    import asyncio

    import httpx

    started: asyncio.Event = asyncio.Event()
    background: set[asyncio.Task[Any]] = set()

    # ``client`` is bound by the ``async with`` below, before the CSMS can call.
    async def run_transaction(request: dict[str, Any]) -> None:
        now = time.time()
        await client.call(
            *v201.transaction_event(
                "Started",
                "demo-remote",
                0,
                now,
                "RemoteStart",
                charging_state="Charging",
                remote_start_id=request["remoteStartId"],
                evse_id=1,
                connector_id=1,
                token=request["idToken"],
                meter_values=[v201.meter_value(now, v201.sampled_values(0, charger.rated_power_w))],
            )
        )
        started.set()

    async def stop_transaction(transaction_id: str) -> None:
        now = time.time()
        await client.call(
            *v201.transaction_event(
                "Ended",
                transaction_id,
                1,
                now + 10,
                "RemoteStop",
                stopped_reason="Remote",
                meter_values=[
                    v201.meter_value(
                        now + 10, v201.sampled_values(charger.rated_power_w * 10 / 3600, 0)
                    )
                ],
            )
        )

    def on_call(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        job = (
            run_transaction(payload)
            if action == "RequestStartTransaction"
            else stop_transaction(payload["transactionId"])
        )
        task = asyncio.ensure_future(job)
        background.add(task)
        task.add_done_callback(background.discard)
        return {"status": "Accepted"}

    async with (
        await OcppClient.connect(f"{csms.rstrip('/')}/{charger.id}", on_call=on_call) as client,
        httpx.AsyncClient(base_url=api, timeout=30) as http,
    ):
        reply = (
            await http.post(
                f"/chargers/{charger.id}/start",
                json={"evse_id": 1, "connector_id": 1, "id_token": "token_user_003"},
            )
        ).json()
        print(f"{charger.id}: POST /start -> {reply}")
        await asyncio.wait_for(started.wait(), 10)
        reply = (
            await http.post(
                f"/chargers/{charger.id}/stop", json={"transaction_id": reply["transaction_id"]}
            )
        ).json()
        print(f"{charger.id}: POST /stop -> {reply}")
        await asyncio.gather(*background)


async def _print_summary(api: str, records: list[SessionRecord]) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        rows = (await http.get("/transactions", params={"state": "closed"})).json()
        stats = (await http.get("/stats")).json()
    print()
    print(f"{'charger':<20} {'transaction':<26} {'kWh':>8} {'cost (KRW)':>11}  reason")
    for row in rows:
        print(
            f"{row['charger_id']:<20} {row['transaction_id']:<26} "
            f"{row['energy_consumed']:>8.2f} {row['cost']:>11.2f}  {row['stop_reason']}"
        )
    print()
    print(
        f"CSMS totals: {stats['transactions_closed']} transactions, "
        f"{stats['energy_kwh']:.2f} kWh, {stats['cost']:.2f} KRW, "
        f"peak power {stats['peak_power_w'] / 1000:.0f} kW"
    )
    sent = {record.transaction_id: record.energy_kwh for record in records}
    stored = {row["transaction_id"]: row["energy_consumed"] for row in rows}
    missing = [tid for tid in sent if tid not in stored]
    wrong = [tid for tid in sent if tid in stored and abs(stored[tid] - sent[tid]) > 1e-3]
    print(
        f"check: {len(sent) - len(missing)}/{len(sent)} scripted sessions stored, "
        f"{len(wrong)} energy mismatches"
    )
    if missing or wrong:
        raise SystemExit(1)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import asyncio

    parser = argparse.ArgumentParser(
        prog="python -m loadgen.scripted",
        description="Run the seed fleet's scripted chargers against a CSMS once.",
    )
    parser.add_argument("--csms", default="ws://127.0.0.1:9000", help="OCPP WebSocket base URL")
    parser.add_argument("--api", default=None, help="the CSMS's HTTP API (csms_stub's)")
    parser.add_argument("--fleet", default=None, help="fleet TOML (default: the seed fleet)")
    args = parser.parse_args(argv)
    return asyncio.run(run_demo(args.csms, args.api, args.fleet))


if __name__ == "__main__":
    raise SystemExit(main())

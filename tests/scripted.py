"""Scripted chargers on the minimal asyncio client, for the tests.

These drive a CSMS message by message with simulated timestamps (no waiting), so a whole
charging session takes milliseconds. The load generator's real stations (gevent, physics,
reconnects) live in loadgen/; this is the reference script the stub is checked against.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from loadgen.fleet import Charger
from loadgen.protocols import v16, v201
from tests.aio_client import OcppClient


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

"""NVLink and PCIe counters from NVML field values (``nvmlDeviceGetFieldValues``), inside the NVML worker.

One call per GPU and collection reads every counter. Which fields a GPU answers depends on its generation: Hopper
and newer report NVLink state and errors with the link as the field's scope (``NVML_FI_DEV_NVLINK_GET_STATE``,
``..._ERROR_DL_*``), older GPUs in fields with the link in their name (``..._CRC_FLIT_ERROR_COUNT_L<n>``, links 0-11)
and link state through ``nvmlDeviceGetNvLinkState``. The first collection of a worker asks for both and keeps, per
counter, the first field the GPU answers; the rest are never asked again.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Iterable
from typing import Any, NamedTuple

import pynvml

from pai_monitoring.gpu.calls import CallCounter
from pai_monitoring.gpu.model import NvLinkReading
from pai_monitoring.gpu.profiling import NVLINK_ERROR_TYPES
from pai_monitoring.gpu.worker_log import log

Key = tuple[str, ...]
"""What a field measures: ("up", link), ("error", link, type), ("tx"|"rx", link), ("pcie", type), ("pcie_tx",)
or ("pcie_rx",)."""

PCIE_FIELDS: tuple[tuple[int, str], ...] = (
    (pynvml.NVML_FI_DEV_PCIE_COUNT_CORRECTABLE_ERRORS, "correctable"),
    (pynvml.NVML_FI_DEV_PCIE_COUNT_RECEIVER_ERROR, "receiver"),
    (pynvml.NVML_FI_DEV_PCIE_COUNT_BAD_TLP, "bad_tlp"),
    (pynvml.NVML_FI_DEV_PCIE_COUNT_BAD_DLLP, "bad_dllp"),
    (pynvml.NVML_FI_DEV_PCIE_COUNT_LCRC_ERROR, "lcrc"),
    (pynvml.NVML_FI_DEV_PCIE_COUNT_NAKS_RECEIVED, "nak_received"),
    (pynvml.NVML_FI_DEV_PCIE_COUNT_NAKS_SENT, "nak_sent"),
    (pynvml.NVML_FI_DEV_PCIE_REPLAY_ROLLOVER_COUNTER, "replay_rollover"),
    (pynvml.NVML_FI_DEV_PCIE_L0_TO_RECOVERY_COUNTER, "l0_to_recovery"),
    (pynvml.NVML_FI_DEV_PCIE_COUNT_NON_FATAL_ERROR, "non_fatal"),
    (pynvml.NVML_FI_DEV_PCIE_COUNT_FATAL_ERROR, "fatal"),
    (pynvml.NVML_FI_DEV_PCIE_COUNT_UNSUPPORTED_REQ, "unsupported_request"),
)
PCIE_BYTES_FIELDS: tuple[tuple[int, str], ...] = (
    (pynvml.NVML_FI_DEV_PCIE_COUNT_TX_BYTES, "pcie_tx"),
    (pynvml.NVML_FI_DEV_PCIE_COUNT_RX_BYTES, "pcie_rx"),
)
# Hopper and newer: one field per counter, the link as its scope.
SCOPED_LINK_FIELDS: tuple[tuple[int, Key], ...] = (
    (pynvml.NVML_FI_DEV_NVLINK_GET_STATE, ("up",)),
    (pynvml.NVML_FI_DEV_NVLINK_ERROR_DL_CRC, ("error", "crc")),
    (pynvml.NVML_FI_DEV_NVLINK_ERROR_DL_REPLAY, ("error", "replay")),
    (pynvml.NVML_FI_DEV_NVLINK_ERROR_DL_RECOVERY, ("error", "recovery")),
    (pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, ("tx",)),
    (pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, ("rx",)),
)
# Before Hopper: one field per counter and link, links 0-11.
LEGACY_LINKS = 12
LEGACY_LINK_FIELDS: tuple[tuple[str, str], ...] = (
    ("NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_L", "crc"),
    ("NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_L", "crc_data"),
    ("NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_L", "replay"),
    ("NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_L", "recovery"),
)
UP_STATES = frozenset({pynvml.NVML_NVLINK_STATE_ACTIVE, pynvml.NVML_NVLINK_STATE_SLEEP})
"""Link states counted as up: active, and asleep in the low-power state (it wakes on traffic)."""
MAX_LINKS: int = pynvml.NVML_NVLINK_MAX_LINKS

# A field the GPU answers with one of these will never be answered: not asked again.
_NEVER = frozenset(
    {pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_INVALID_ARGUMENT, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND}
)
# nvmlFieldValue_t as pynvml lays it out (fieldId, scopeId, timestamp, latencyUsec, valueType, nvmlReturn, value), read
# from the answer's bytes at once: pynvml's structures decode every attribute access in Python, which would cost more
# than the call itself for the hundred-odd fields of a GPU with 18 NVLinks.
_FIELD_VALUE = struct.Struct("=IIqqIi8s")
assert _FIELD_VALUE.size == ctypes.sizeof(pynvml.c_nvmlFieldValue_t)
assert pynvml.c_nvmlFieldValue_t.value.offset == _FIELD_VALUE.size - 8
_VALUE_FORMAT = {
    pynvml.NVML_VALUE_TYPE_DOUBLE: struct.Struct("=d"),
    pynvml.NVML_VALUE_TYPE_UNSIGNED_INT: struct.Struct("=I"),
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG: struct.Struct("=L" if ctypes.sizeof(ctypes.c_ulong) == 4 else "=Q"),
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: struct.Struct("=Q"),
    pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG: struct.Struct("=q"),
    pynvml.NVML_VALUE_TYPE_SIGNED_INT: struct.Struct("=i"),
    pynvml.NVML_VALUE_TYPE_UNSIGNED_SHORT: struct.Struct("=H"),
}


class Field(NamedTuple):
    field: int
    scope: int
    key: Key


class Plan(NamedTuple):
    """The fields to ask a GPU for, chosen once per worker."""

    uuid: str | None
    links: int
    fields: tuple[Field, ...]
    state_by_call: bool
    """Link state comes from ``nvmlDeviceGetNvLinkState`` (GPUs before Hopper)."""


class FieldReading(NamedTuple):
    nvlinks: tuple[NvLinkReading, ...] = ()
    nvlink_errors: tuple[tuple[str, int], ...] = ()
    nvlink_tx_kib: int | None = None
    nvlink_rx_kib: int | None = None
    pcie_errors: tuple[tuple[str, int], ...] = ()
    pcie_tx_bytes: int | None = None
    pcie_rx_bytes: int | None = None


def field_value(value_type: int, raw: bytes) -> int | None:
    """A field's value from its type and the 8 bytes of its ``nvmlValue_t`` union."""
    layout = _VALUE_FORMAT.get(value_type)
    return int(layout.unpack_from(raw)[0]) if layout is not None else None


def answers_of(values: Any) -> list[tuple[int, int | None]]:
    """(NVML return code, value or ``None``) of each entry of an array of ``nvmlFieldValue_t``."""
    return [
        (code, field_value(value_type, raw) if code == pynvml.NVML_SUCCESS else None)
        for _, _, _, _, value_type, code, raw in _FIELD_VALUE.iter_unpack(bytes(values))
    ]


def candidates(links: int) -> list[Field]:
    """Every field that may answer for a GPU with ``links`` NVLinks, in order of preference per counter."""
    found = [Field(field, 0, ("pcie", kind)) for field, kind in PCIE_FIELDS]
    found += [Field(field, 0, (key,)) for field, key in PCIE_BYTES_FIELDS]
    for link in range(links):
        found += [Field(field, link, (key[0], str(link), *key[1:])) for field, key in SCOPED_LINK_FIELDS]
        if link < LEGACY_LINKS:
            found += [
                Field(int(getattr(pynvml, f"{prefix}{link}")), 0, ("error", str(link), kind))
                for prefix, kind in LEGACY_LINK_FIELDS
            ]
    return found


class FieldReader:
    """Reads NVLink and PCIe counters, remembering per GPU which fields it answers."""

    def __init__(self) -> None:
        self._plans: dict[int, Plan] = {}
        self._has_field_values = True

    def _ask(self, call: CallCounter, handle: Any, fields: Iterable[Field]) -> list[tuple[Field, int, int | None]]:
        """(field, NVML return code, value) for each field, from one call."""
        asked = list(fields)
        if not asked:
            return []
        answers = call(pynvml.nvmlDeviceGetFieldValues, handle, [(f.field, f.scope) for f in asked])
        return [(f, code, value) for f, (code, value) in zip(asked, answers_of(answers), strict=True)]

    def _probe(self, call: CallCounter, handle: Any, uuid: str | None) -> tuple[Plan, dict[Key, int]]:
        count = self._ask(call, handle, [Field(pynvml.NVML_FI_DEV_NVLINK_LINK_COUNT, 0, ("links",))])
        links = min(count[0][2] or 0, MAX_LINKS) if count else 0
        kept: list[Field] = []
        values: dict[Key, int] = {}
        taken: set[Key] = set()
        for field, code, value in self._ask(call, handle, candidates(links)):
            if code in _NEVER or field.key in taken:
                continue
            taken.add(field.key)
            kept.append(field)
            if value is not None:
                values[field.key] = value
        by_call = links > 0 and not any(key[0] == "up" for key in taken)
        return Plan(uuid, links, tuple(kept), by_call), values

    def read(self, call: CallCounter, index: int, uuid: str | None, handle: Any) -> FieldReading:
        if not self._has_field_values:
            return FieldReading()
        try:
            plan = self._plans.get(index)
            if plan is None or plan.uuid != uuid:
                plan, values = self._probe(call, handle, uuid)
                self._plans[index] = plan
            else:
                values = {f.key: v for f, code, v in self._ask(call, handle, plan.fields) if v is not None}
        except pynvml.NVMLError_FunctionNotFound:
            log.info("this NVML library has no field values: no NVLink or PCIe counters")
            self._has_field_values = False
            return FieldReading()
        except pynvml.NVMLError_GpuIsLost:
            raise
        except pynvml.NVMLError as exc:
            log.debug("nvmlDeviceGetFieldValues: %s", exc)
            return FieldReading()
        if plan.state_by_call:
            values.update(self._states_by_call(call, handle, plan.links))
        return FieldReading(
            nvlinks=_links(plan.links, values),
            nvlink_errors=tuple(
                (kind, total)
                for kind in NVLINK_ERROR_TYPES
                if (total := _sum(values, ("error",), kind, plan.links)) is not None
            ),
            nvlink_tx_kib=_sum(values, ("tx",), None, plan.links),
            nvlink_rx_kib=_sum(values, ("rx",), None, plan.links),
            pcie_errors=tuple((kind, values[("pcie", kind)]) for _, kind in PCIE_FIELDS if ("pcie", kind) in values),
            pcie_tx_bytes=values.get(("pcie_tx",)),
            pcie_rx_bytes=values.get(("pcie_rx",)),
        )

    @staticmethod
    def _states_by_call(call: CallCounter, handle: Any, links: int) -> dict[Key, int]:
        states: dict[Key, int] = {}
        for link in range(links):
            active = call.optional(pynvml.nvmlDeviceGetNvLinkState, handle, link)
            if active is not None:
                # the older call answers enabled (1) or not; counted in the newer call's terms
                states[("up", str(link))] = pynvml.NVML_NVLINK_STATE_ACTIVE if active else 0
        return states


def _links(count: int, values: dict[Key, int]) -> tuple[NvLinkReading, ...]:
    states = ((link, values.get(("up", str(link)))) for link in range(count))
    return tuple(NvLinkReading(link, state in UP_STATES) for link, state in states if state is not None)


def _sum(values: dict[Key, int], kind: Key, detail: str | None, links: int) -> int | None:
    """A counter summed over all links, or ``None`` when no link reports it."""
    keys = ((*kind, str(link), *((detail,) if detail else ())) for link in range(links))
    counts = [values[key] for key in keys if key in values]
    return sum(counts) if counts else None

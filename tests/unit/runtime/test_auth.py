"""Basic auth: equal work for known and unknown users, bcrypt errors as denials, a bounded queue, a closing gate."""

from __future__ import annotations

import asyncio
import base64
import threading

import bcrypt
import pytest

from pai_monitoring.runtime import auth
from pai_monitoring.runtime.auth import FAILURE_PENALTY, MAX_WAITING, AuthGate, Verdict

HASH = bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=4))


def header(user: str, password: str | bytes) -> str:
    raw = password if isinstance(password, bytes) else password.encode()
    return "Basic " + base64.b64encode(user.encode() + b":" + raw).decode()


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The hashes bcrypt was asked to check, in order (the real bcrypt still runs)."""
    seen: list[bytes] = []
    real = auth._verify

    def spy(password: bytes, hashed: bytes) -> tuple[bool, float]:
        seen.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(auth, "_verify", spy)
    return seen


def check(gate: AuthGate, value: str | None) -> Verdict:
    async def run() -> Verdict:
        return await gate.check(value)

    return asyncio.run(run())


def test_a_good_password_is_checked_once_then_remembered(checks: list[bytes]) -> None:
    gate = AuthGate({"prometheus": HASH})
    assert check(gate, header("prometheus", "right")) is Verdict.OK
    assert check(gate, header("prometheus", "right")) is Verdict.OK
    assert checks == [HASH]


def test_an_unknown_user_costs_a_full_check_against_a_hash_of_the_same_cost(checks: list[bytes]) -> None:
    cheap = bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=4))
    dear = bcrypt.hashpw(b"y", bcrypt.gensalt(rounds=5))
    gate = AuthGate({"a": cheap, "b": dear})
    assert check(gate, header("nobody", "right")) is Verdict.DENIED
    assert checks == [dear]  # the costliest configured hash: never cheaper than a known user's check


@pytest.mark.parametrize(
    "value",
    [None, "Bearer x", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(),
     "Basic " + base64.b64encode(b"\xff:pw").decode(), header("prometheus", "x" * 73)],
)  # fmt: skip
def test_malformed_credentials_and_long_passwords_are_denied_without_bcrypt(
    checks: list[bytes], value: str | None
) -> None:
    assert check(AuthGate({"prometheus": HASH}), value) is Verdict.DENIED
    assert checks == []


def test_a_bcrypt_error_is_a_denial(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(password: bytes, hashed: bytes) -> bool:
        raise ValueError("invalid salt")

    monkeypatch.setattr(bcrypt, "checkpw", broken)
    assert check(AuthGate({"prometheus": HASH}), header("prometheus", "right")) is Verdict.DENIED


def test_a_failure_closes_the_gate_for_a_multiple_of_its_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "_verify", lambda password, hashed: (False, 10.0))  # as if bcrypt took 10 s
    gate = AuthGate({"prometheus": HASH})

    async def run() -> float:
        await gate.check(header("prometheus", "wrong"))
        return gate._closed_until - asyncio.get_running_loop().time()

    closed_for = asyncio.run(run())
    assert FAILURE_PENALTY * 10.0 - 5.0 < closed_for <= FAILURE_PENALTY * 10.0


def test_checks_beyond_the_queue_are_throttled_without_bcrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def slow(password: bytes, hashed: bytes) -> tuple[bool, float]:
        release.wait(10)
        return False, 0.0

    monkeypatch.setattr(auth, "_verify", slow)
    gate = AuthGate({"prometheus": HASH})

    async def run() -> list[Verdict]:
        waiting = [asyncio.create_task(gate.check(header("prometheus", f"w{i}"))) for i in range(MAX_WAITING)]
        await asyncio.sleep(0)  # let them queue
        extra = await gate.check(header("prometheus", "one too many"))
        release.set()
        return [extra, *await asyncio.gather(*waiting)]

    verdicts = asyncio.run(run())
    assert verdicts[0] is Verdict.THROTTLED
    assert verdicts[1:] == [Verdict.DENIED] * MAX_WAITING

"""The shipped rules and the Alertmanager template, checked with the real promtool, amtool and Alertmanager.

These binaries come from the Debian packages ``prometheus`` and ``prometheus-alertmanager``. Without them the
tests fail and say what to install; they are never skipped.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from tests.support.modules import load_file

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules"
RULE_FILES = sorted((RULES / "alerts").glob("*.yml")) + sorted((RULES / "recording").glob("*.yml"))
SUITES = sorted((RULES / "tests").glob("*.test.yml"))
TEMPLATE_DIR = REPO / "roles" / "alertmanager" / "templates"
DEFAULTS = RULES / "alertmanager.defaults.yml"
CASES = yaml.safe_load((RULES / "tests" / "alertmanager.cases.yml").read_text(encoding="utf-8"))
VARIANTS = {variant["name"]: variant for variant in CASES["variants"]}

TOOL_TIMEOUT_S = 120.0  # one promtool or amtool run; the whole suite takes a few seconds
HTTP_TIMEOUT_S = 5.0
STARTUP_DEADLINE_S = 30.0
INHIBITION_DEADLINE_S = 30.0


def _binary(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/sbin:/usr/local/bin")
    if path is None:
        pytest.fail(f"{name} not found: install the Debian package {package} (apt-get install {package})")
    return path


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False)


def test_a_missing_tool_fails_and_names_its_package() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"install the Debian package pai-no-such-package"):
        _binary("pai-no-such-tool", "pai-no-such-package")


# ---------------------------------------------------------------- Prometheus rules


@pytest.fixture(scope="module")
def promtool() -> str:
    return _binary("promtool", "prometheus")


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_promtool_check_rules(promtool: str, path: Path) -> None:
    result = _run([promtool, "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.name)
def test_promtool_test_rules(promtool: str, path: Path) -> None:
    result = _run([promtool, "test", "rules", path.name], cwd=path.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_doc_is_up_to_date() -> None:
    result = _run([sys.executable, str(REPO / "tools" / "gen_alerts_doc.py"), "--check"])
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- Alertmanager configuration


def render_alertmanager_config(overrides: Mapping[str, Any]) -> str:
    """Render the template as Ansible's template module does (trim_blocks), failing on undefined variables."""
    variables = yaml.safe_load(DEFAULTS.read_text(encoding="utf-8"))
    variables.update(overrides)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        trim_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # YAML, not HTML
    )
    return env.get_template("alertmanager.yml.j2").render(**variables)


@pytest.fixture(scope="module")
def amtool() -> str:
    return _binary("amtool", "prometheus-alertmanager")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("alertmanager-configs")
    paths = {}
    for name, variant in VARIANTS.items():
        path = out / f"{name}.yml"
        path.write_text(render_alertmanager_config(variant.get("vars") or {}), encoding="utf-8")
        paths[name] = path
    return paths


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_amtool_check_config(amtool: str, rendered: dict[str, Path], variant: str) -> None:
    result = _run([amtool, "check-config", str(rendered[variant])])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_receivers(rendered: dict[str, Path], variant: str) -> None:
    """Each receiver gets exactly the webhooks and e-mail its variant sets; unset login fields are left out."""
    config = yaml.safe_load(rendered[variant].read_text(encoding="utf-8"))
    receivers = {r["name"]: r for r in config["receivers"]}
    merged = {**yaml.safe_load(DEFAULTS.read_text(encoding="utf-8")), **(VARIANTS[variant].get("vars") or {})}
    for name, expected in VARIANTS[variant]["receivers"].items():
        receiver = receivers[name]
        assert [hook["url"] for hook in receiver.get("webhook_configs", [])] == expected["webhooks"], name
        mails = receiver.get("email_configs", [])
        assert len(mails) == (1 if expected["email"] else 0), name
        for mail in mails:
            assert mail["to"] == ", ".join(merged["alertmanager_email_to"])
            assert mail["smarthost"] == merged["alertmanager_email_smarthost"]
            assert mail["require_tls"] is merged["alertmanager_email_require_tls"]
            assert ("auth_username" in mail) == bool(merged["alertmanager_email_auth_username"])
            assert mail.get("auth_password", "") == merged["alertmanager_email_auth_password"]


def _route_cases() -> Iterator[Any]:
    for name, variant in VARIANTS.items():
        for index, case in enumerate(variant.get("routes") or []):
            yield pytest.param(
                name, case["labels"], case["receivers"], id=f"{name}-{index}-{case['labels']['alertname']}"
            )


@pytest.mark.parametrize(("variant", "labels", "receivers"), list(_route_cases()))
def test_amtool_routes(
    amtool: str, rendered: dict[str, Path], variant: str, labels: dict[str, str], receivers: list[str]
) -> None:
    argv = [amtool, "config", "routes", "test", f"--config.file={rendered[variant]}"]
    result = _run(argv + [f"{key}={value}" for key, value in labels.items()])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().split(",") == receivers


def test_one_webhook_url_gives_a_minimal_config() -> None:
    """A site that sets only the one webhook URL gets a file without e-mail or cordon sections."""
    text = render_alertmanager_config({"alertmanager_webhook_url": "http://127.0.0.1:18080/alerts"})
    config = yaml.safe_load(text)
    assert "email_configs" not in text
    assert "pai-cordon-nodes" not in text
    assert config["route"]["group_wait"] == "30s"
    assert config["route"]["group_interval"] == "5m"
    assert config["route"]["repeat_interval"] == "4h"


def test_severity_without_its_own_repeat_interval_uses_the_default() -> None:
    text = render_alertmanager_config(
        {"alertmanager_severity_repeat_intervals": {"fatal": "30m"}, "alertmanager_repeat_interval": "6h"}
    )
    routes = yaml.safe_load(text)["route"]["routes"]
    intervals = {
        route["receiver"]: route["repeat_interval"] for route in routes if route["receiver"] != "pai-heartbeat"
    }
    assert intervals == {"pai-fatal": "30m", "pai-error": "6h", "pai-warn": "6h", "pai-info": "6h"}


# ---------------------------------------------------------------- inhibitions, on a running Alertmanager


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _http(url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
        payload = response.read()
    return json.loads(payload) if payload.strip() else None


@pytest.fixture(scope="module")
def alertmanager(rendered: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Alertmanager on 127.0.0.1 running the "everything" variant, clustering off."""
    binary = _binary("prometheus-alertmanager", "prometheus-alertmanager")
    storage = tmp_path_factory.mktemp("rules-alertmanager-data")
    log_path = storage / "alertmanager.log"
    url = f"http://127.0.0.1:{_free_port()}"
    argv = [
        binary,
        f"--config.file={rendered['everything']}",
        f"--storage.path={storage}",
        f"--web.listen-address={url.removeprefix('http://')}",
        "--cluster.listen-address=",
        "--log.level=warn",
    ]
    with log_path.open("w") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        while True:
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=HTTP_TIMEOUT_S).close()
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"Alertmanager did not start:\n{log_path.read_text()}")
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def test_inhibitions(alertmanager: str) -> None:
    """Post every alert of every case at once; the expected ones become inhibited, the others stay active."""
    inhibited = {_key(a) for case in CASES["inhibitions"] for a in case["inhibited"]}
    free = {_key(a) for case in CASES["inhibitions"] for a in [case["source"], *case["not_inhibited"]]}
    assert not inhibited & free, "a case lists the same alert as inhibited and as not inhibited"
    now = datetime.now(UTC)
    alerts = [
        {
            "labels": dict(key),
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(hours=1)).isoformat(),
        }
        for key in sorted(inhibited | free)
    ]
    _http(f"{alertmanager}/api/v2/alerts", alerts)

    def state() -> dict[tuple[tuple[str, str], ...], list[str]]:
        listed = _http(f"{alertmanager}/api/v2/alerts?active=true&inhibited=true&silenced=true&unprocessed=true")
        return {_key(a["labels"]): a["status"]["inhibitedBy"] for a in listed}

    deadline = time.monotonic() + INHIBITION_DEADLINE_S
    current = state()
    while not all(current.get(key) for key in inhibited) and time.monotonic() < deadline:
        time.sleep(0.2)
        current = state()
    assert sorted(dict(key)["alertname"] for key in inhibited if not current.get(key)) == []
    assert sorted(f"{dict(key)}" for key in free if current.get(key, ["missing"])) == []


def test_alerts_about_the_delivery_path_wait_out_their_stale_state() -> None:
    """AlertmanagerNotUp reaches the only Alertmanager when it is back, already stale: the route's group_wait must
    outlast the time Prometheus needs to resolve it, so that nothing is sent (docs/alerts.md)."""
    routes = yaml.safe_load(render_alertmanager_config({}))["route"]["routes"]
    own = next(r for r in routes if any("AlertmanagerNotUp" in m for m in r.get("matchers", [])))
    assert any("PrometheusNotConnectedToAlertmanagers" in m for m in own["matchers"])
    assert own["group_wait"] == "10m"
    severity = next(r for r in routes if r.get("matchers") == ['severity="error"'])
    assert routes.index(own) < routes.index(severity), "must come before the severity routes"


def test_alerts_doc_shows_a_template_condition_as_its_branches() -> None:
    gen_alerts_doc = load_file(REPO / "tools" / "gen_alerts_doc.py", "gen_alerts_doc")
    text = (
        'ended{{ if eq $labels.runtime "slurm" }} for Slurm{{ else }}: use `{{ if eq $labels.runtime "docker" }}docker'
        "{{ else if $labels.pod }}crictl{{ else }}ctr{{ end }} rm {{ $labels.id }}`{{ end }}."
    )
    assert gen_alerts_doc.plain(text) == (
        "ended [runtime = slurm: for Slurm; otherwise: : use `[runtime = docker: docker; pod set: crictl; otherwise: "
        "ctr] rm <id>`]."
    )

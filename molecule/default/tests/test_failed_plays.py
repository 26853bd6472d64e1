"""A deployment that fails in preflight leaves the running services and their files as they were.

One play over both guests: on the node the job exporter is given a port another program holds, on the control
guest the watchdog a kubeconfig that does not exist. Each role must stop before it changes anything. (The messages
of these and the other preflight checks are tested without a guest, in tests/unit/test_role_preflight.py; a rule
file promtool rejects and a route amtool rejects: test_prometheus.py, test_alertmanager.py.)
"""

from typing import Any

import pai_testinfra as pt

testinfra_hosts = [pt.ssh("pai-default-node")]

EXPORTER = "pai-job-exporter.service"
EXPORTER_UNIT_FILE = "/etc/systemd/system/pai-job-exporter.service"
WATCHDOG = "pai-watchdog.service"
KUBECONFIG = "/etc/pai-monitoring/watchdog-credentials/kubeconfig"
SQUATTER_PORT = 9555


def test_failed_preflight_leaves_the_running_services_alone(host: Any) -> None:
    ctl = pt.guest("pai-default-ctl")
    exporter_pid, watchdog_pid = pt.main_pid(host, EXPORTER), pt.main_pid(ctl, WATCHDOG)
    unit_file = host.file(EXPORTER_UNIT_FILE).content_string
    kubeconfig = ctl.file(KUBECONFIG).content_string
    # A stand-in for "some other daemon": a web server on the port the operator asks for.
    started = host.run(f"systemd-run --unit=port-squatter python3 -m http.server --bind 127.0.0.1 {SQUATTER_PORT}")
    assert started.rc == 0, started.stderr
    try:
        listening = f"until ss -Htln sport = :{SQUATTER_PORT} | grep -q .; do sleep 0.1; done"
        assert host.run(f"timeout 30 sh -c '{listening}'").rc == 0, "the port squatter does not listen"
        run = pt.run_playbook(
            [("cpu_nodes", "job_exporter"), ("control", "watchdog")],
            {
                "job_exporter_web_listen_address": f"127.0.0.1:{SQUATTER_PORT}",
                "watchdog_kubeconfig_src": "/nonexistent/kubeconfig",
            },
        )
    finally:
        host.run("systemctl stop port-squatter.service")
    assert run.returncode != 0
    assert f"Port {SQUATTER_PORT} is already in use" in run.output, run.output[-3000:]
    assert "Not found on the controller: /nonexistent/kubeconfig" in run.output, run.output[-3000:]
    assert pt.main_pid(host, EXPORTER) == exporter_pid
    assert host.file(EXPORTER_UNIT_FILE).content_string == unit_file
    pt.assert_running(host, EXPORTER)
    assert pt.main_pid(ctl, WATCHDOG) == watchdog_pid
    assert ctl.file(KUBECONFIG).content_string == kubeconfig
    pt.assert_running(ctl, WATCHDOG)

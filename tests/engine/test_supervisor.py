"""Real instance processes under the supervisor: restart, status, no orphans."""
import asyncio
import os
import signal
import subprocess
import sys
import textwrap

from rustymt.engine.control import ControlError
from rustymt.engine.supervisor import InstanceSupervisor
from tests.conftest import wait_for


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().split(") ")[1][0] != "Z"


async def _until(predicate, timeout=15.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("deadline passed")
        await asyncio.sleep(0.02)


def test_crash_restarts_reapplies_state_and_records_events(tmp_path):
    events = []
    applied = []

    async def reapply(supervisor):
        applied.append(supervisor.process.pid)
        await supervisor.client.request("attach_tenant", {"tenant_id": "tenant_1", "slot": 1, "port": 0})

    async def scenario():
        supervisor = InstanceSupervisor("shared", str(tmp_path), on_event=lambda kind, data: events.append(kind), on_started=reapply)
        await supervisor.start()
        try:
            first = supervisor.status()
            assert first["health"] == "healthy" and first["pid"] and first["restarts"] == 0
            os.kill(first["pid"], signal.SIGKILL)
            await _until(lambda: supervisor.health != "healthy")
            # meanwhile requests are refused cleanly, not hung
            try:
                await supervisor.request("health")
                refused = None
            except ControlError as exc:
                refused = exc.code
            await supervisor.wait_ready(timeout=15)
            second = supervisor.status()
            health = await supervisor.request("health")
        finally:
            await supervisor.stop()
        return first, second, health, refused

    first, second, health, refused = asyncio.run(scenario())
    assert refused == "UNAVAILABLE"
    assert second["pid"] != first["pid"] and second["restarts"] == 1 and second["last_exit_code"] == -signal.SIGKILL
    assert health["tenants"] == 1  # state re-applied to the new process
    assert applied == [first["pid"], second["pid"]]
    assert events.count("instance.crashed") == 1 and "instance.restarted" in events
    assert not pid_alive(second["pid"])  # stop() ended it


def test_instance_exits_when_its_daemon_is_killed(tmp_path):
    # A stand-in daemon: starts the shared instance, prints its pid, then waits.
    script = textwrap.dedent(f"""
        import asyncio, sys
        from rustymt.engine.supervisor import InstanceSupervisor
        async def main():
            s = InstanceSupervisor("shared", {str(tmp_path)!r})
            await s.start()
            print(s.process.pid, flush=True)
            await asyncio.Event().wait()
        asyncio.run(main())
    """)
    daemon = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        instance_pid = int(daemon.stdout.readline())
        assert pid_alive(instance_pid)
        daemon.kill()
        daemon.wait()
        wait_for(lambda: not pid_alive(instance_pid), timeout=10, what="instance to exit after its daemon died")
    finally:
        if daemon.poll() is None:
            daemon.kill()

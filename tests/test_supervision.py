"""The supervisor's parts without a server: sidecars restart with backoff and a limit and leak no
file handle, every stub a repository should run is watched, children die with their parent
(PR_SET_PDEATHSIG), stale shared memory of a killed server is removed, and admission holds rows."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from runtime.core.errors import Overloaded
from runtime.deploy.processes import die_with_parent, expected_stubs, process_alive, remove_stale_shm
from runtime.deploy.supervisor import RestartPolicy, Sidecar, _missing_stub
from runtime.in_server.admission import Admission


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_sidecar_restarts_with_backoff_then_gives_up_without_leaking_handles(tmp_path):
    car = Sidecar("crasher", (sys.executable, "-c", "import sys; sys.exit(3)"), tmp_path / "car.log",
                  policy=RestartPolicy(max_restarts=3, window_s=60, backoff_s=0.05, max_backoff_s=1.0))
    before = _open_fds()
    starts: list[float] = []
    failure = None
    deadline = time.monotonic() + 30
    while failure is None and time.monotonic() < deadline:
        seen = car.starts
        failure = car.ensure()
        if car.starts > seen:
            starts.append(time.monotonic())
        if car.proc is not None:
            car.proc.wait()
        time.sleep(0.01)
    assert failure is not None and "exited with code 3 after 3 restarts" in failure
    assert car.starts == 4  # the first start and 3 restarts
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2, gaps  # doubling backoff
    assert _open_fds() == before  # the log file is not kept open per start (it was, before)


def test_a_sidecar_that_runs_is_left_alone_and_stopped_last(tmp_path):
    car = Sidecar("sleeper", (sys.executable, "-c", "import time; time.sleep(60)"), tmp_path / "s.log")
    assert car.ensure() is None and car.ensure() is None
    assert car.starts == 1
    proc = car.proc
    car.stop()
    assert proc is not None and proc.poll() is not None


def test_expected_stubs_are_the_python_models_instances(tmp_path):
    for name, backend, count in (("rsd", "python", 1), ("draft", "python", 2), ("engine", "tensorrtllm", 1)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.pbtxt").write_text(
            f'name: "{name}"\nbackend: "{backend}"\ninstance_group [ {{ count: {count} kind: KIND_CPU }} ]\n')
    assert expected_stubs(tmp_path) == {"rsd": 1, "draft": 2}


def test_every_expected_stub_is_watched():
    expected = {"rsd": 1, "draft": 1}
    me, parent = os.getpid(), os.getppid()  # two live pids stand in for two stubs
    assert _missing_stub(expected, {me: "rsd", parent: "draft"}, {me: "rsd", parent: "draft"}) is None
    # a stub that died before the first look: its model runs fewer stubs than it should
    assert _missing_stub(expected, {me: "rsd"}, {me: "rsd"}) == "model 'draft' runs 0 of its 1 stub(s)"
    # a stub seen at the start that is gone now
    assert "died" in _missing_stub(expected, {me: "rsd", 999999999: "draft"}, {me: "rsd"})


def test_a_child_dies_with_its_parent_even_on_kill_9(tmp_path):
    """The parent (a stand-in for `rsd serve`) starts a child with die_with_parent, then is killed
    with SIGKILL: the kernel kills the child too."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "from runtime.deploy.processes import die_with_parent\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], preexec_fn=die_with_parent())\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    child = int(parent.stdout.readline())
    assert process_alive(child)
    parent.kill()
    parent.wait()
    wait_gone(child, 10, "the child outlived its parent")


def wait_gone(pid: int, seconds: float, failure: str) -> None:
    """Fails with `failure` unless process `pid` is gone within `seconds`."""
    deadline = time.monotonic() + seconds
    while process_alive(pid):
        assert time.monotonic() < deadline, failure
        time.sleep(0.05)


def test_a_stub_stuck_holding_the_gil_still_dies_with_tritonserver(tmp_path):
    """The stand-in stub calls exit_with_parent, then its main thread blocks in C while holding the
    GIL (libc pause() through ctypes.PyDLL, which keeps the GIL), as a real rsd stub did in
    Stub::ProcessRequests when tritonserver died under it: no Python thread of it runs again, yet it
    is gone once its parent (the stand-in tritonserver) is killed with SIGKILL."""
    ready = tmp_path / "ready"
    stub = ("import ctypes, os, sys\n"
            "from runtime.in_server.host import exit_with_parent\n"
            "exit_with_parent(0.05)\n"
            f"open({str(ready)!r}, 'w').write('ready')\n"
            "ctypes.PyDLL(None).pause()\n")
    script = tmp_path / "server.py"
    script.write_text("import subprocess, sys, time\n"
                      f"child = subprocess.Popen([sys.executable, '-c', {stub!r}])\n"
                      "print(child.pid, flush=True)\n"
                      "time.sleep(300)\n")
    server = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    child = int(server.stdout.readline())
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():  # the stub's watchers are set up and its main thread is about to block
            assert time.monotonic() < deadline and process_alive(child), "the stand-in stub did not start"
            time.sleep(0.05)
        server.kill()
        server.wait()
        wait_gone(child, 20, "a stub holding the GIL outlived tritonserver")
    finally:
        if process_alive(child):
            os.kill(child, 9)


def test_stale_shared_memory_of_a_dead_server_is_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"rsd{dead.pid}x123_abc"
    live = tmp_path / f"rsd{os.getpid()}x123_abc"
    other = tmp_path / "someone-else"
    for f in (stale, live, other):
        f.write_text("x")
    assert remove_stale_shm(tmp_path) == [stale]
    assert live.exists() and other.exists() and not stale.exists()


def test_admission_holds_rows_up_to_its_capacity_then_refuses_after_the_wait():
    adm = Admission(capacity=4, max_wait_s=0.2)
    held = [adm.acquire(3, time.monotonic() + 1), adm.acquire(1, time.monotonic() + 1)]
    assert adm.running == 4
    started = time.monotonic()
    with pytest.raises(Overloaded, match="at capacity"):
        adm.acquire(1, time.monotonic() + 0.2)
    assert 0.15 < time.monotonic() - started < 2 and adm.rejected == 1
    # a waiter gets in as soon as rows are released
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(adm.acquire(2, time.monotonic() + 10)))
    waiter.start()
    time.sleep(0.05)
    assert not got and adm.waiting == 1
    adm.release(held[0])
    waiter.join(5)
    assert got == [2] and adm.running == 3 and adm.waiting == 0
    adm.release(2)
    adm.release(1)
    assert adm.acquire(99, time.monotonic() + 1) == 4  # wider than the capacity: it takes all of it

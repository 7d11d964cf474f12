"""Subprocesses that never outlive their time limit (standard library only).

`run_part` starts a process in its own process group and, at its limit, sends SIGTERM to the
whole group, then SIGKILL after a short grace: whatever the process started goes with it.
`run_tree` is for processes started inside a part (which must stay in the part's group, so the
orchestrator's kill reaches them): at `stop_at` it sends SIGTERM to the process's children
(under `accelerate launch`: the training process, which finishes its step, saves and exits
while its launcher waits for it) or, without children, to the process itself; at the hard
limit SIGKILL to the whole tree.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time


def _children_map() -> dict[int, list[int]]:
    """ppid -> [pid] from /proc (Linux); empty elsewhere."""
    out: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1:
            out.setdefault(int(fields[1]), []).append(int(name))
    return out


def descendants(pid: int) -> list[int]:
    """Every descendant of pid, parents before children."""
    kids = _children_map()
    order, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        for c in kids.get(p, []):
            order.append(c)
            todo.append(c)
    return order


def _signal(pids, sig) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False


def run_tree(cmd: list[str], *, timeout: float, stop_at: float | None = None, env=None, cwd=None,
             stdout=None, stderr=subprocess.STDOUT, poll=None) -> dict:
    """Run cmd; at `stop_at` seconds SIGTERM its children (or cmd itself when it has none) and
    let it finish; at `timeout` SIGKILL the whole tree. poll(): called about every
    0.2 s while it runs. Returns {"rc", "wall_s", "stopped" (SIGTERM sent), "killed"}."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL)
    stopped = killed = False
    tree: list[int] = []
    while proc.poll() is None:
        now = time.monotonic() - t0
        if not killed and now >= timeout:
            tree = descendants(proc.pid)
            _signal(reversed(tree), signal.SIGKILL)
            _signal([proc.pid], signal.SIGKILL)
            killed = True
        elif not stopped and stop_at is not None and now >= stop_at:
            tree = descendants(proc.pid)
            _signal(_children_map().get(proc.pid) or [proc.pid], signal.SIGTERM)
            stopped = True
        if poll is not None:
            poll()
        try:
            proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass
    # The leader is gone; make sure nothing it started lingers past the hard limit.
    for p in tree + descendants(proc.pid):
        deadline = t0 + timeout
        while _alive(p) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(p):
            _signal([p], signal.SIGKILL)
            killed = True
    return {"rc": proc.returncode, "wall_s": round(time.monotonic() - t0, 2), "stopped": stopped, "killed": killed}


def run_part(cmd: list[str], *, timeout: float, env=None, cwd=None, stdout=None, grace: float = 3.0,
             on_start=None) -> dict:
    """Run cmd in a new process group; at `timeout` SIGTERM the group, SIGKILL it `grace` s later.
    Returns {"rc", "wall_s", "timed_out"}."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=stdout, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    if on_start is not None:
        on_start(proc)
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group(proc, grace)
    except BaseException:  # the orchestrator itself was interrupted: take the part down too
        kill_group(proc, grace)
        raise
    # Members of the group that outlived their leader (should not happen; never leave them).
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return {"rc": proc.returncode, "wall_s": round(time.monotonic() - t0, 2), "timed_out": timed_out}


def kill_group(proc: subprocess.Popen, grace: float) -> None:
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue

"""Starting, watching and stopping one container run (the shim's process group).

A run is identified by the shim's pid plus its start time (from /proc), so a recycled pid is never
mistaken for our process. The exit status comes from the shim's exit file; a shim killed outright
(SIGKILL) leaves none and counts as exit 137.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..processes import proc_stat
from .plan import ContainerPlan

SHIM = str(Path(__file__).with_name("shim.py"))


@dataclass
class RunFiles:
    """Files of one container run inside the pod folder."""

    pod_dir: Path
    container: str

    @property
    def log(self) -> Path:
        return self.pod_dir / f"{self.container}.log"

    @property
    def previous_log(self) -> Path:
        return self.pod_dir / f"{self.container}.previous.log"

    @property
    def spec(self) -> Path:
        return self.pod_dir / "run" / f"{self.container}.json"

    @property
    def exit(self) -> Path:
        return self.pod_dir / "run" / f"{self.container}.exit"

    @property
    def termination_log(self) -> Path:
        """Bind-mounted at the container's terminationMessagePath; read when the container ends."""
        return self.pod_dir / "run" / f"{self.container}.termination-log"

    @property
    def pid(self) -> Path:
        return self.pod_dir / "run" / f"{self.container}.pid"


@dataclass
class Exit:
    code: int
    reason: str
    message: str | None
    finished_at: dt.datetime


@dataclass
class RunHandle:
    """What the state file records about a running container, enough to re-adopt it."""

    shim_pid: int
    shim_start_ticks: int
    started_at: str  # RFC 3339

    def to_json(self) -> dict:
        return asdict(self)


def process_start_ticks(pid: int) -> int | None:
    """Start time of `pid` in clock ticks (guards against pid reuse), or None if it is gone or a zombie."""
    stat = proc_stat(pid)
    if stat is None or stat[0] == "Z":
        return None
    return stat[1]


def is_alive(handle: RunHandle) -> bool:
    return process_start_ticks(handle.shim_pid) == handle.shim_start_ticks


def launch(plan: ContainerPlan, files: RunFiles, netns: str | None, mountpoints_record: Path,
           cgroups: dict[str, Path] | None = None) -> tuple[RunHandle, subprocess.Popen[bytes]]:
    """Start the shim for `plan` inside `netns` (None: the host network), its command in `cgroups` (by
    controller, from cgroups.create; None: unconfined)."""
    files.spec.parent.mkdir(parents=True, exist_ok=True)
    # The cgroups' files are handed to the shim open: `ip netns exec` mounts a sysfs of its own over /sys, where
    # the cgroup hierarchies are not, so the shim could not open them by path.
    procs_fds = [os.open(path / "cgroup.procs", os.O_WRONLY) for path in (cgroups or {}).values()]
    oom_fd = os.open(cgroups["memory"] / "memory.oom_control", os.O_RDONLY) if cgroups and "memory" in cgroups else None
    inherited = [*procs_fds, *([oom_fd] if oom_fd is not None else [])]
    for stale in (files.exit, files.pid):
        stale.unlink(missing_ok=True)
    if files.log.exists() and files.log.stat().st_size > 0:
        os.replace(files.log, files.previous_log)
    files.spec.write_text(
        json.dumps(
            {
                "argv": plan.argv,
                "env": plan.env,
                "working_dir": plan.working_dir,
                "mounts": [asdict(m) for m in plan.mounts],
                "exit_path": str(files.exit),
                "pid_path": str(files.pid),
                "mountpoints_record": str(mountpoints_record),
                "cgroup_procs_fds": procs_fds,
                "oom_control_fd": oom_fd,
            }
        )
    )
    argv = ["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-I", SHIM, str(files.spec)]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    try:
        with open(files.log, "ab") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8"},
                close_fds=True,
                pass_fds=inherited,
            )
    finally:
        for fd in inherited:
            os.close(fd)
    ticks = process_start_ticks(process.pid)
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return RunHandle(process.pid, ticks if ticks is not None else -1, started), process


def child_pid(files: RunFiles) -> int | None:
    """The container's main process (the shim's child), once the shim has forked it."""
    try:
        return int(json.loads(files.pid.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def read_exit(files: RunFiles, fallback_code: int | None) -> Exit:
    try:
        body = json.loads(files.exit.read_text())
        finished = dt.datetime.strptime(body["finishedAt"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
        return Exit(int(body["exitCode"]), body.get("reason") or "Error", body.get("message"), finished)
    except (OSError, ValueError, KeyError):
        code = 137 if fallback_code is None else fallback_code
        return Exit(code, "Error" if code else "Completed", "the container's shim ended without recording an exit status",
                    dt.datetime.now(dt.timezone.utc))


def signal_group(handle: RunHandle, sig: int) -> None:
    """Signal the whole process group of the run (the shim leads it), if it is still ours."""
    if not is_alive(handle):
        return
    try:
        os.killpg(handle.shim_pid, sig)
    except ProcessLookupError:
        pass


def stop(handle: RunHandle, grace_seconds: float, poll: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM the group, wait up to `grace_seconds`, then SIGKILL it."""
    signal_group(handle, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if poll is not None and poll.poll() is not None:
            break
        if not is_alive(handle):
            break
        time.sleep(0.1)
    # The group may outlive its leader (children that ignore SIGTERM): kill whatever is left.
    try:
        os.killpg(handle.shim_pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if poll is not None:
        try:
            poll.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

"""Background processes of the local cluster: start detached, record, find again, stop for good.

Each component runs in a session of its own (so a stop reaches its whole process group) and
leaves a pid file holding the pid and the executable it was started from; a pid file whose
process is gone, or now belongs to another program, counts as stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ManagedProcess:
    name: str
    run_dir: Path
    log_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def recorded(self) -> tuple[int, int] | None:
        try:
            record = json.loads(self.pid_file.read_text())
            return int(record["pid"]), int(record["starttime"])
        except (OSError, ValueError, KeyError):
            return None

    def recorded_argv(self) -> list[str] | None:
        """The command line the running process was started with (None for records that predate it)."""
        try:
            argv = json.loads(self.pid_file.read_text()).get("argv")
        except (OSError, ValueError, AttributeError):
            return None
        return argv if isinstance(argv, list) else None

    def pid(self) -> int | None:
        """The pid if the recorded process is still the one we started (a reused pid has another start time)."""
        record = self.recorded()
        if record is None:
            return None
        pid, starttime = record
        stat = proc_stat(pid)
        if stat is None or stat[0] == "Z" or stat[1] != starttime:
            return None
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            log.write(f"\n--- started {time.strftime('%Y-%m-%dT%H:%M:%S')}: {' '.join(argv)}\n".encode())
            log.flush()
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        stat = proc_stat(process.pid)
        record = {"pid": process.pid, "starttime": stat[1] if stat else -1, "argv0": argv[0], "argv": argv}
        self.pid_file.write_text(json.dumps(record))
        return process.pid

    def stop(self, timeout: float = 10.0) -> bool:
        """SIGTERM the process group, SIGKILL after `timeout`; returns whether something was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (_alive(pid) or group_members(pid)):
            time.sleep(0.1)
        if _alive(pid) or group_members(pid):
            _signal_group(pid, signal.SIGKILL)
            while _alive(pid) or group_members(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    try:
        # Reap it if it is our child; otherwise just probe.
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group: children a component left behind count too."""
    members = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(proc.name))
    return members


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) from /proc, or None if there is no such process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command name: field 3 is the state, field 22 the start time.
    return fields[0], int(fields[19])

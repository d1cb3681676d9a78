"""The container shim run for real as a local process (no namespaces): exit status, pid file, start errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from optimodel_localcluster.node_agent.runtime import (
    SHIM,
    RunFiles,
    RunHandle,
    child_pid,
    is_alive,
    process_start_ticks,
    read_exit,
    stop,
)


def run_shim(tmp_path: Path, argv: list[str], env: dict[str, str] | None = None, wait: bool = True,
             ) -> tuple[subprocess.Popen[bytes], RunFiles]:
    files = RunFiles(tmp_path, "main")
    files.spec.parent.mkdir(parents=True, exist_ok=True)
    files.spec.write_text(json.dumps({
        "argv": argv, "env": env or {"PATH": os.environ["PATH"]}, "working_dir": str(tmp_path / "wd"),
        "mounts": [], "exit_path": str(files.exit), "pid_path": str(files.pid),
    }))
    with open(files.log, "ab") as log:
        process = subprocess.Popen([sys.executable, "-I", SHIM, str(files.spec)], stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    if wait:
        process.wait(timeout=30)
    return process, files


def test_exit_code_output_and_working_dir_are_recorded(tmp_path: Path) -> None:
    process, files = run_shim(tmp_path, ["sh", "-c", "pwd; echo $GREETING; exit 7"],
                              env={"PATH": os.environ["PATH"], "GREETING": "hello"})
    assert process.returncode == 7
    exit_status = read_exit(files, None)
    assert (exit_status.code, exit_status.reason) == (7, "Error")
    assert files.log.read_text().split() == [str(tmp_path / "wd"), "hello"]
    assert child_pid(files) is not None


def test_missing_executable_is_a_start_error_with_the_path(tmp_path: Path) -> None:
    process, files = run_shim(tmp_path, ["no-such-binary-xyz"], env={"PATH": "/usr/bin"})
    assert process.returncode == 128
    exit_status = read_exit(files, None)
    assert exit_status.reason == "StartError"
    assert exit_status.message == 'exec: "no-such-binary-xyz": executable file not found in $PATH (/usr/bin)'


def test_stop_terminates_the_whole_group_and_records_the_signal(tmp_path: Path) -> None:
    process, files = run_shim(tmp_path, ["sh", "-c", "sleep 300 & wait"], wait=False)
    deadline = time.monotonic() + 10
    while child_pid(files) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    ticks = process_start_ticks(process.pid)
    assert ticks is not None
    handle = RunHandle(process.pid, ticks, "2026-01-01T00:00:00Z")
    assert is_alive(handle)
    stop(handle, 5, process)
    assert not is_alive(handle)
    assert read_exit(files, None).code == 143  # the child died of SIGTERM; the shim outlived it to say so
    # Nothing of the group survives (the backgrounded sleep included).
    deadline = time.monotonic() + 5  # a killed process needs a moment to be reaped by its new parent
    while (survivors := _group_members(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert survivors == []


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def test_a_recycled_pid_is_not_ours() -> None:
    ticks = process_start_ticks(os.getpid())
    assert ticks is not None
    assert not is_alive(RunHandle(os.getpid(), ticks + 1, ""))
    assert read_exit(RunFiles(Path("/nonexistent"), "c"), None).code == 137

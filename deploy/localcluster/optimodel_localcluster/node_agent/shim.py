"""The per-container shim (a tiny containerd-shim): `python -I shim.py <spec.json>`.

Started by the agent as `[ip netns exec <ns>] unshare --mount --propagation private -- python -I shim.py
spec.json`, in a session of its own, with stdout/stderr on the container's log file. It bind-mounts the
volumes at their mountPath (inside its private mount namespace: nothing shows on the host, and the mounts
vanish with the last process), changes to workingDir, forks the container's command and waits for it,
writing the child's pid and, at the end, its exit status to files. Because the shim outlives an agent
restart and records the exit code itself, a restarted agent can re-adopt running containers.

Standard library only, and run with `-I`, so it starts fast and imports nothing of the project.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import json
import os
import shutil
import signal
import sys

MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_json(path: str, body: dict) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "w") as handle:
        json.dump(body, handle)
    os.replace(temporary, path)


def _fail(spec: dict, reason: str, message: str, code: int = 128) -> None:
    sys.stderr.write(f"optimodel node agent: {reason}: {message}\n")
    _write_json(spec["exit_path"], {"exitCode": code, "reason": reason, "message": message, "finishedAt": _now()})
    sys.exit(code)


def _bind(libc: ctypes.CDLL, source: str, target: str, read_only: bool) -> None:
    if libc.mount(source.encode(), target.encode(), None, MS_BIND | MS_REC, None) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"mount --bind {source} {target}: {os.strerror(error)}")
    if read_only:
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        if libc.mount(None, target.encode(), None, flags, None) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"remount read-only {target}: {os.strerror(error)}")


def _mount_volumes(spec: dict) -> None:
    mounts = spec.get("mounts") or []
    if not mounts:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    created: list[str] = []
    for mount in mounts:
        source, target = mount["host_path"], mount["container_path"]
        if not os.path.exists(source):
            # A subPath that does not exist yet is created as a folder, as the kubelet does.
            os.makedirs(source, exist_ok=True)
        if not os.path.lexists(target):
            # The mount point must exist; it is made on the shared filesystem and recorded for cleanup.
            if os.path.isdir(source):
                missing = target
                while not os.path.lexists(os.path.dirname(missing)):
                    missing = os.path.dirname(missing)
                os.makedirs(target, exist_ok=True)
            else:
                missing = target
                while not os.path.lexists(os.path.dirname(missing)):
                    missing = os.path.dirname(missing)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                open(target, "a").close()
            created.append(missing)
        _bind(libc, source, target, bool(mount.get("read_only")))
    if created and spec.get("mountpoints_record"):
        with open(spec["mountpoints_record"], "a") as record:
            record.writelines(f"{path}\n" for path in created)


def _oom_kills(oom_control_fd: int | None) -> int:
    """The memory cgroup's count of processes the kernel's OOM killer killed (cgroups.py makes the cgroup; the
    agent hands its memory.oom_control over open)."""
    if oom_control_fd is None:
        return 0
    try:
        for line in os.pread(oom_control_fd, 4096, 0).decode().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _resolve(executable: str, env: dict[str, str], cwd: str) -> str | None:
    if "/" in executable:
        path = executable if os.path.isabs(executable) else os.path.join(cwd, executable)
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    return shutil.which(executable, path=env.get("PATH", os.defpath))


def main(spec_path: str) -> None:
    with open(spec_path) as handle:
        spec = json.load(handle)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        # The agent signals the whole process group; the shim stays to record how the child ended.
        signal.signal(sig, signal.SIG_IGN)
    try:
        _mount_volumes(spec)
    except OSError as error:
        _fail(spec, "StartError", f"error mounting volumes: {error}")
    cwd = spec.get("working_dir") or "/"
    try:
        os.makedirs(cwd, exist_ok=True)
        os.chdir(cwd)
    except OSError as error:
        _fail(spec, "StartError", f"cannot use workingDir {cwd}: {error}")
    argv: list[str] = spec["argv"]
    env: dict[str, str] = spec["env"]
    if not argv:
        _fail(spec, "StartError", "no command to run")
    executable = _resolve(argv[0], env, cwd)
    if executable is None:
        _fail(spec, "StartError", f'exec: "{argv[0]}": executable file not found in $PATH ({env.get("PATH", "")})')
    started = _now()
    oom_control_fd = spec.get("oom_control_fd")
    procs_fds: list[int] = spec.get("cgroup_procs_fds") or []
    oom_kills_before = _oom_kills(oom_control_fd)
    pid = os.fork()
    if pid == 0:
        try:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE, signal.SIGXFSZ):
                signal.signal(sig, signal.SIG_DFL)
            # Into the container's cgroups before the command runs, so it and every process it starts are
            # limited; the shim itself stays outside (the OOM killer never picks the one recording the exit).
            for fd in procs_fds:
                os.write(fd, f"{os.getpid()}\n".encode())
                os.close(fd)
            if oom_control_fd is not None:
                os.close(oom_control_fd)
            os.execve(executable, argv, env)
        except OSError as error:
            sys.stderr.write(f"optimodel node agent: exec {argv[0]}: {error}\n")
        os._exit(127)
    _write_json(spec["pid_path"], {"pid": pid, "startedAt": started})
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        code = 128 + os.WTERMSIG(status)
    else:
        code = os.WEXITSTATUS(status)
    reason = "Completed" if code == 0 else "Error"
    if code != 0 and _oom_kills(oom_control_fd) > oom_kills_before:
        # As the kubelet reports it: the kernel killed a process of the container for going over its limit.
        reason = "OOMKilled"
    _write_json(spec["exit_path"], {"exitCode": code, "reason": reason, "finishedAt": _now(), "startedAt": started})
    sys.exit(code)


if __name__ == "__main__":
    main(sys.argv[1])

"""The sandbox a submission's kernel runs in: bubblewrap, a memory limit, a process limit.

Inside (``Sandbox.bwrap_arguments``):

- the system's ``/usr``, the Python installation and the ``lecture_lib`` package, read-only;
  while grading, the package is its grading copy (``grading_copy``: without the answers),
  bound where the library lies, and every other copy of it in the Python installation is
  hidden under an empty folder;
- a fresh, size-limited home ``/home/student`` (the kernel's working folder, with a copy of
  the assignment's files), a private ``/tmp`` and a private ``/dev/shm``: the only places it
  can write, each at most ``disk_limit`` bytes;
- the folder of its own connection sockets (Jupyter's ``ipc`` transport, so that the kernel
  needs no network);
- no network, no other processes (its own PID namespace), no ``solutions/``, no ``grading/``
  (gradebook, other submissions, feedback), no course sources, no home of the instructor.

Limits: a control group when the grader may create one (cgroup v2, else v1: ``memory`` and
``pids``), otherwise resource limits (``RLIMIT_AS`` for memory; ``RLIMIT_NPROC`` for processes,
which the kernel does not enforce for root). ``Sandbox.limits`` says which applied.

The kernel is started through this module's ``main`` (``python -m
lecture_lib.grading.sandbox SPEC``): it joins the control groups, sets the resource limits and
replaces itself by ``bwrap``. The specification travels on the command line, never through a
file the sandbox could change.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGE = "bubblewrap"
"""The Debian package that provides ``bwrap``."""

HOME = "/home/student"
"""The kernel's working folder inside the sandbox."""

GiB = 2**30
VIRTUAL_HEADROOM = 6 * GiB
"""Without a memory control group, ``RLIMIT_AS`` is the memory limit plus this much: PyTorch
maps several GiB of libraries into its address space without using that much memory."""


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create a sandbox on this machine."""


def bwrap_path() -> str:
    """The ``bwrap`` executable, or an error that names the package and the setting."""
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxUnavailable(
            f"autograding runs every submission in a sandbox made with bubblewrap, and `bwrap` "
            f"is not installed. Install the package: `apt-get install -y {PACKAGE}` (Debian, "
            f"Ubuntu; `dnf install {PACKAGE}` on Fedora). To grade without a sandbox (only for "
            "submissions you trust), set c.SandboxedExecute.sandbox = False in nbgrader_config.py."
        )
    return path


def check_bwrap() -> None:
    """Start one tiny sandbox, or raise ``SandboxUnavailable`` with bubblewrap's own words."""
    bwrap = bwrap_path()
    result = subprocess.run(
        [bwrap, "--unshare-all", "--ro-bind", "/", "/", "--", "true"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SandboxUnavailable(
            f"bubblewrap is installed but cannot make a sandbox here: {result.stderr.strip()}. "
            "It needs user namespaces (sysctl kernel.unprivileged_userns_clone=1) or root. "
            "To grade without a sandbox, set c.SandboxedExecute.sandbox = False."
        )


# --- limits ------------------------------------------------------------------------------------


def _mounts() -> list[tuple[str, str, str]]:
    """``(mount point, filesystem type, super options)`` from /proc/self/mountinfo."""
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 3:
            found.append((fields[4], tail[0], tail[2]))
    return found


def _writable_dir(path: str) -> bool:
    return os.path.isdir(path) and os.access(path, os.W_OK)


class ControlGroups:
    """The control groups of one sandbox: its memory and process limits, and a way to kill
    everything in it. ``kind`` is ``"cgroup v2"``, ``"cgroup v1"`` or ``None`` (unavailable)."""

    def __init__(self, name: str, memory: int, processes: int) -> None:
        self.dirs: list[Path] = []
        self.kind: str | None = None
        mounts = _mounts()
        for point, fstype, _ in mounts:
            if fstype == "cgroup2" and self._try_v2(Path(point), name, memory, processes):
                return
        v1 = {}
        for point, fstype, options in mounts:
            if fstype == "cgroup":
                for controller in ("memory", "pids"):
                    if controller in options.split(","):
                        v1[controller] = Path(point)
        if set(v1) == {"memory", "pids"} and all(_writable_dir(str(p)) for p in v1.values()):
            try:
                memory_dir, pids_dir = v1["memory"] / name, v1["pids"] / name
                memory_dir.mkdir()
                self.dirs.append(memory_dir)
                (memory_dir / "memory.limit_in_bytes").write_text(str(memory))
                pids_dir.mkdir()
                self.dirs.append(pids_dir)
                (pids_dir / "pids.max").write_text(str(processes))
                self.kind = "cgroup v1"
            except OSError:
                self.remove()

    def _try_v2(self, root: Path, name: str, memory: int, processes: int) -> bool:
        try:
            available = (root / "cgroup.controllers").read_text().split()
            if not {"memory", "pids"} <= set(available) or not _writable_dir(str(root)):
                return False
            enabled = (root / "cgroup.subtree_control").read_text().split()
            missing = [c for c in ("memory", "pids") if c not in enabled]
            if missing:
                (root / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in missing))
            group = root / name
            group.mkdir()
            self.dirs.append(group)
            (group / "memory.max").write_text(str(memory))
            (group / "pids.max").write_text(str(processes))
            self.kind = "cgroup v2"
            return True
        except OSError:
            self.remove()
            return False

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def kill_all(self) -> None:
        """SIGKILL every process in the groups, until they are empty."""
        for directory in self.dirs:
            kill_file = directory / "cgroup.kill"
            if kill_file.exists():
                try:
                    kill_file.write_text("1")
                except OSError:
                    pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pids = set()
            for directory in self.dirs:
                try:
                    pids |= {int(p) for p in (directory / "cgroup.procs").read_text().split()}
                except OSError:
                    pass
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.05)

    def remove(self) -> None:
        self.kill_all()
        for directory in reversed(self.dirs):
            for _ in range(50):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)
        self.dirs = []


# --- the sandbox -------------------------------------------------------------------------------


def _python_roots() -> list[str]:
    """The folders of the Python installation and environment the kernel runs in."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable)}
    roots |= {os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))}
    return sorted({os.path.realpath(r) for r in roots if r})


def _library_dir() -> str:
    import lecture_lib

    return os.path.realpath(os.path.dirname(lecture_lib.__file__))


_COPIES: dict[tuple, list[str]] = {}


def _other_copies(roots: list[str], library: str) -> list[str]:
    """Folders named like the library in the site-packages of ``roots``, other than ``library``
    (a second installation would hold the answers the grading copy leaves out)."""
    key = (tuple(roots), library)
    if key not in _COPIES:
        name, found = os.path.basename(library), []
        for root in [*roots, "/usr", "/usr/local"]:
            for folder in Path(root).glob("lib*/python*/*-packages"):
                candidate = folder / name
                if candidate.is_dir() and os.path.realpath(candidate) != library:
                    found.append(str(candidate))
        _COPIES[key] = found
    return _COPIES[key]


def _inside(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


class Sandbox:
    """One submission's sandbox: its staging folder on the host, its limits, its kernels.

    ``files`` are copied into the kernel's home (the assignment's supporting files). Use as a
    context manager; ``close`` kills whatever is left and removes every trace on the host.
    """

    def __init__(
        self,
        memory_limit: int = 3 * GiB,
        process_limit: int = 256,
        disk_limit: int = 512 * 2**20,
        threads: int = 1,
        files: dict[str, str] | None = None,
        enabled: bool = True,
        library: Path | None = None,
    ) -> None:
        self.enabled = enabled
        self.library = library  # the grading copy of lecture_lib to bind, or the library itself
        self.bwrap = bwrap_path() if enabled else None
        self.memory_limit, self.process_limit = memory_limit, process_limit
        self.disk_limit, self.threads = disk_limit, threads
        self.files = dict(files or {})
        self.root = Path(tempfile.mkdtemp(prefix="lecture-grading-"))
        self.home = self.root / "home"  # the kernel's folder when there is no sandbox
        self.home.mkdir()
        if not enabled:
            for source, destination in self.files.items():
                shutil.copy(source, self.home / destination)
        self.kernels = 0
        self.groups = ControlGroups(self.root.name, memory_limit, process_limit)

    @property
    def limits(self) -> str:
        """Which mechanism limits memory and processes, in words."""
        memory, processes = self.memory_limit / GiB, self.process_limit
        if self.groups.kind:
            return f"{self.groups.kind}: memory {memory:g} GiB, {processes} processes"
        nproc = "" if os.geteuid() == 0 else f", RLIMIT_NPROC {processes} more processes"
        note = " (no process limit: the grader runs as root without a control group)"
        return f"rlimits: address space {memory:g} GiB + headroom{nproc}" + ("" if nproc else note)

    def new_runtime_dir(self) -> Path:
        """A fresh folder for the next kernel's connection file and sockets."""
        self.kernels += 1
        runtime = self.root / f"run-{self.kernels}"
        runtime.mkdir(mode=0o700)
        return runtime

    def environment(self) -> dict[str, str]:
        """The kernel's environment: nothing of the grader's but what Python needs."""
        library_parent = os.path.dirname(_library_dir())
        env = {
            "HOME": HOME if self.enabled else str(self.home),
            "USER": "student",
            "LOGNAME": "student",
            "PATH": os.pathsep.join([os.path.dirname(sys.executable), "/usr/bin", "/bin"]),
            "LANG": "C.UTF-8",
            "MPLCONFIGDIR": "/tmp/matplotlib",
            "IPYTHONDIR": "/tmp/ipython",
            "PYTHONDONTWRITEBYTECODE": "1",
            "OMP_NUM_THREADS": str(self.threads),
            "NBGRADER_EXECUTION": "autograde",
        }
        for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"):  # compute as the grader does
            if name in os.environ:
                env[name] = os.environ[name]
        if not _inside(_library_dir(), _python_roots()):
            env["PYTHONPATH"] = library_parent
        return env

    def bwrap_arguments(self, runtime: Path) -> list[str]:
        """bubblewrap's arguments, up to (not including) the command."""
        args = [
            "--unshare-all", "--die-with-parent", "--new-session", "--disable-userns",
            "--unshare-user", "--uid", "1000", "--gid", "1000", "--hostname", "grading",
            "--cap-drop", "ALL",
            "--proc", "/proc", "--dev", "/dev",
            "--size", str(self.disk_limit), "--tmpfs", "/dev/shm",
            "--size", str(self.disk_limit), "--tmpfs", "/tmp",
            "--size", str(self.disk_limit), "--tmpfs", HOME,
            "--ro-bind", "/usr", "/usr",
        ]  # fmt: skip
        # The private /tmp and home come first: what is bound below stays visible even where it
        # lies under /tmp (a course cloned into a temporary folder, its virtual environment).
        for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(top):
                args += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                args += ["--ro-bind", top, top]
        for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "fonts"):
            if os.path.exists(f"/etc/{name}"):
                args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
        roots = _python_roots()
        for root in roots:
            args += ["--ro-bind", root, root]
        library = _library_dir()
        for other in _other_copies(roots, library):
            args += ["--tmpfs", other]  # hidden: an installed copy would hold the answers
        # Bound after the Python roots, so that it also replaces a library installed in them.
        args += ["--ro-bind", str(self.library or library), library]
        if os.path.isdir("/sys/devices/system/cpu"):
            args += ["--ro-bind", "/sys/devices/system/cpu", "/sys/devices/system/cpu"]
        args += ["--bind", str(runtime), str(runtime), "--chdir", HOME]
        args += ["--clearenv"]
        for key, value in self.environment().items():
            args += ["--setenv", key, value]
        return args

    def kernel_command(self, kernel: list[str], runtime: Path) -> list[str]:
        """The command that starts ``kernel`` (an argv) in this sandbox, through ``main``."""
        spec = {
            "cgroups": self.groups.procs_files,
            "rlimits": self._rlimits(),
            "copy": self.files if self.enabled else {},
            "bwrap": [self.bwrap, *self.bwrap_arguments(runtime)] if self.enabled else [],
            "kernel": kernel,
        }
        return [sys.executable, "-m", "lecture_lib.grading.sandbox", json.dumps(spec)]

    def _rlimits(self) -> dict[str, int]:
        limits = {"FSIZE": self.disk_limit, "CORE": 0}
        if self.groups.kind is None:
            limits["AS"] = self.memory_limit + VIRTUAL_HEADROOM
            if os.geteuid() != 0:
                limits["NPROC"] = _processes_of_user() + self.process_limit
        return limits

    def close(self) -> None:
        self.groups.remove()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _processes_of_user() -> int:
    uid, count = os.getuid(), 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                count += entry.stat().st_uid == uid
            except OSError:
                pass
    return count


def main(argv: list[str] | None = None) -> None:
    """Join the control groups, set the limits, copy files in, and become the sandbox."""
    spec = json.loads((argv or sys.argv[1:])[0])
    for procs in spec["cgroups"]:
        with open(procs, "w") as file:
            file.write(str(os.getpid()))
    for name, value in spec["rlimits"].items():
        limit = getattr(resource, f"RLIMIT_{name}")
        resource.setrlimit(limit, (value, value))
    command = list(spec["bwrap"])
    for source, destination in spec["copy"].items():
        fd = os.open(source, os.O_RDONLY)
        os.set_inheritable(fd, True)
        command += ["--file", str(fd), f"{HOME}/{destination}"]
    if command:
        command.append("--")
    command += spec["kernel"]
    os.execv(command[0], command)


if __name__ == "__main__":
    main()

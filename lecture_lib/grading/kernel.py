"""A Jupyter kernel in a sandbox, driven one cell at a time by the grader.

``SandboxKernel.run(code)`` returns what the cell did (``CellRun``): its outputs, capped in
bytes; the observations a check sent (``wire.MIME`` messages, kept apart from the outputs);
and how it ended: normally, interrupted after its time limit, or a *fault* (the kernel died,
or did not stop when interrupted), after which the caller starts a fresh kernel.

Whatever the kernel sends is read as untrusted data: a message that cannot be read (odd
headers, malformed content, observations nested too deep) is noted in ``CellRun.unreadable``
and costs only the cell it came in; a single message larger than ``MAX_MESSAGE_BYTES`` is
refused by the socket itself.
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import zmq
from jupyter_client import BlockingKernelClient, KernelManager

from . import wire
from .sandbox import Sandbox

KEPT_MIME_TYPES = ("text/plain", "image/png", "image/jpeg")
"""What a graded notebook keeps of a rich output. HTML, JavaScript, Markdown and SVG would run
or render in the feedback and in the instructor's Formgrader; they are dropped."""

BASE64 = re.compile(r"[A-Za-z0-9+/=\s]*")

PREAMBLE = "import lecture_lib.grading.collect"
"""Run silently in every fresh kernel before the student's first cell."""

GRACE = 10.0
"""Seconds a cell gets to stop after it is interrupted, before its kernel is killed."""


MAX_MESSAGE_BYTES = 128 * 2**20
"""The largest message the grader receives from a kernel (ZeroMQ drops larger ones)."""


class SizedKernelClient(BlockingKernelClient):
    """A client whose sockets refuse messages larger than ``MAX_MESSAGE_BYTES``."""

    def _create_connected_socket(self, channel, identity=None):
        socket = super()._create_connected_socket(channel, identity=identity)
        socket.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        return socket


class SandboxKernelManager(KernelManager):
    """Starts the kernel through ``sandbox.main``: control groups, limits, bubblewrap."""

    def __init__(self, sandbox: Sandbox, runtime: Path, **kwargs) -> None:
        super().__init__(
            transport="ipc",
            ip=str(runtime / "kernel"),
            connection_file=str(runtime / "kernel.json"),
            kernel_name="python3",
            blocking_class=SizedKernelClient,
            **kwargs,
        )
        self.sandbox, self.runtime = sandbox, runtime

    def format_kernel_cmd(self, extra_arguments=None) -> list[str]:
        kernel = [sys.executable, "-m", "ipykernel_launcher", "-f", self.connection_file]
        kernel += ["--HistoryManager.hist_file=:memory:"]
        return self.sandbox.kernel_command(kernel, self.runtime)


@dataclass
class CellRun:
    """What one cell did."""

    outputs: list = field(default_factory=list)
    observations: list = field(default_factory=list)
    execution_count: int | None = None
    status: str = (
        "ok"  # "ok", "error", "timeout" (interrupted, kernel alive), "died", "unstoppable"
    )
    output_bytes: int = 0
    observation_bytes: int = 0
    unreadable: list = field(default_factory=list)
    """Why messages of this cell could not be read (each costs the cell, never the grader)."""

    @property
    def fault(self) -> bool:
        """The kernel is gone or stuck: grading must go on in a fresh one."""
        return self.status in ("died", "unstoppable")


class Outputs:
    """A cell's outputs as the notebook stores them, at most ``limit`` bytes in all."""

    def __init__(self, run: CellRun, limit: int, observation_limit: int) -> None:
        self.run, self.limit, self.observation_limit = run, limit, observation_limit
        self.cut = False

    def _fits(self, size: int) -> bool:
        self.run.output_bytes += size
        if self.run.output_bytes > self.limit:
            self.cut = True
            return False
        return True

    def add(self, msg_type: str, content: dict) -> None:
        outputs = self.run.outputs
        if msg_type == "stream":
            text = str(content.get("text", ""))
            room = self.limit - self.run.output_bytes
            self.run.output_bytes += len(text.encode())
            if room <= 0:
                self.cut = True
                return
            if len(text.encode()) > room:
                text, self.cut = text.encode()[:room].decode(errors="ignore"), True
            name = "stderr" if content.get("name") == "stderr" else "stdout"
            if outputs and outputs[-1].output_type == "stream" and outputs[-1].name == name:
                outputs[-1].text += text
            else:
                outputs.append(nbformat.v4.new_output("stream", name=name, text=text))
        elif msg_type in ("display_data", "execute_result"):
            data = content.get("data", {})
            if isinstance(data, dict) and wire.MIME in data:
                self._observation(data[wire.MIME])
                return
            kept = {
                k: v
                for k, v in data.items()
                if k in KEPT_MIME_TYPES
                and isinstance(v, str)
                and (k == "text/plain" or BASE64.fullmatch(v))
            }  # a picture is base64 and nothing else: the pages put it in an attribute
            if not kept:
                kept = {"text/plain": f"[an output of type {', '.join(sorted(data))[:200]}]"}
            if not self._fits(sum(len(v) for v in kept.values())):
                return
            if msg_type == "execute_result":
                outputs.append(
                    nbformat.v4.new_output(
                        "execute_result", data=kept, execution_count=content.get("execution_count")
                    )
                )
            else:
                outputs.append(nbformat.v4.new_output("display_data", data=kept))
        elif msg_type == "error":
            traceback = [str(line)[:4000] for line in content.get("traceback", [])][-60:]
            if not self._fits(sum(len(line) for line in traceback) + 200):
                traceback = traceback[-3:]
            outputs.append(
                nbformat.v4.new_output(
                    "error",
                    ename=str(content.get("ename", "Error"))[:200],
                    evalue=str(content.get("evalue", ""))[:2000],
                    traceback=traceback,
                )
            )
        elif msg_type == "clear_output":
            outputs.clear()

    def _observation(self, text) -> None:
        size = len(text) if isinstance(text, str) else 0
        self.run.observation_bytes += size
        if self.run.observation_bytes > self.observation_limit:
            self.run.observations.append(
                ValueError(f"more than {self.observation_limit:,} bytes of results in one cell")
            )
            return
        try:
            self.run.observations.append(wire.decode(text, self.observation_limit))
        except (ValueError, TypeError, json.JSONDecodeError, RecursionError) as error:
            self.run.observations.append(ValueError(str(error)[:300]))

    def finish(self) -> None:
        if self.cut:
            self.run.outputs.append(
                nbformat.v4.new_output(
                    "stream",
                    name="stdout",
                    text=f"\n[output cut: this cell wrote {self.run.output_bytes:,} bytes; the "
                    f"graded notebook keeps the first {self.limit:,}]\n",
                )
            )


class SandboxKernel:
    """One kernel at a time in ``sandbox``; ``restart`` replaces it by a fresh one."""

    def __init__(self, sandbox: Sandbox, startup_timeout: float = 120) -> None:
        self.sandbox, self.startup_timeout = sandbox, startup_timeout
        self.manager: SandboxKernelManager | None = None
        self.client = None

    def start(self) -> None:
        runtime = self.sandbox.new_runtime_dir()
        self.manager = SandboxKernelManager(self.sandbox, runtime)
        log = open(runtime.parent / f"{runtime.name}.log", "wb")  # noqa: SIM115 (kept by Popen)
        with log:
            self.manager.start_kernel(
                env=self.sandbox.environment(),
                cwd=str(self.sandbox.home),
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.client = self.manager.blocking_client()
        self.client.start_channels()
        try:
            self.client.wait_for_ready(timeout=self.startup_timeout)
            # The grading code (and with it PyTorch) is imported before any student code runs.
            preamble = self.run(PREAMBLE, timeout=self.startup_timeout, store_history=False)
            if preamble.status != "ok":
                raise RuntimeError(f"importing the grading code ended with {preamble.status}")
        except RuntimeError as error:
            self.stop()
            said = (
                (runtime.parent / f"{runtime.name}.log")
                .read_bytes()[-4000:]
                .decode(errors="ignore")
            )
            raise RuntimeError(f"the grading kernel did not start: {error}\n{said}") from error

    def stop(self) -> None:
        if self.client is not None:
            self.client.stop_channels()
        if self.manager is not None:
            try:
                self.manager.shutdown_kernel(now=True)
            except Exception:
                pass
            self.manager.cleanup_resources()
        self.sandbox.groups.kill_all()
        self.manager = self.client = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def _interrupt(self) -> None:
        message = self.client.session.msg("interrupt_request", content={})
        self.client.control_channel.send(message)

    def run(
        self,
        code: str,
        timeout: float,
        output_limit: int = 2**20,
        observation_limit: int = 64 * 2**20,
        store_history: bool = True,
    ) -> CellRun:
        """Execute ``code``; interrupt it after ``timeout`` seconds, kill it ``GRACE`` later."""
        run = CellRun()
        outputs = Outputs(run, output_limit, observation_limit)
        msg_id = self.client.execute(
            code, store_history=store_history, allow_stdin=False, stop_on_error=False
        )
        deadline = time.monotonic() + timeout
        interrupted_at, reply, idle, next_alive_check = None, None, False, 0.0
        while not (reply and idle):
            now = time.monotonic()
            if interrupted_at is None and now > deadline:
                self._interrupt()
                interrupted_at = now
            if interrupted_at is not None and now > interrupted_at + GRACE:
                run.status = "unstoppable"
                break
            if now > next_alive_check:
                next_alive_check = now + 0.5
                if not self.manager.is_alive():
                    run.status = "died"
                    break
            try:
                msg = self.client.get_iopub_msg(timeout=0.05)
            except queue.Empty:
                msg = None
            except Exception as error:  # a message the session cannot read
                run.unreadable.append(f"{type(error).__name__}: {error}"[:300])
                msg = None
            try:
                if msg is not None and _parent(msg) == msg_id:
                    kind, content = str(msg["msg_type"]), msg.get("content", {})
                    if not isinstance(content, dict):
                        raise TypeError("a message whose content is not a dict")
                    if kind == "status" and content.get("execution_state") == "idle":
                        idle = True
                    elif kind == "execute_input":
                        count = content.get("execution_count")
                        run.execution_count = count if isinstance(count, int) else None
                    else:
                        outputs.add(kind, content)
            except Exception as error:  # odd headers or content: this cell's loss only
                run.unreadable.append(f"{type(error).__name__}: {error}"[:300])
            if reply is None:
                try:
                    shell = self.client.get_shell_msg(timeout=0)
                except queue.Empty:
                    shell = None
                except Exception as error:
                    run.unreadable.append(f"{type(error).__name__}: {error}"[:300])
                    shell = None
                try:
                    if shell is not None and _parent(shell) == msg_id:
                        content = shell.get("content")
                        ok = isinstance(content, dict) and content.get("status") == "ok"
                        reply, run.status = shell, "ok" if ok else "error"
                except Exception as error:
                    run.unreadable.append(f"{type(error).__name__}: {error}"[:300])
        if interrupted_at is not None and run.status in ("ok", "error"):
            run.status = "timeout"
        outputs.finish()
        return run


def _parent(msg) -> object:
    """The ``msg_id`` of the request a message answers (None if it has no readable header)."""
    if not isinstance(msg, dict):
        return None
    header = msg.get("parent_header")
    return header.get("msg_id") if isinstance(header, dict) else None

"""Where tools run so that a timeout can stop them: sandbox processes.

A tool call on a thread of the agent service cannot be stopped, and one C-level operation (a big-integer power)
holds the interpreter lock for minutes: nothing else of the service runs meanwhile, not even the turns' heartbeats,
so other replicas adopt its turns and run them twice. A process can be stopped. So every tool whose code can be
found again in another process runs in one of a few sandbox processes (`python -m agent_runtime.tools.sandbox`), one
call at a time each. A call past its timeout kills its process group (whatever the tool started goes too) and a
fresh process replaces it. Each process runs under an address-space limit and, per call, a CPU-time limit a little
past the call's timeout (the kernel ends it even if its parent is gone); a result is cut to its output bound before
it crosses back, and the parent reads no more than that.

A tool is found again by the code that registered it, not by pickling its function (plugin tools are closures):
`ToolRegistry.register_from("package.module:function", *args)` marks each tool that call adds with its origin, and
a sandbox process calls the same entry with the same JSON arguments on a registry of its own (cached) and runs the
tool of that name. The built-ins go this way (`agent_runtime.tools.builtins`), and so do the `--tool-plugins`, with
the agent session's namespace as their argument.

Tools that share the service's state stay in its process: the memory tools (`remember`...) write through the
service's SQL engine and pooled connections, which a sandbox would have to open again for every namespace, and
their work is one bounded key-value read or write. Registered with `add` (no origin), they run on a thread under
their timeout, trusted not to hold the interpreter lock.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import resource
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from typing import Any

from agent_runtime.tools.registry import ToolFailed, ToolOrigin, ToolRegistry, cut_output

_HEADER = struct.Struct(">I")
_REPLY_OVERHEAD = 4096  # the JSON around a reply's text, and an error's type name
_START_TIMEOUT_S = 60.0
_CACHED_REGISTRIES = 64


class SandboxFailed(RuntimeError):
    """A sandbox process died, or answered out of protocol, during a call."""


class ToolSandbox:
    """A pool of up to `processes` sandbox processes, started as calls need them.

    Args:
        processes: sandboxed calls that run at once (more wait for a free process).
        memory_mb: each process's address-space limit (0: none).
        timeout_s: the longest any call runs (a tool's own timeout may be shorter).
        max_output_bytes: the most a result may hold (a tool's own bound may be smaller).
    """

    def __init__(self, processes: int = 4, memory_mb: int = 1024, timeout_s: float = 30.0,
                 max_output_bytes: int = 64 << 10) -> None:
        self.processes, self.memory_mb = processes, memory_mb
        self.timeout_s, self.max_output_bytes = timeout_s, max_output_bytes
        self._idle: list[_Process] = []
        self._running = 0
        self._changed = threading.Condition()
        self._closed = False
        self.kills = 0  # processes killed: at a timeout, a failure or closing

    def warm(self, count: int = 1) -> None:
        """Start up to `count` processes now, so the first calls do not wait for one."""
        started = [_Process(self.memory_mb) for _ in range(min(count, self.processes))]
        with self._changed:
            self._idle.extend(started)
            self._running += len(started)

    def run(self, origin: ToolOrigin, name: str, arguments: dict[str, Any], timeout_s: float,
            max_output_bytes: int) -> tuple[str, int]:
        """The tool's output, cut to `max_output_bytes`, and its size in bytes before the cut. Raises ToolFailed
        (the tool raised), TimeoutError (killed at `timeout_s`) or SandboxFailed."""
        request = {"entry": origin.entry, "args": list(origin.args), "tool": name, "arguments": arguments,
                   "timeout_s": timeout_s, "max_output_bytes": max_output_bytes}
        process = self._acquire()
        healthy = False
        try:
            # JSON escapes a control character in 6 bytes: the reply's bound allows for a text of nothing else.
            reply = process.call(json.dumps(request).encode(), timeout_s, 6 * max_output_bytes + _REPLY_OVERHEAD)
            healthy = True
        finally:
            self._release(process, healthy)
        if "error" in reply:
            raise ToolFailed(reply["error"])
        return reply["text"], reply["bytes"]

    def close(self) -> None:
        """Stop the idle processes now, the busy ones as their calls end."""
        with self._changed:
            self._closed = True
            idle, self._idle = self._idle, []
            self._running -= len(idle)
        for process in idle:
            process.kill()

    def _acquire(self) -> _Process:
        with self._changed:
            while not self._idle and self._running >= self.processes:
                self._changed.wait()
            if self._idle:
                return self._idle.pop()
            self._running += 1
        try:
            return _Process(self.memory_mb)
        except BaseException:
            self._release(None, False)
            raise

    def _release(self, process: _Process | None, healthy: bool) -> None:
        healthy = healthy and not self._closed
        if process is not None and not healthy:
            process.kill()
        with self._changed:
            if process is not None and healthy:
                self._idle.append(process)
            else:
                self._running -= 1
                self.kills += process is not None
            self._changed.notify()


class _Process:
    """One sandbox process: a request frame in on its stdin, a reply frame out on its stdout."""

    def __init__(self, memory_mb: int) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # the parent's imports
        self.proc = subprocess.Popen([sys.executable, "-m", "agent_runtime.tools.sandbox", str(memory_mb)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True)
        try:
            if _read_frame(self.proc.stdout.fileno(), time.monotonic() + _START_TIMEOUT_S, 64) != {"ready": True}:
                raise SandboxFailed("the sandbox process did not start")
        except BaseException:
            self.kill()
            raise

    def call(self, request: bytes, timeout_s: float, max_reply: int) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        _write_all(self.proc.stdin.fileno(), _HEADER.pack(len(request)) + request, deadline)
        return _read_frame(self.proc.stdout.fileno(), deadline, max_reply)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            pipe.close()


def _write_all(fd: int, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    while view:
        if not select.select([], [fd], [], max(deadline - time.monotonic(), 0))[1]:
            raise TimeoutError("the sandbox did not take the call")
        view = view[os.write(fd, view[:65536]):]


def _read_exactly(fd: int, size: int, deadline: float) -> bytes:
    chunks, left = [], size
    while left:
        remaining = None if deadline == float("inf") else deadline - time.monotonic()
        if remaining is not None and (remaining <= 0 or not select.select([fd], [], [], remaining)[0]):
            raise TimeoutError("the tool did not answer in time")
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise SandboxFailed("the sandbox process died during the call")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int, deadline: float, max_bytes: int) -> dict[str, Any]:
    (size,) = _HEADER.unpack(_read_exactly(fd, _HEADER.size, deadline))
    if size > max_bytes:
        raise SandboxFailed(f"the sandbox answered {size} bytes, over the {max_bytes} allowed")
    return json.loads(_read_exactly(fd, size, deadline))


# -- the sandbox process ------------------------------------------------------------------------------------------


def _serve(request: dict[str, Any], registries: OrderedDict[tuple[str, str], ToolRegistry]) -> dict[str, Any]:
    limit = request["max_output_bytes"]
    try:
        key = (request["entry"], json.dumps(request["args"]))
        registry = registries.get(key)
        if registry is None:
            module, _, function = request["entry"].partition(":")
            registry = ToolRegistry()
            getattr(importlib.import_module(module), function)(registry, *request["args"])
            registries[key] = registry
            while len(registries) > _CACHED_REGISTRIES:
                registries.popitem(last=False)
        registries.move_to_end(key)
        tool = registry.get(request["tool"])
        if tool is None:
            raise LookupError(f"{request['entry']} registers no tool {request['tool']!r} here")
        _limit_cpu(request["timeout_s"])
        output = tool.fn(**request["arguments"])
        if inspect.isawaitable(output):
            output = asyncio.run(output)
        text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False, default=str)
    except Exception as exc:  # noqa: BLE001 - the tool's failure is the model's information
        return {"error": cut_output(f"{type(exc).__name__}: {exc}", limit)[0]}
    kept, size = cut_output(text, limit)
    return {"text": kept, "bytes": size}


def _limit_cpu(timeout_s: float) -> None:
    """The kernel ends this process (SIGXCPU, which Python leaves at its default) once the call has used a little
    more CPU than its timeout: the backstop for a tool still running when no parent is left to kill it."""
    used = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    soft = int(used + timeout_s) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def main() -> None:
    memory_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if memory_mb:
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    requests, replies = os.dup(0), os.dup(1)
    quiet = os.open(os.devnull, os.O_RDWR)  # a tool that reads stdin or prints never touches the protocol
    os.dup2(quiet, 0)
    os.dup2(quiet, 1)
    registries: OrderedDict[tuple[str, str], ToolRegistry] = OrderedDict()

    def send(reply: dict[str, Any]) -> None:
        data = json.dumps(reply, ensure_ascii=False).encode()
        view = memoryview(_HEADER.pack(len(data)) + data)
        while view:
            view = view[os.write(replies, view):]

    send({"ready": True})
    while True:
        try:
            request = _read_frame(requests, float("inf"), 1 << 30)
        except SandboxFailed:  # the service went away
            return
        send(_serve(request, registries))


if __name__ == "__main__":
    main()

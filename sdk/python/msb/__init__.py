"""msb for Python: run untrusted code in local microVMs.

A thin client of msb's local API (docs/api.md): it starts ``msb api`` as a child process and
speaks JSON lines to it. Standard library only, Python 3.9+.

    import msb

    with msb.Client() as client:
        with client.create(memory_mib=256) as sandbox:
            result = sandbox.exec(["python3", "-c", "print(6 * 7)"])
            print(result.exit_code, result.stdout)
"""

from __future__ import annotations

import base64
import collections
import io
import itertools
import json
import os
import queue
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

__all__ = [
    "Client",
    "Sandbox",
    "Process",
    "ExecResult",
    "ExitStatus",
    "MsbError",
    "SandboxNotFound",
    "PathNotFound",
    "ImageNotFound",
    "AlreadyExists",
    "NotRunning",
    "InvalidOptions",
    "RuntimeExited",
]

API_PROTOCOL = 1
__version__ = "0.1.0"


class MsbError(Exception):
    """An error reported by msb: ``code`` is stable (see docs/api.md), ``message`` says what happened."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class SandboxNotFound(MsbError):
    """No sandbox of that name (code ``not_found``)."""


class ImageNotFound(MsbError):
    """The image is not in the registry, or not in the store with pull policy ``never``."""


class AlreadyExists(MsbError):
    """A sandbox of that name exists."""


class NotRunning(MsbError):
    """The sandbox exists but is not running."""


class InvalidOptions(MsbError):
    """An option or parameter was wrong; the message names it."""


class RuntimeExited(MsbError):
    """The ``msb api`` process ended; pending calls fail with this instead of hanging."""


_ERRORS = {
    "not_found": SandboxNotFound,
    "NOT_FOUND": ImageNotFound,
    "NOT_IN_STORE": ImageNotFound,
    "already_exists": AlreadyExists,
    "not_running": NotRunning,
    "invalid_config": InvalidOptions,
    "invalid_params": InvalidOptions,
}


class PathNotFound(MsbError):
    """No such file or directory in the sandbox (code ``not_found`` for a path)."""


def _error(body: Dict[str, Any]) -> MsbError:
    code = str(body.get("code", "internal"))
    message = str(body.get("message", ""))
    if code == "not_found" and not message.startswith("no sandbox"):
        # The same code names a missing path or process; only a missing sandbox is SandboxNotFound.
        return PathNotFound(code, message)
    return _ERRORS.get(code, MsbError)(code, message)


def _b64(data: Union[bytes, str]) -> str:
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


# Python keyword → the SDK option name, where plain camelCase would get it wrong.
_OPTION_NAMES = {
    "memory_mib": "memoryMiB",
    "disk_size_mib": "diskSizeMiB",
}


def _option_name(key: str) -> str:
    if key in _OPTION_NAMES:
        return _OPTION_NAMES[key]
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@dataclass
class ExitStatus:
    """How a command ended. ``exit_code`` is what a shell reports (128 + signal when killed)."""

    exit_code: int
    code: Optional[int]
    signal: Optional[int]
    timed_out: bool


@dataclass
class ExecResult(ExitStatus):
    stdout: bytes = b""
    stderr: bytes = b""

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")


class _Pending:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: Optional[MsbError] = None


class _ChunkReader(io.RawIOBase):
    """A readable stream fed with chunks from the reader thread; b"" (EOF) once the command ended."""

    def __init__(self) -> None:
        self._chunks: "queue.Queue[Optional[bytes]]" = queue.Queue()
        self._current = b""
        self._eof = False

    def _feed(self, chunk: Optional[bytes]) -> None:
        self._chunks.put(chunk)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while not self._current:
            if self._eof:
                return 0
            chunk = self._chunks.get()
            if chunk is None:
                self._eof = True
                return 0
            self._current = chunk
        size = min(len(buffer), len(self._current))
        buffer[:size] = self._current[:size]
        self._current = self._current[size:]
        return size


class Process:
    """A command running in a sandbox: ``stdout``/``stderr`` are binary file objects."""

    def __init__(self, client: "Client", process_id: int) -> None:
        self._client = client
        self.id = process_id
        self._stdout = _ChunkReader()
        self._stderr = _ChunkReader()
        self.stdout = io.BufferedReader(self._stdout)
        self.stderr = io.BufferedReader(self._stderr)
        self._ended = threading.Event()
        self._status: Optional[ExitStatus] = None
        self._error: Optional[MsbError] = None

    def _event(self, event: Dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "output":
            target = self._stdout if event.get("fd") == "stdout" else self._stderr
            target._feed(_unb64(event.get("data", "")))
            return
        if kind == "exit":
            self._status = ExitStatus(
                exit_code=int(event["exitCode"]),
                code=event.get("code"),
                signal=event.get("signal"),
                timed_out=bool(event.get("timedOut")),
            )
        else:
            self._error = _error(event.get("error") or {}) if kind == "error" else event.get("_error")
        self._stdout._feed(None)
        self._stderr._feed(None)
        self._ended.set()

    def write(self, data: Union[bytes, str]) -> None:
        """Sends input; returns once the sandbox has room for it."""
        self._client._call("write", {"process": self.id, "data": _b64(data)})

    def close_stdin(self) -> None:
        self._client._call("end", {"process": self.id})

    def signal(self, signal: int = 9) -> None:
        self._client._call("signal", {"process": self.id, "signal": signal})

    def wait(self, timeout: Optional[float] = None) -> ExitStatus:
        """Waits for the command to end. Read stdout/stderr first if they may hold much."""
        if not self._ended.wait(timeout):
            raise TimeoutError(f"process {self.id} still running after {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._status is not None
        return self._status


class Files:
    """File operations in a sandbox (paths are the sandbox's)."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sandbox = sandbox

    def _call(self, method: str, **params: Any) -> Any:
        return self._sandbox._client._call(method, {"name": self._sandbox.name, **params})

    def read(self, path: str) -> bytes:
        return _unb64(self._call("read_file", path=path)["data"])

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return self.read(path).decode(encoding)

    def write(self, path: str, data: Union[bytes, str], mode: Optional[int] = None) -> int:
        params: Dict[str, Any] = {"path": path, "data": _b64(data)}
        if mode is not None:
            params["mode"] = mode
        return int(self._call("write_file", **params)["bytes"])

    def stat(self, path: str) -> Dict[str, Any]:
        return self._call("stat", path=path)

    def exists(self, path: str) -> bool:
        return bool(self._call("exists", path=path)["exists"])

    def listdir(self, path: str) -> List[Dict[str, Any]]:
        return self._call("list_dir", path=path)["entries"]

    def mkdir(self, path: str, parents: bool = False) -> None:
        self._call("mkdir", path=path, parents=parents)

    def remove(self, path: str, recursive: bool = False) -> None:
        self._call("remove_path", path=path, recursive=recursive)

    def rename(self, source: str, target: str) -> None:
        self._call("rename", **{"from": source, "to": target})

    def chmod(self, path: str, mode: int) -> None:
        self._call("chmod", path=path, mode=mode)


class Sandbox:
    """A sandbox. As a context manager, one this client created is stopped (and removed if
    unnamed) on exit; one found with ``Client.get`` is left running."""

    def __init__(self, client: "Client", name: str, owned: bool) -> None:
        self._client = client
        self.name = name
        self._owned = owned
        self.fs = Files(self)

    def __repr__(self) -> str:
        return f"Sandbox({self.name!r})"

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._owned:
            self.remove(force=True)

    @staticmethod
    def _command(argv: Union[Sequence[str], str]) -> List[str]:
        return ["/bin/sh", "-c", argv] if isinstance(argv, str) else list(argv)

    @staticmethod
    def _options(env, cwd, user, timeout) -> Dict[str, Any]:
        params: Dict[str, Any] = {}
        if env is not None:
            params["env"] = dict(env)
        if cwd is not None:
            params["cwd"] = cwd
        if user is not None:
            params["user"] = user
        if timeout is not None:
            params["timeoutMs"] = timeout * 1000
        return params

    def exec(
        self,
        argv: Union[Sequence[str], str],
        *,
        env: Optional[Dict[str, str]] = None,
        cwd: Optional[str] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = None,
        stdin: Optional[Union[bytes, str]] = None,
    ) -> ExecResult:
        """Runs a command to completion (a string runs with /bin/sh -c) and collects its output."""
        params = {"name": self.name, "argv": self._command(argv), **self._options(env, cwd, user, timeout)}
        if stdin is not None:
            params["stdin"] = _b64(stdin)
        r = self._client._call("exec", params)
        return ExecResult(
            exit_code=int(r["exitCode"]),
            code=r.get("code"),
            signal=r.get("signal"),
            timed_out=bool(r.get("timedOut")),
            stdout=_unb64(r["stdout"]),
            stderr=_unb64(r["stderr"]),
        )

    def spawn(
        self,
        argv: Union[Sequence[str], str],
        *,
        env: Optional[Dict[str, str]] = None,
        cwd: Optional[str] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = None,
        stdin: bool = False,
    ) -> Process:
        """Starts a command and returns it while it runs; ``stdin=True`` keeps its input open."""
        params = {"name": self.name, "argv": self._command(argv), "stdin": stdin, **self._options(env, cwd, user, timeout)}
        return self._client._spawn(params)

    def stop(self, timeout: Optional[float] = None) -> None:
        params: Dict[str, Any] = {"name": self.name}
        if timeout is not None:
            params["timeoutMs"] = timeout * 1000
        self._client._call("stop", params)

    def kill(self) -> None:
        self._client._call("kill", {"name": self.name})

    def remove(self, force: bool = False) -> None:
        try:
            self._client._call("remove", {"name": self.name, "force": force})
        except SandboxNotFound:
            # An unnamed sandbox removes itself when it stops.
            pass


class Client:
    """A connection to msb: a child process running ``msb api``. Use it as a context manager.

    The binary is ``binary``, else $MSB_BIN, else ``msb`` on PATH. ``env`` adds environment
    variables for it (e.g. MSB_HOME).
    """

    def __init__(self, binary: Optional[str] = None, env: Optional[Dict[str, str]] = None) -> None:
        path = binary or os.environ.get("MSB_BIN") or shutil.which("msb")
        if not path:
            raise RuntimeExited("no_binary", "cannot find msb: pass binary=, set MSB_BIN, or put msb on PATH")
        self._proc = subprocess.Popen(
            [path, "api"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._pending: Dict[int, _Pending] = {}
        self._processes: Dict[int, Process] = {}
        self._early_events: Dict[int, List[Dict[str, Any]]] = collections.defaultdict(list)
        self._stderr_tail: "collections.deque[str]" = collections.deque(maxlen=20)
        self._dead: Optional[RuntimeExited] = None
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        hello = self._call("hello", {"protocol": API_PROTOCOL, "client": f"msb-python/{__version__}"})
        self.msb_version = hello["msb"]

    # -- plumbing ---------------------------------------------------------------------------

    def _read_stderr(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr_tail.append(line.decode("utf-8", "replace").rstrip())

    def _read_stdout(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "event" in message:
                # Under the lock, so events reach a process in order even while _spawn replays
                # the ones that came before its reply.
                with self._lock:
                    process = self._processes.get(message.get("process"))
                    if process is None:
                        self._early_events[message.get("process")].append(message)
                        continue
                    process._event(message)
                    if message["event"] in ("exit", "error"):
                        self._processes.pop(process.id, None)
                continue
            with self._lock:
                waiter = self._pending.pop(message.get("id"), None)
            if waiter is None:
                continue
            if "error" in message:
                waiter.error = _error(message["error"])
            else:
                waiter.result = message.get("result")
            waiter.done.set()
        self._proc.wait()
        tail = "\n".join(self._stderr_tail)
        dead = RuntimeExited(
            "runtime_exited",
            f"msb api exited with code {self._proc.returncode}" + (f": {tail}" if tail else ""),
        )
        with self._lock:
            self._dead = dead
            waiters = list(self._pending.values())
            self._pending.clear()
            processes = list(self._processes.values())
            self._processes.clear()
        for waiter in waiters:
            waiter.error = dead
            waiter.done.set()
        for process in processes:
            process._event({"event": "dead", "_error": dead})

    def _send(self, method: str, params: Dict[str, Any]) -> _Pending:
        request_id = next(self._ids)
        waiter = _Pending()
        with self._lock:
            if self._dead is not None:
                raise self._dead
            self._pending[request_id] = waiter
        line = json.dumps({"id": request_id, "method": method, "params": params}) + "\n"
        try:
            with self._write_lock:
                assert self._proc.stdin is not None
                self._proc.stdin.write(line.encode())
                self._proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            waiter.done.wait(5)
            if not waiter.done.is_set():
                raise RuntimeExited("runtime_exited", "msb api is gone (its stdin is closed)")
        return waiter

    def _call(self, method: str, params: Dict[str, Any]) -> Any:
        waiter = self._send(method, params)
        waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error
        return waiter.result

    def _spawn(self, params: Dict[str, Any]) -> Process:
        result = self._call("spawn", params)
        process = Process(self, int(result["process"]))
        with self._lock:
            early = self._early_events.pop(process.id, [])
            for event in early:
                process._event(event)
            if not any(e["event"] in ("exit", "error") for e in early):
                self._processes[process.id] = process
        return process

    # -- the API ----------------------------------------------------------------------------

    def create(self, image: Optional[str] = None, *, name: Optional[str] = None, **options: Any) -> Sandbox:
        """Creates and starts a sandbox. Options are the SDK's (docs/api.md), in snake_case:
        cpus, memory_mib, env, workdir, user, network, allow, deny, ports, detached, labels, ..."""
        body: Dict[str, Any] = {_option_name(k): v for k, v in options.items() if v is not None}
        if image is not None:
            body["image"] = image
        if name is not None:
            body["name"] = name
        result = self._call("create", {"options": body})
        return Sandbox(self, result["name"], owned=True)

    def get(self, name: str) -> Sandbox:
        """Connects to a running sandbox by name (created by any process)."""
        return Sandbox(self, self._call("get", {"name": name})["name"], owned=False)

    def list(self) -> List[Dict[str, Any]]:
        return self._call("list", {})["sandboxes"]

    def remove(self, name: str, force: bool = False) -> None:
        self._call("remove", {"name": name, "force": force})

    def close(self) -> None:
        """Ends the session; sandboxes created here without detached=True stop."""
        try:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        for pipe in (self._proc.stdout, self._proc.stderr):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

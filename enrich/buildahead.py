"""Requests built ahead in a forked process when the event loop is the bottleneck.

Building a request (ranking candidates, filling the prompt, counting its tokens) depends only on what is
fixed before the calls start: the vault as scanned, the candidate index and the decided notes. A child is
forked at that point (before the run has threads or connections) and waits. Against a slow API the loop is
mostly idle and the child is simply ended, having touched nothing; when answers come back fast enough to
keep the loop busy (a local server), the pipeline starts it: it builds the requests from a given position
on, in the order the calls start, and streams back the parts the loop cannot rebuild cheaply. The loop reads
only a window ahead of the calls. A small run, one core, or no `fork` builds in the loop as before, and
anything the child did not deliver (it failed, or a build raised) is built in the loop, which reports the
error as it always did.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import struct
import sys
from collections.abc import Callable
from typing import Any

MIN_NOTES = 128  # below this, starting a process costs more than it saves
PROBE_NOTES = 64  # answers after which the pipeline decides whether the loop is the bottleneck
# Share of that time the loop spent on the CPU above which the child is started. The child costs CPU (pickling,
# copy-on-write faults, its own caches): about 0.25 ms per note on the bench. At 100 ms latency and 32 calls the
# loop reads 0.5-0.6 and keeps up without it (same makespan); at 50 ms it reads 0.7 and the child gained ~1%;
# at 20 ms it reads 0.9 and the child cut the makespan ~10%.
BUSY = 0.8
WINDOW = 256  # built requests held ahead of the calls
_HEADER = struct.Struct("<I")


def usable(count: int, mode: str = "auto") -> bool:
    """Whether to fork the child: never for "off"; wherever fork exists for "on"; for "auto" only on Linux (forking
    a process that has loaded system frameworks is unsafe on macOS), with enough notes and more than one core."""
    if mode == "off" or not hasattr(os, "fork"):
        return False
    return mode == "on" or (sys.platform.startswith("linux") and count >= MIN_NOTES and (os.cpu_count() or 1) > 1)


class BuildAhead:
    """A forked child calling build(0), build(1), ... and the loop-side reader of its results."""

    def __init__(self, count: int, build: Callable[[int], Any]) -> None:
        self._count = count
        self._build = build
        self._pid: int | None = None
        self._fd: int | None = None
        self._go: int | None = None  # write end of the pipe that tells the child where to start
        self.first: int | None = None  # position the child builds from, once started
        self._loop: asyncio.AbstractEventLoop | None = None
        self._buf = bytearray()
        self._ready: dict[int, Any] = {}
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._received = 0  # results read so far (they arrive in index order)
        self._reading = False
        self.ended = False  # the child finished or failed: what it did not send is built in the loop

    def fork(self) -> bool:
        """Fork the waiting child; False (nothing forked) when the system refuses."""
        self._loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        go_read, go_write = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # the child must not inherit unwritten output
        try:
            pid = os.fork()
        except OSError:
            for fd in (read_fd, write_fd, go_read, go_write):
                os.close(fd)
            return False
        if pid == 0:  # pragma: no cover - runs in the child, which leaves through os._exit
            os.close(read_fd)
            os.close(go_write)
            self._child(go_read, write_fd)
        os.close(write_fd)
        os.close(go_read)
        os.set_blocking(read_fd, False)
        self._pid, self._fd, self._go = pid, read_fd, go_write
        return True

    def start(self, first: int) -> None:
        """Let the child build the requests from position `first` on."""
        if self._go is None or self.first is not None:
            return
        self.first = first
        try:
            os.write(self._go, _HEADER.pack(first))
        except OSError:
            self.ended = True
            return
        self._resume()

    def _child(self, go: int, fd: int) -> None:  # pragma: no cover - runs in the child
        """Wait for the start position, build from there in order, write each as a length-prefixed pickle."""
        code = 0
        try:
            signal.set_wakeup_fd(-1)  # the parent's event loop owns that fd
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends us
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            start = os.read(go, _HEADER.size)
            if len(start) == _HEADER.size:  # else the parent closed the pipe: not needed
                with os.fdopen(fd, "wb", buffering=0) as out:
                    for i in range(_HEADER.unpack(start)[0], self._count):
                        try:
                            item = self._build(i)
                        except Exception:  # noqa: BLE001 - the loop builds this one again and reports why
                            item = None
                        data = pickle.dumps((i, item), protocol=pickle.HIGHEST_PROTOCOL)
                        out.write(_HEADER.pack(len(data)) + data)
        except BaseException:  # noqa: BLE001 - e.g. the parent closed the pipe: just stop
            code = 1
        finally:
            os._exit(code)

    async def get(self, i: int) -> Any:
        """The child's result for item i, or None when the loop should build it itself."""
        if i in self._ready:
            item = self._ready.pop(i)
            self._resume()
            return item
        if self.ended or self.first is None or i < max(self.first, self._received) or self._loop is None:
            return None
        future = self._loop.create_future()
        self._waiting[i] = future
        self._resume()
        try:
            return await future
        finally:
            self._waiting.pop(i, None)

    def _resume(self) -> None:
        """Read from the child while the window has room (or a call is waiting)."""
        if self._reading or self.ended or self.first is None or self._fd is None or self._loop is None:
            return
        if len(self._ready) < WINDOW or self._waiting:
            self._loop.add_reader(self._fd, self._on_readable)
            self._reading = True

    def _pause(self) -> None:
        """Stop reading: the child blocks on a full pipe until the calls catch up."""
        if self._reading and self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def _on_readable(self) -> None:
        """Take every complete result the pipe holds."""
        assert self._fd is not None
        try:
            chunk = os.read(self._fd, 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._end()
            return
        self._buf += chunk
        while len(self._buf) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buf)
            if len(self._buf) < _HEADER.size + size:
                break
            i, item = pickle.loads(self._buf[_HEADER.size : _HEADER.size + size])
            del self._buf[: _HEADER.size + size]
            self._deliver(i, item)
        if len(self._ready) >= WINDOW and not self._waiting:
            self._pause()

    def _deliver(self, i: int, item: Any) -> None:
        """Hand a result to the call waiting for it, or keep it until asked."""
        self._received = i + 1
        future = self._waiting.get(i)
        if future is not None and not future.done():
            future.set_result(item)
        else:
            self._ready[i] = item

    def _end(self) -> None:
        """The child is gone: every waiting call builds its own request."""
        self.ended = True
        self._pause()
        for future in self._waiting.values():
            if not future.done():
                future.set_result(None)

    def close(self) -> None:
        """Stop reading, end the child if it still runs, and reap it."""
        self._pause()
        self.ended = True
        for fd in (self._fd, self._go):
            if fd is not None:
                os.close(fd)
        self._fd = self._go = None
        if self._pid is not None:
            try:
                os.kill(self._pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(self._pid, 0)
            except ChildProcessError:
                pass
            self._pid = None
        self._ready.clear()

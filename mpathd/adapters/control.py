"""The control socket: a Unix stream socket speaking one JSON object per line.

Request:  {"cmd": "status"}            Reply: {"ok": true, "result": {...}}
                                              {"ok": false, "error": "..."}

One request per connection. The server side never blocks the daemon: every
socket is non-blocking, a request is limited in size and in time, and the
reply is written as the peer reads it.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import stat
import struct
import time
from dataclasses import dataclass
from typing import Callable

DEFAULT_PATH = "/run/mpathd/control.sock"
MAX_REQUEST = 64 * 1024           # bytes; a status request is ~20
CLIENT_TIMEOUT_S = 2.0            # a slow client is cut off, never waited for
MAX_CLIENTS = 64                  # connections at once; beyond that new ones are closed at once
MAX_CLIENTS_PER_UID = 8           # so that one unprivileged user cannot take them all


class ControlError(Exception):
    """A request that cannot be served; the text goes back to the client."""


@dataclass(frozen=True)
class Command:
    """One request the daemon serves: `run(request, peer)` returns the
    result; only root may send one that is not read-only."""
    run: Callable[[dict, "Peer"], dict]
    read_only: bool


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


def peer_of(sock: socket.socket) -> Peer:
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return Peer(pid, uid, gid)


class _Client:
    def __init__(self, sock: socket.socket, now: float, uid: int):
        self.sock, self.uid = sock, uid
        self.deadline = now + CLIENT_TIMEOUT_S
        self.inbuf = b""
        self.outbuf = b""


class ControlServer:
    """Registers itself and its clients with the daemon's selector."""

    def __init__(self, path: str, commands: dict[str, Command],
                 selector: selectors.BaseSelector, clock: Callable[[], float] = time.monotonic):
        self.path, self.commands, self.sel, self.clock = path, commands, selector, clock
        directory = os.path.dirname(path) or "."
        if not os.path.isdir(directory):
            os.makedirs(directory, exist_ok=True)
            os.chmod(directory, 0o755)         # whatever the umask: anyone may reach the socket
        self._claim(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        old = os.umask(0o111)
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o666)             # anyone may ask; SO_PEERCRED decides what they may do
        self.sock.listen(128)
        self.clients: dict[int, _Client] = {}
        self.sel.register(self.sock, selectors.EVENT_READ, self._accept)

    @staticmethod
    def _claim(path: str) -> None:
        """Remove a stale socket; refuse to start beside a live daemon."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)
            return
        finally:
            probe.close()
        raise OSError(f"another mpathd is already serving {path}")

    def close(self) -> None:
        for c in list(self.clients.values()):
            self._drop(c)
        self.sel.unregister(self.sock)
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def next_deadline(self) -> float | None:
        if not self.clients:
            return None
        return min(c.deadline for c in self.clients.values())

    def expire(self) -> None:
        now = self.clock()
        for c in [c for c in self.clients.values() if c.deadline <= now]:
            self._drop(c)

    def _accept(self) -> None:
        for _ in range(MAX_CLIENTS):
            try:
                sock, _ = self.sock.accept()
            except BlockingIOError:
                return
            except OSError:                       # out of file descriptors, say: try again later
                return
            uid = peer_of(sock).uid
            if (len(self.clients) >= MAX_CLIENTS
                    or (uid != 0 and sum(1 for c in self.clients.values() if c.uid == uid) >= MAX_CLIENTS_PER_UID)):
                sock.close()
                continue
            sock.setblocking(False)
            client = _Client(sock, self.clock(), uid)
            self.clients[sock.fileno()] = client
            self.sel.register(sock, selectors.EVENT_READ, lambda c=client: self._read(c))

    def _drop(self, c: _Client) -> None:
        self.clients.pop(c.sock.fileno(), None)
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    def _read(self, c: _Client) -> None:
        try:
            data = c.sock.recv(MAX_REQUEST + 1)
        except BlockingIOError:
            return
        except OSError:
            self._drop(c)
            return
        c.inbuf += data
        if b"\n" not in c.inbuf and data and len(c.inbuf) <= MAX_REQUEST:
            return
        if len(c.inbuf.split(b"\n", 1)[0]) > MAX_REQUEST:
            reply = {"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"}
        elif not c.inbuf.strip():
            self._drop(c)
            return
        else:
            reply = self._serve(c.inbuf.split(b"\n", 1)[0], c.sock)
        c.outbuf = json.dumps(reply).encode() + b"\n"
        self.sel.modify(c.sock, selectors.EVENT_WRITE, lambda: self._write(c))
        self._write(c)

    def _serve(self, line: bytes, sock: socket.socket) -> dict:
        try:
            req = json.loads(line)
            if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                raise ControlError('a request is a JSON object with a "cmd" string')
            peer = peer_of(sock)
            command = self.commands.get(req["cmd"])
            if (command is None or not command.read_only) and peer.uid != 0:
                raise ControlError(f"{req['cmd']!r} needs root (you are uid {peer.uid})")
            if command is None:
                raise ControlError(f"unknown command {req['cmd']!r}")
            return {"ok": True, "result": command.run(req, peer)}
        except (ValueError, UnicodeDecodeError, RecursionError):
            return {"ok": False, "error": "request is not valid JSON"}
        except ControlError as e:
            return {"ok": False, "error": str(e)}

    def _write(self, c: _Client) -> None:
        try:
            sent = c.sock.send(c.outbuf)
        except BlockingIOError:
            return
        except OSError:
            self._drop(c)
            return
        c.outbuf = c.outbuf[sent:]
        if not c.outbuf:
            self._drop(c)


def request(path: str, cmd: str, timeout: float = 5.0, **args) -> dict:
    """Send one request and return the result; raise ControlError with a
    sentence an operator can act on."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(f"cannot contact mpathd at {path} -- is it running?") from None
        except PermissionError:
            raise ControlError(f"permission denied on {path}") from None
        sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
    except socket.timeout:
        raise ControlError(f"mpathd did not answer within {timeout:.0f} s") from None
    except OSError as e:
        raise ControlError(f"talking to mpathd at {path}: {e.strerror or e}") from None
    finally:
        sock.close()
    try:
        reply = json.loads(data)
    except ValueError:
        raise ControlError("mpathd sent a reply that is not JSON") from None
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "request failed"))
    return reply["result"]

"""A process that listens on command, for discovery's integration tests.

Reads one command per line on stdin, answers one JSON line on stdout:
  listen <4|6> <address> [port] [reuseport]   -> {"port": P, "inode": I}
  autolisten <4|6>                            -> listen() without bind(): the kernel picks the port
  close <port>                                -> {"closed": P}
  fork                                        -> {"child": pid}  (the child keeps every socket and sleeps)
  forkexec <path> [args...]                   -> {"child": pid}  (the child execs, keeping every socket)
  exec <path> [args...]                       -> (no answer) exec with the sockets kept open
  exit                                        -> exits
Sockets are inheritable so they survive fork and exec. Only the standard library is used, so
it runs under any python3, inside `ip netns exec` too.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

sockets: dict[int, socket.socket] = {}


def answer(value: object) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


def main() -> None:
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        command, rest = words[0], words[1:]
        if command in ("listen", "autolisten"):
            family = socket.AF_INET6 if rest[0] == "6" else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.set_inheritable(True)
            if "reuseport" in rest:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if command == "listen":
                port = int(rest[2]) if len(rest) > 2 and rest[2].isdigit() else 0
                sock.bind((rest[1], port))
            sock.listen()
            port = sock.getsockname()[1]
            sockets[port] = sock
            answer({"port": port, "inode": os.fstat(sock.fileno()).st_ino, "listened_ns": time.monotonic_ns()})
        elif command == "close":
            sockets.pop(int(rest[0])).close()
            answer({"closed": int(rest[0])})
        elif command == "fork":
            child = os.fork()
            if child == 0:
                sys.stdin.close()
                while True:
                    time.sleep(3600)
            answer({"child": child})
        elif command == "forkexec":
            child = os.fork()
            if child == 0:
                os.execv(rest[0], rest)
            answer({"child": child})
        elif command == "exec":
            os.execv(rest[0], rest)
        elif command == "exit":
            return


if __name__ == "__main__":
    main()

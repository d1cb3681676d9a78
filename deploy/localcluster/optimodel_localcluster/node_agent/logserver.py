"""The slice of the kubelet's HTTPS API that `kubectl logs` needs: GET /containerLogs/<ns>/<pod>/<container>.

One server per simulated node on 127.0.0.1:<kubeletEndpoint port>, serving with
<state-dir>/pki/kubelet-serving.crt and accepting only clients with a certificate from the cluster CA
(the API server's kubelet client certificate). Query parameters: follow, previous, tailLines, limitBytes.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from . import records

log = logging.getLogger(__name__)


def find_pod_dir(state_dir: Path, namespace: str, pod: str) -> Path | None:
    """The newest folder of a pod with that name (a recreated pod has a new uid)."""
    candidates = [p for p in records.pods_root(state_dir).glob(f"{namespace}_{pod}_*") if p.is_dir()]
    prefix = f"{namespace}_{pod}_"
    # The uid follows the last underscore-separated prefix; names themselves contain no underscore.
    candidates = [p for p in candidates if "_" not in p.name[len(prefix):]]
    if not candidates:
        return None
    return max(candidates, key=lambda p: p.stat().st_mtime)


def tail_lines(data: bytes, count: int) -> bytes:
    if count < 0:
        return data
    lines = deque(data.splitlines(keepends=True), maxlen=count)
    return b"".join(lines)


def make_handler(state_dir: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            log.debug("log server: " + format, *args)

        def _reply(self, code: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            url = urlsplit(self.path)
            parts = [unquote(p) for p in url.path.split("/") if p]
            if parts == ["healthz"]:
                self._reply(200, b"ok")
                return
            if len(parts) != 4 or parts[0] != "containerLogs":
                self._reply(404, b"the optimodel node agent serves only /containerLogs and /healthz\n")
                return
            _, namespace, pod, container = parts
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            directory = find_pod_dir(state_dir, namespace, pod)
            if directory is None:
                self._reply(404, f"pod {namespace}/{pod} has no logs on this node\n".encode())
                return
            previous = query.get("previous", "false").lower() == "true"
            path = directory / (f"{container}.previous.log" if previous else f"{container}.log")
            if not path.exists():
                what = "previous terminated container" if previous else "container"
                self._reply(404, f'{what} "{container}" in pod "{pod}" has no log\n'.encode())
                return
            data = path.read_bytes()
            if "tailLines" in query:
                data = tail_lines(data, int(query["tailLines"]))
            if "limitBytes" in query:
                data = data[: int(query["limitBytes"])]
            follow = query.get("follow", "false").lower() == "true" and not previous
            if not follow:
                self._reply(200, data)
                return
            self._follow(path, data, directory / "run" / f"{container}.exit")

        def _follow(self, path: Path, first: bytes, exit_file: Path) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

            def chunk(data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            try:
                if first:
                    chunk(first)
                position = path.stat().st_size
                while True:
                    size = path.stat().st_size if path.exists() else 0
                    if size > position:
                        with path.open("rb") as handle:
                            handle.seek(position)
                            data = handle.read(size - position)
                        position = size
                        chunk(data)
                    elif exit_file.exists() or size < position:
                        break  # the run ended (or a restart rotated the file)
                    time.sleep(0.3)
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass

    return Handler


class LogServers:
    def __init__(self, state_dir: Path, ports: dict[str, int]) -> None:
        self.state_dir = state_dir
        self.ports = ports
        self.servers: list[ThreadingHTTPServer] = []
        self._stopped = threading.Event()

    def _tls(self) -> ssl.SSLContext | None:
        pki = self.state_dir / "pki"
        cert, key, ca = pki / "kubelet-serving.crt", pki / "kubelet-serving.key", pki / "ca.crt"
        if not (cert.exists() and key.exists() and ca.exists()):
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        context.load_verify_locations(ca)
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    def start(self) -> None:
        tls = self._tls()
        if tls is None:
            log.warning("no %s/pki/kubelet-serving.crt: `kubectl logs` is unavailable, logs stay in %s",
                        self.state_dir, records.pods_root(self.state_dir))
            return
        waiting = {node: port for node, port in self.ports.items() if not self._serve(node, port, tls, quiet=False)}
        if waiting:
            threading.Thread(target=self._retry, args=(waiting, tls), name="logs-retry", daemon=True).start()

    def _serve(self, node: str, port: int, tls: ssl.SSLContext, quiet: bool) -> bool:
        try:
            server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(self.state_dir))
        except OSError as error:
            if not quiet:
                log.warning("node %s: cannot serve logs on port %s yet (%s); retrying every 5s", node, port, error)
            return False
        server.daemon_threads = True
        server.socket = tls.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, name=f"logs-{node}", daemon=True).start()
        self.servers.append(server)
        return True

    def _retry(self, waiting: dict[str, int], tls: ssl.SSLContext) -> None:
        # A port still held by a previous agent that is shutting down frees up within seconds.
        while waiting and not self._stopped.wait(5):
            for node, port in list(waiting.items()):
                if self._serve(node, port, tls, quiet=True):
                    log.info("node %s: serving logs on port %s", node, port)
                    del waiting[node]

    def stop(self) -> None:
        self._stopped.set()
        for server in self.servers:
            server.shutdown()
            server.server_close()

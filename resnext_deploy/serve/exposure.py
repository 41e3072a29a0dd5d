"""What a local server exposes: the listening sockets of this process and every process under
it (the local Ray: GCS, raylet, agents, Serve's controller, proxy and replicas), and the check
that nothing listens beyond loopback except the endpoints the operator asked for."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from resnext_deploy.errors import ServeError


@dataclass(frozen=True)
class Listener:
    """One listening socket: the process that holds it and the address it accepts on."""

    pid: int
    process: str
    ip: str
    port: int

    @property
    def address(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{host}:{self.port}"

    def describe(self) -> str:
        where = " (every interface)" if is_wildcard(self.ip) else ""
        return f"{self.process} (pid {self.pid}) on {self.address}{where}"


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1, and IPv4 loopback mapped into IPv6 (``::ffff:127.0.0.1``, how a
    dual-stack server bound to 127.0.0.1 shows)."""
    address = _address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def is_wildcard(ip: str) -> bool:
    return _address(ip).is_unspecified


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address without its IPv6 scope (``fe80::1%eth0``): one form to compare."""
    return ipaddress.ip_address(text.split("%")[0])


def process_tree_listeners() -> list[Listener]:
    """The TCP sockets listening, and UDP sockets bound, in this process and its descendants."""
    import psutil

    me = psutil.Process()
    tree = {p.pid: p for p in [me, *me.children(recursive=True)]}
    try:
        sockets = [(c.pid, c) for c in psutil.net_connections(kind="inet") if c.pid in tree]
    except psutil.AccessDenied:  # macOS lists every process's sockets to root only
        sockets = [(pid, c) for pid, p in tree.items() for c in _own_sockets(p)]
    found = {
        Listener(pid, _name(tree[pid]), conn.laddr.ip, conn.laddr.port)
        for pid, conn in sockets
        if conn.laddr
        and (
            conn.status == psutil.CONN_LISTEN or (conn.type == socket.SOCK_DGRAM and not conn.raddr)
        )
    }
    return sorted(found, key=lambda item: (item.pid, item.port))


def _own_sockets(process: Any) -> list[Any]:
    import psutil

    try:
        return list(process.net_connections(kind="inet"))
    except psutil.Error:  # gone since it was listed
        return []


def _name(process: Any) -> str:
    import psutil

    try:
        cmdline = process.cmdline()
        # Ray names its workers ray::ServeReplica:app:deployment; its servers are binaries.
        first = cmdline[0] if cmdline else process.name()
        return str(first).rsplit("/", 1)[-1][:60]
    except psutil.Error:
        return "?"


def endpoints(host: str, ports: Iterable[int]) -> set[tuple[str, int]]:
    """(address, port) for every address ``host`` names (an address, or a name resolved)."""
    try:
        addresses = {str(_address(host))}
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except OSError:
            infos = []
        addresses = {str(_address(str(info[4][0]))) for info in infos}
    return {(address, port) for address in addresses for port in ports}


def exposed(listeners: Iterable[Listener], allowed: set[tuple[str, int]]) -> list[Listener]:
    """The listeners beyond loopback other than the ``allowed`` (address, port) endpoints
    (addresses as :func:`endpoints` writes them)."""
    return [
        item
        for item in listeners
        if not is_loopback(item.ip) and (str(_address(item.ip)), item.port) not in allowed
    ]


def check_not_exposed(allowed: set[tuple[str, int]]) -> None:
    """Raise :class:`ServeError` naming every socket of the process tree that listens beyond
    loopback, other than the ``allowed`` endpoints (the server's own HTTP and gRPC ports)."""
    beyond = exposed(process_tree_listeners(), allowed)
    if beyond:
        shown = "; ".join(item.describe() for item in beyond[:6])
        more = f" and {len(beyond) - 6} more" if len(beyond) > 6 else ""
        raise ServeError(
            f"refusing to serve: {shown}{more} listen beyond loopback, and only the server's "
            "own ports may (this Ray binds them where serve cannot move them; deploy to a "
            "cluster you secure, with --address)"
        )

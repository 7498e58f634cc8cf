"""What keeps a web page from driving a local server that has no API key.

- DNS rebinding: a page on attacker.example whose name is made to resolve to 127.0.0.1 reaches the
  server as same-origin, but its requests carry `Host: attacker.example`. Only IP addresses,
  localhost (and *.localhost, which browsers resolve to loopback themselves) and the names in
  `allowed_hosts` are served; others get 403.
- Cross-site requests: a page may send `text/plain` or form bodies anywhere without asking, but a
  JSON body makes the browser ask first (a CORS preflight), which is refused unless the page's
  origin is in `cors_origins`. So the JSON endpoints accept only `application/json` (415 otherwise;
  see plumbing.parse_body). Besides, a request whose `Origin` (which browsers add) is neither the
  server itself nor in `cors_origins` gets 403; programs that send no Origin are not affected.
"""
from __future__ import annotations

import ipaddress

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from nemotron.server.errors import error_body


def host_name(header: str) -> str:
    """The name of a Host header value, without port and brackets, lower-cased."""
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:8000
        return header[1:header.find("]")] if "]" in header else header
    name, _, port = header.rpartition(":")
    return name if name and port.isdigit() else header


def is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostGuardMiddleware:
    def __init__(self, app: ASGIApp, allowed_hosts: tuple[str, ...], cors_origins: tuple[str, ...] = ()) -> None:
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.allowed = {h.lower().strip("[]") for h in allowed_hosts}
        self.origins = {o.lower().rstrip("/") for o in cors_origins}

    def allows(self, header: str) -> bool:
        name = host_name(header)
        return (self.any_host or name in self.allowed or name == "localhost" or name.endswith(".localhost")
                or is_ip_address(name))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        origin = headers.get(b"origin", b"").decode("latin-1").lower().rstrip("/")
        if host and not self.allows(host):  # HTTP/1.0 requests may carry no Host
            message = (f"this server does not answer for the host name {host_name(host)!r}; start it with "
                       f"--allowed-hosts {host_name(host)} to allow it")
            await JSONResponse(error_body(403, message, code="host_not_allowed"), 403)(scope, receive, send)
        elif origin and origin not in self.origins and origin.partition("://")[2] != host.lower():
            message = (f"web pages from {origin} may not call this server; start it with --cors-origins "
                       f"{origin} to allow them")
            await JSONResponse(error_body(403, message, code="origin_not_allowed"), 403)(scope, receive, send)
        else:
            await self.app(scope, receive, send)

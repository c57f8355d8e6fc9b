"""The console as tests run it: a real `megarouter console` process in front of a test
system's control plane, and an HTTP client that signs in and posts forms the way a browser
does (cookies kept, CSRF field taken from the page)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.conftest import System
from tests.harness import Service, start_service

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def start_console(system: System, tmp: Path, *extra: str, env: dict[str, str] | None = None,
                        name: str = "console") -> Service:
    return await start_service(name, [
        "console", "--listen", "127.0.0.1:0", "--control-plane", system.admin_address,
        "--proxy-url", system.base_url(), "--log-level", "debug", *extra,
    ], tmp / "logs", env=env)


def console_url(console: Service) -> str:
    return console.ready["url"]


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


@dataclass
class ConsoleClient:
    """A cookie-keeping HTTP client for one person's browser session."""
    url: str
    http: aiohttp.ClientSession

    @classmethod
    def open(cls, url: str) -> ConsoleClient:
        # unsafe=True: keep cookies from an IP-address host (aiohttp's jar drops them by default).
        return cls(url, aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)))

    async def close(self) -> None:
        await self.http.close()

    async def page(self, path: str) -> tuple[int, str]:
        async with self.http.get(self.url + path, allow_redirects=False) as response:
            return response.status, await response.text()

    async def sign_in(self, token: str, next_path: str = "/") -> aiohttp.ClientResponse:
        status, html = await self.page("/signin")
        assert status == 200, status
        async with self.http.post(self.url + "/signin/token", allow_redirects=False,
                                  data={"csrf": csrf_of(html), "token": token, "next": next_path}) as response:
            await response.read()
            return response

    async def post(self, path: str, data: dict, *, csrf_from: str = "/") -> tuple[int, str, str]:
        """POST a form with the CSRF token of the signed-in session (taken from `csrf_from`):
        (status, body, Location)."""
        _, html = await self.page(csrf_from)
        async with self.http.post(self.url + path, data={"csrf": csrf_of(html), **data},
                                  allow_redirects=False) as response:
            return response.status, await response.text(), response.headers.get("Location", "")

    def session_cookie(self) -> str:
        for cookie in self.http.cookie_jar:
            if cookie.key == "mr_console_session":
                return cookie.value
        return ""

"""The one HTTP core every client shares: endpoint, auth, error translation and paging.

Registry and job clients only call ``ServiceHttp.request`` / ``request_json`` / ``pages``;
this is the single place where httpx exceptions and error answers become ``FleetHubError``s.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import AsyncGenerator, Collection, Mapping
from os import PathLike
from types import TracebackType
from typing import Any, Self

import httpx

from hub import __version__
from job_client.credentials import ServiceCredentials
from job_client.errors import FleetHubConnectionError, FleetHubError, FleetHubTimeoutError, error_from_response
from job_client.models import Page

__all__ = ["API_VERSION", "DEFAULT_TIMEOUT", "FromConnectionString", "ServiceHttp", "decode_json", "endpoint_url"]

logger = logging.getLogger(__name__)

API_VERSION = "2021-04-12"
DEFAULT_TIMEOUT = 30.0
# The service's own bound on a method call is response + connect timeout; allow for the
# trip to the hub and back on top of it before giving up on the HTTP request.
_METHOD_TIMEOUT_MARGIN = 10.0


def endpoint_url(hostname: str, url: str | None = None) -> str:
    """The base URL: an explicit ``url`` wins, else ``https://{HostName}`` (HostName may carry a port)."""
    return (url or f"https://{hostname}").rstrip("/")


def _verify(ca_cert: str | PathLike[str] | None) -> ssl.SSLContext | bool:
    if ca_cert is None:
        return True
    return ssl.create_default_context(cafile=str(ca_cert))


class ServiceHttp:
    """An ``httpx.AsyncClient`` bound to one hub and one credential; an async context manager.

    ``transport`` replaces the network (an ``httpx.MockTransport`` or an ASGI transport in tests).
    """

    def __init__(
        self,
        credentials: ServiceCredentials,
        *,
        url: str | None = None,
        ca_cert: str | PathLike[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        api_version: str = API_VERSION,
    ) -> None:
        self._credentials = credentials
        self._api_version = api_version
        self._timeout = timeout
        self.base_url = endpoint_url(credentials.hostname, url)
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            verify=_verify(ca_cert),
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": f"fleethub-job-client/{__version__}", "Accept": "application/json"},
        )

    @classmethod
    def from_connection_string(
        cls,
        connection_string: str,
        *,
        url: str | None = None,
        ca_cert: str | PathLike[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> ServiceHttp:
        return cls(
            ServiceCredentials.from_connection_string(connection_string),
            url=url,
            ca_cert=ca_cert,
            timeout=timeout,
            transport=transport,
        )

    @property
    def credentials(self) -> ServiceCredentials:
        return self._credentials

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        read_timeout: float | None = None,
        accept: Collection[int] = (),
    ) -> httpx.Response:
        """Send one request; return the response when it succeeded (2xx or a status in ``accept``),
        raise the matching ``FleetHubError`` otherwise."""
        all_params: dict[str, str | int] = {"api-version": self._api_version}
        if params:
            all_params.update(params)
        all_headers = {"Authorization": self._credentials.token()}
        if headers:
            all_headers.update(headers)
        content: bytes | None = None
        if json_body is not None:
            content = json.dumps(json_body, separators=(",", ":")).encode()
            all_headers["Content-Type"] = "application/json; charset=utf-8"
        timeout = httpx.USE_CLIENT_DEFAULT if read_timeout is None else httpx.Timeout(self._timeout, read=read_timeout)
        try:
            response = await self._client.request(
                method, path, params=all_params, headers=all_headers, content=content, timeout=timeout
            )
        except httpx.TimeoutException as exc:
            raise FleetHubTimeoutError(f"{method} {self.base_url}{path} timed out: {exc}") from exc
        except httpx.TransportError as exc:
            detail = str(exc) or type(exc).__name__
            raise FleetHubConnectionError(f"{method} {self.base_url}{path} failed: {detail}") from exc
        if response.is_success or response.status_code in accept:
            return response
        error = error_from_response(response.status_code, response.headers, response.content)
        logger.debug("%s %s -> %s %s", method, path, response.status_code, error.code)
        raise error

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        read_timeout: float | None = None,
    ) -> Any:
        """``request`` and decode the JSON body (``None`` for an empty body)."""
        response = await self.request(
            method, path, json_body=json_body, params=params, headers=headers, read_timeout=read_timeout
        )
        return decode_json(response)

    async def pages(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str | int] | None = None,
        page_size: int = 100,
    ) -> AsyncGenerator[Page, None]:
        """Follow ``x-ms-continuation`` until the service stops sending one; each body is a JSON list."""
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        continuation: str | None = None
        while True:
            headers = {"x-ms-max-item-count": str(page_size)}
            if continuation:
                headers["x-ms-continuation"] = continuation
            response = await self.request(method, path, json_body=json_body, params=params, headers=headers)
            items = decode_json(response)
            if not isinstance(items, list):
                raise FleetHubError(
                    f"{method} {path}: expected a JSON list, got {type(items).__name__}",
                    status=response.status_code,
                    code="InvalidResponse",
                )
            following = response.headers.get("x-ms-continuation") or None
            yield Page(items, following, response.headers.get("x-ms-item-type"))
            if following is None:
                return
            if following == continuation:
                # A continuation that does not move would loop forever; that is a service bug.
                raise FleetHubError(
                    f"{method} {path}: the service repeated continuation token {following!r}",
                    status=response.status_code,
                    code="InvalidResponse",
                )
            continuation = following

    @staticmethod
    def method_read_timeout(response_timeout: int, connect_timeout: int) -> float:
        return float(response_timeout + connect_timeout) + _METHOD_TIMEOUT_MARGIN

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class FromConnectionString:
    """Gives a client class ``from_connection_string``: one place for the endpoint, CA and timeout
    options; the class only says, in ``_over_http``, how it wraps the ``ServiceHttp`` it then owns."""

    @classmethod
    def _over_http(cls, http: ServiceHttp) -> Self:
        raise NotImplementedError

    @classmethod
    def from_connection_string(
        cls,
        connection_string: str,
        *,
        url: str | None = None,
        ca_cert: str | PathLike[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Self:
        """A client that owns (and closes) its HTTP core; ``url`` overrides ``https://{HostName}``,
        ``ca_cert`` is the CA bundle for the hub's certificate, ``transport`` replaces the network."""
        http = ServiceHttp.from_connection_string(
            connection_string, url=url, ca_cert=ca_cert, timeout=timeout, transport=transport
        )
        return cls._over_http(http)


def decode_json(response: httpx.Response) -> Any:
    """The response's JSON body; an empty body is ``None``; junk raises ``FleetHubError``."""
    if not response.content:
        return None
    try:
        return json.loads(response.content)
    except ValueError as exc:
        raise FleetHubError(
            f"the service answered {response.status_code} with a body that is not JSON",
            status=response.status_code,
            code="InvalidResponse",
        ) from exc

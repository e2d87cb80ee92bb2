"""Fetching a document over HTTP(S), bounded in time and size: the one fetch that background
refreshers use (the list adapter's ``providerUrl``, the runtime's JWKS keys)."""

from __future__ import annotations

import aiohttp

from mixerd.adapter.secrets import redact_url

__all__ = ["FetchError", "fetch_bounded"]

_CHUNK = 64 * 1024


class FetchError(Exception):
    """The document could not be fetched; the message says why and from where."""


async def fetch_bounded(
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    what: str,
    limit_name: str,
    accept: str = "*/*",
) -> bytes:
    """GET ``url`` and return its body. Error messages show the URL without its secrets and name
    the document (``what``: "list", "JWKS") and the setting that bounds its size (``limit_name``).

    Only a ``200`` answer counts. The whole exchange must finish within ``timeout`` seconds and the
    (decoded) body must not exceed ``max_bytes``: a longer body is abandoned as soon as the limit is
    passed, so a huge or endless response costs at most ``max_bytes`` of memory.
    """
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    shown = redact_url(url)
    try:
        async with (
            aiohttp.ClientSession(timeout=client_timeout) as session,
            session.get(url, headers={"Accept": accept}) as resp,
        ):
            if resp.status != 200:
                raise FetchError(f"could not fetch {what} from {shown}: HTTP status {resp.status}")
            length = resp.content_length
            if length is not None and length > max_bytes:
                raise FetchError(
                    f"{what} from {shown} is {length} bytes, more than the limit of {max_bytes} ({limit_name})"
                )
            body = bytearray()
            async for chunk in resp.content.iter_chunked(_CHUNK):
                body += chunk
                if len(body) > max_bytes:
                    raise FetchError(
                        f"{what} from {shown} is more than the limit of {max_bytes} bytes ({limit_name})"
                    )
            return bytes(body)
    except TimeoutError:
        raise FetchError(
            f"could not fetch {what} from {shown}: no complete answer within {timeout:g}s"
        ) from None
    except aiohttp.ClientError as exc:
        reason = (str(exc) or type(exc).__name__).replace(url, shown)
        raise FetchError(f"could not fetch {what} from {shown}: {reason}") from None

"""TLS on mixerd's listeners: which files each listener serves, their validation, their rotation,
and the contexts the gRPC server and the aiohttp listeners serve them with.

Files per listener
==================

``--tls-cert``, ``--tls-key`` and ``--tls-client-ca`` apply to every listener;
``--<listener>-tls-cert``, ``-key`` and ``-client-ca`` (listeners ``grpc``, ``monitoring``,
``prometheus``, ``http-authz``) replace them for one listener, each part on its own. An empty
per-listener value turns that part off for the listener: ``--monitoring-tls-cert ''`` serves
monitoring in plaintext, ``--monitoring-tls-client-ca ''`` serves it over TLS without asking
for client certificates (kubelet probes and most Prometheus setups present none). A listener
serves TLS when it has a certificate; it then needs a key, and with a client CA bundle it
requires a client certificate signed by one of its CAs (a client without one fails the
handshake).

Rotation
========

Istio and Kubernetes replace certificate files rather than edit them, usually by swapping a
symlinked directory (``..data``) in one rename. Each distinct set of files is read again every
``--tls-reload-interval`` seconds (1) and compared byte for byte with what is in force; when it
changed, it is validated and loaded into a new SSL context, which the listeners use for every
handshake from then on (connections already open keep theirs). Polling is used rather than
file-change notifications (``watchfiles``, inotify): an inotify watch follows the inode it was
set on, which a symlink swap replaces, so a watch on the files misses the change and a watch on
their directories has to be re-established after every swap; notifications are also not
delivered on some volume types (NFS, some FUSE and CSI mounts) and count against per-user
limits. Reading three small files once a second costs nothing measurable and sees every kind of
change (rename, symlink swap, in-place write within one timestamp tick).

A change is taken only when the files read the same before and after loading them (a load
that straddles a swap is retried at the next poll). New files that do not load (a key that does
not match its certificate, a half-written file, a missing file) leave the certificate in force
and are logged once, as one line naming the file and the problem, when they read the same at
two polls in a row (a swap in progress is not an error); they are tried again whenever they
change. The first load, at start-up, has no fallback: any problem stops mixerd with that line.

Serving
=======

aiohttp (monitoring, prometheus adapter, HTTP authorization): the listener's context has an SNI
callback, which OpenSSL runs on every ClientHello (with or without a server name), switching the
connection to the newest context; the client-certificate requirement is the listener's, the
trusted CAs the newest context's. New files go into a new context rather than into the live one
with ``load_cert_chain``: a load that fails half way (a key that does not match) leaves a live
context with the new certificate and no usable key, failing every handshake, and
``load_verify_locations`` can add CAs to a live context but never remove one that left the
bundle. gRPC: ``grpc.dynamic_ssl_server_credentials`` whose fetcher, called by gRPC before each
handshake, returns a new certificate configuration once per change.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import logging
import re
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from mixerd.server.settings import TLS_LISTENERS, Settings

__all__ = [
    "LISTENERS",
    "CertificateSource",
    "Material",
    "TlsError",
    "TlsFiles",
    "certificate_facts",
    "check_settings",
    "enabled_listeners",
    "listener_files",
    "load_material",
    "open_sources",
]

_log = logging.getLogger("mixerd.tls")

LISTENERS: Final = tuple(TLS_LISTENERS)
"""Listener names, as in the settings (``<listener>_tls_cert`` ...)."""

TITLES: Final = TLS_LISTENERS

_MAX_FILE: Final = 1 << 20
_CERT_BLOCK: Final = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
_KEY_BEGIN: Final = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_MISMATCH: Final = frozenset({"KEY_VALUES_MISMATCH", "KEY_TYPE_MISMATCH"})
_START_ATTEMPTS: Final = 5


class TlsError(ValueError):
    """A TLS setting or file mixerd cannot serve; the message names the file (and flag) and says
    what is wrong."""


class _Changed(Exception):
    """The files changed while they were being loaded: try again."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The files one listener serves, with the flags they came from (for messages)."""

    cert: str
    key: str
    client_ca: str
    """Empty: client certificates are not asked for."""
    cert_flag: str = "--tls-cert"
    key_flag: str = "--tls-key"
    client_ca_flag: str = "--tls-client-ca"

    @property
    def client_auth(self) -> bool:
        """Clients must present a certificate signed by one of ``client_ca``'s CAs."""
        return bool(self.client_ca)

    @property
    def paths(self) -> tuple[str, str, str]:
        return (self.cert, self.key, self.client_ca)


def enabled_listeners(settings: Settings) -> list[str]:
    """The listeners a server with ``settings`` opens."""
    out = ["grpc", "monitoring"]
    if settings.prometheus_address:
        out.append("prometheus")
    if settings.http_authz_address:
        out.append("http_authz")
    return out


def listener_files(settings: Settings, listener: str) -> TlsFiles | None:
    """The TLS files of one listener (None: plaintext). ``TlsError`` for an incomplete setting."""
    title = TITLES[listener]

    def pick(part: str) -> tuple[str, str, bool]:
        own = getattr(settings, f"{listener}_tls_{part}")
        if own is not None:
            return str(own), _flag(f"{listener}_tls_{part}"), True
        return str(getattr(settings, f"tls_{part}")), _flag(f"tls_{part}"), False

    cert, cert_flag, _ = pick("cert")
    key, key_flag, own_key = pick("key")
    ca, ca_flag, own_ca = pick("client_ca")
    if not cert:
        for value, flag, own in ((key, key_flag, own_key), (ca, ca_flag, own_ca)):
            if value and own:
                raise TlsError(f"{flag} is set but the {title} listener has no certificate ({cert_flag})")
        return None
    if not key:
        raise TlsError(
            f"the {title} listener has a certificate ({cert_flag} {cert}) but no private key: set {key_flag}"
        )
    return TlsFiles(cert, key, ca, cert_flag, key_flag, ca_flag)


def check_settings(settings: Settings) -> dict[str, TlsFiles | None]:
    """The TLS files of every listener the server opens; ``TlsError`` for a setting that cannot
    work (a key or client CA without a certificate ...)."""
    files = {name: listener_files(settings, name) for name in enabled_listeners(settings)}
    if not settings.tls_cert and not any(files.values()):
        for part in ("key", "client_ca"):
            if getattr(settings, f"tls_{part}"):
                raise TlsError(
                    f"{_flag('tls_' + part)} is set but no listener has a certificate (--tls-cert)"
                )
    return files


# -- loading -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class Material:
    """One consistent, validated read of a listener's files, and the server context built from it."""

    data: tuple[bytes, bytes, bytes]
    """The certificate chain, key and client CA bundle (empty without one) as read."""
    context: ssl.SSLContext
    fingerprint: str
    """SHA-256 of the certificate (DER), in hex: what ``openssl x509 -fingerprint -sha256`` shows."""
    serial: str
    """The certificate's serial number in hex ('' if it could not be read)."""
    not_after: _dt.datetime | None

    def describe(self) -> str:
        until = f", valid until {self.not_after:%Y-%m-%d %H:%M:%SZ}" if self.not_after else ""
        return f"serial {self.serial or '?'}, sha256 {self.fingerprint[:16]}...{until}"


def _read(path: str, what: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_FILE + 1)
    except OSError as exc:
        raise TlsError(f"{what} {path} ({flag}): cannot read it: {exc.strerror or exc}") from None
    if len(data) > _MAX_FILE:
        raise TlsError(f"{what} {path} ({flag}): larger than 1 MiB, not a PEM file")
    return data


def _read_all(files: TlsFiles) -> tuple[bytes, bytes, bytes]:
    return (
        _read(files.cert, "TLS certificate", files.cert_flag),
        _read(files.key, "TLS private key", files.key_flag),
        _read(files.client_ca, "TLS client CA bundle", files.client_ca_flag) if files.client_ca else b"",
    )


def _reread(files: TlsFiles) -> tuple[bytes, bytes, bytes] | None:
    try:
        return _read_all(files)
    except TlsError:
        return None


def _text(data: bytes) -> str:
    return data.decode("latin-1")  # PEM blocks are ASCII; text around them may be anything


def _reason(exc: ssl.SSLError) -> str:
    reason = exc.reason or exc.strerror or str(exc)
    return str(reason).replace("_", " ").lower()


def _build(files: TlsFiles, data: tuple[bytes, bytes, bytes]) -> Material:
    """Validate ``data`` (read from ``files``) and load it into a new server context."""
    cert_data, key_data, ca_data = data
    cert_text = _text(cert_data)
    blocks = _CERT_BLOCK.findall(cert_text)
    if not blocks:
        raise TlsError(
            f"TLS certificate {files.cert} ({files.cert_flag}): no PEM certificate in it "
            "(-----BEGIN CERTIFICATE-----)"
        )
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cadata="\n".join(blocks))
        leaf = ssl.PEM_cert_to_DER_cert(blocks[0])
    except (ssl.SSLError, ValueError) as exc:
        reason = _reason(exc) if isinstance(exc, ssl.SSLError) else str(exc)
        raise TlsError(
            f"TLS certificate {files.cert} ({files.cert_flag}): not a valid PEM certificate: {reason}"
        ) from None
    key_text = _text(key_data)
    if _KEY_BEGIN.search(key_text) is None:
        raise TlsError(
            f"TLS private key {files.key} ({files.key_flag}): no PEM private key in it "
            "(-----BEGIN PRIVATE KEY-----)"
        )
    encrypted = TlsError(
        f"TLS private key {files.key} ({files.key_flag}): the key is encrypted; mixerd reads "
        "unencrypted keys only"
    )
    if "ENCRYPTED" in key_text:
        raise encrypted

    def no_password() -> bytes:  # OpenSSL would otherwise prompt on the terminal
        raise encrypted

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(files.cert, files.key, password=no_password)
    except ssl.SSLError as exc:
        if exc.reason in _MISMATCH:
            raise TlsError(
                f"TLS private key {files.key} ({files.key_flag}) does not match the certificate "
                f"{files.cert} ({files.cert_flag})"
            ) from None
        raise TlsError(
            f"TLS private key {files.key} ({files.key_flag}): cannot load it with the certificate "
            f"{files.cert}: {_reason(exc)}"
        ) from None
    except OSError as exc:  # a file went away since it was read
        raise TlsError(
            f"TLS files {files.cert}, {files.key}: cannot read them: {exc.strerror or exc}"
        ) from None
    if files.client_ca:
        cas = _CERT_BLOCK.findall(_text(ca_data))
        if not cas:
            raise TlsError(
                f"TLS client CA bundle {files.client_ca} ({files.client_ca_flag}): no PEM certificate "
                "in it (-----BEGIN CERTIFICATE-----)"
            )
        try:
            ctx.load_verify_locations(cadata="\n".join(cas))
        except (ssl.SSLError, ValueError) as exc:
            reason = _reason(exc) if isinstance(exc, ssl.SSLError) else str(exc)
            raise TlsError(
                f"TLS client CA bundle {files.client_ca} ({files.client_ca_flag}): not a valid PEM "
                f"certificate bundle: {reason}"
            ) from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    serial, not_after = certificate_facts(leaf)
    return Material(data, ctx, hashlib.sha256(leaf).hexdigest(), serial, not_after)


def _load(files: TlsFiles, data: tuple[bytes, bytes, bytes]) -> Material:
    """:func:`_build`, raising :class:`_Changed` instead when the files changed meanwhile (the
    context is loaded from the paths, so it holds what was read only if they did not)."""
    try:
        material = _build(files, data)
    except TlsError:
        if _reread(files) != data:
            raise _Changed from None
        raise
    if _reread(files) != data:
        raise _Changed
    return material


def load_material(files: TlsFiles) -> Material:
    """Read, validate and load ``files`` (at start-up). ``TlsError`` names the file and the problem."""
    for attempt in range(_START_ATTEMPTS):
        if attempt:
            time.sleep(0.05 * attempt)  # a swap in progress: let it finish
        try:
            return _load(files, _read_all(files))
        except _Changed:
            continue
    raise TlsError(f"TLS files {files.cert}, {files.key}: they kept changing while being read")


# -- a little DER, for the serial number and expiry in log lines ---------------------------------


def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at ``pos``."""
    tag = der[pos]
    length = der[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if not 0 < n <= 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(der[pos : pos + n], "big")
        pos += n
    if pos + length > len(der):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _der_time(tag: int, text: bytes) -> _dt.datetime:
    s = text.decode("ascii")
    fmt = "%y%m%d%H%M%SZ" if tag == 0x17 else "%Y%m%d%H%M%SZ"
    return _dt.datetime.strptime(s, fmt).replace(tzinfo=_dt.UTC)


def certificate_facts(der: bytes) -> tuple[str, _dt.datetime | None]:
    """The serial number (hex) and end of validity of a DER certificate; ('', None) when it
    cannot be read (they are only shown, never relied on)."""
    try:
        _, pos, _ = _tlv(der, 0)  # Certificate
        _, pos, _ = _tlv(der, pos)  # TBSCertificate
        tag, start, end = _tlv(der, pos)
        if tag == 0xA0:  # [0] version
            tag, start, end = _tlv(der, end)
        if tag != 0x02:
            return "", None
        serial = der[start:end].lstrip(b"\x00").hex().upper() or "0"
        _, _, end = _tlv(der, end)  # signature algorithm
        _, _, end = _tlv(der, end)  # issuer
        _, start, _ = _tlv(der, end)  # validity
        _, _, after = _tlv(der, start)  # notBefore
        tag, start, end = _tlv(der, after)  # notAfter
        return serial, _der_time(tag, der[start:end])
    except (ValueError, IndexError):
        return "", None


# -- watching ------------------------------------------------------------------------------------


class CertificateSource:
    """One set of TLS files: the material in force, and its reloading (see the module docstring).

    Build it with :func:`open_sources` (or directly, which loads the files and raises
    ``TlsError``); listeners take :meth:`server_context` (aiohttp) or :meth:`grpc_credentials`;
    :meth:`watch` polls the files until cancelled; :meth:`poll` is one such check.
    """

    def __init__(self, files: TlsFiles, *, interval: float = 1.0, users: Iterable[str] = ()) -> None:
        self.files = files
        self.interval = interval
        self.users = ", ".join(users) or "TLS"
        self._current: tuple[int, Material] = (0, load_material(files))
        self._lock = threading.Lock()
        self._failing: object = None
        """The (bytes or error of the) files last seen failing, until they change or load."""
        self._reported = False
        self._base: ssl.SSLContext | None = None
        self._warn_expired(self.material)

    @property
    def material(self) -> Material:
        """What new connections are served."""
        return self._current[1]

    @property
    def generation(self) -> int:
        """How many times a new certificate was taken since start-up."""
        return self._current[0]

    # -- serving -----------------------------------------------------------------------------

    def server_context(self) -> ssl.SSLContext:
        """The context of an asyncio/aiohttp listener: every handshake is switched to the newest
        material's context (by the SNI callback, which OpenSSL runs on every ClientHello)."""
        if self._base is None:
            base = self.material.context
            base.sni_callback = self._select
            self._base = base
        return self._base

    def _select(self, conn: Any, server_name: str | None, ctx: ssl.SSLContext) -> None:
        current = self._current[1].context
        if current is not ctx:
            conn.context = current

    def grpc_credentials(self) -> Any:
        """``grpc.ServerCredentials`` serving the newest material (requiring a client certificate
        when the files have a client CA bundle)."""
        import grpc

        def config(m: Material) -> Any:
            cert, key, ca = m.data
            return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca or None)

        served = [self.generation]

        def fetch() -> Any:  # called by gRPC before each handshake, on its own threads
            generation, material = self._current
            if generation == served[0]:
                return None  # keep the configuration in use
            served[0] = generation
            return config(material)

        return grpc.dynamic_ssl_server_credentials(
            config(self.material), fetch, require_client_authentication=self.files.client_auth
        )

    # -- reloading ---------------------------------------------------------------------------

    def poll(self) -> bool:
        """Read the files once; take them when they changed and load. Returns whether a new
        certificate was taken. File problems are logged (see the module docstring), not raised."""
        with self._lock:
            try:
                data = _read_all(self.files)
            except TlsError as exc:
                self._problem(("unreadable", str(exc)), exc)
                return False
            generation, current = self._current
            if data == current.data:
                if self._failing is not None and self._reported:
                    _log.info("%s: the TLS files are back to the certificate in use", self.users)
                self._failing = None
                return False
            try:
                material = _load(self.files, data)
            except _Changed:
                return False
            except TlsError as exc:
                self._problem(data, exc)
                return False
            self._current = (generation + 1, material)
            self._failing = None
            _log.info(
                "%s: serving the new TLS certificate %s (%s)",
                self.users,
                self.files.cert,
                material.describe(),
            )
            self._warn_expired(material)
            return True

    def _problem(self, seen: object, exc: TlsError) -> None:
        if seen != self._failing:
            self._failing = seen  # maybe a swap in progress: report it if it is still so next time
            self._reported = False
            return
        if not self._reported:
            self._reported = True
            _log.error(
                "%s: %s; keeping the certificate in use (%s), trying again when the files change",
                self.users,
                exc,
                self.material.describe(),
            )

    def _warn_expired(self, material: Material) -> None:
        if material.not_after is not None and material.not_after < _dt.datetime.now(_dt.UTC):
            _log.warning(
                "%s: the TLS certificate %s expired on %s", self.users, self.files.cert, material.not_after
            )

    async def watch(self) -> None:
        """Poll the files every ``interval`` seconds until cancelled (reads happen off the loop)."""
        while True:
            await asyncio.sleep(max(self.interval, 0.05))
            try:
                await asyncio.to_thread(self.poll)
            except Exception:  # never stop watching
                _log.exception("%s: checking the TLS files failed", self.users)


def open_sources(settings: Settings) -> dict[str, CertificateSource]:
    """A loaded :class:`CertificateSource` for every listener that serves TLS, listeners with the
    same files sharing one. ``TlsError`` (one line: the file and the problem) when a setting or a
    file is not usable."""
    files = check_settings(settings)
    users: dict[tuple[str, str, str], list[str]] = {}
    for name, f in files.items():
        if f is not None:
            users.setdefault(f.paths, []).append(TITLES[name])
    sources: dict[tuple[str, str, str], CertificateSource] = {}
    out: dict[str, CertificateSource] = {}
    for name, f in files.items():
        if f is None:
            continue
        source = sources.get(f.paths)
        if source is None:
            source = sources[f.paths] = CertificateSource(
                f, interval=settings.tls_reload_interval, users=users[f.paths]
            )
        out[name] = source
    return out

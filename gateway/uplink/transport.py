"""How batches travel to the central side: one interface, two carriers.

Carriage
--------
- MQTT (any 3.1.1/5 broker): the batch is published at QoS 1 to
  ``<prefix>/<outlet>/batch/<ch>/<id>``; the central side publishes the ack
  at QoS 1 to ``<prefix>/<outlet>/ack/<ch>/<id>`` (the same levels, ``batch``
  swapped for ``ack``); ``prefix`` defaults to ``pe-up/v1``. ``ch`` is the
  gateway connection's reply channel (``0``, ``1``, ... one per batch in
  flight), so each connection subscribes to its own acks only and no ack
  crosses the downlink twice: MQTT 3.1.1 has no response-topic property.
- HTTPS: ``POST <url>`` with ``Content-Type: application/vnd.postedge.batch+json``
  and ``Content-Encoding: deflate``, headers ``X-Postedge-Outlet`` and
  ``X-Postedge-Batch``; a 200 response carries the ack. ``HEAD <url>`` is the
  connectivity probe.

TLS only, always verified (hostname included); there is no code path that
speaks plaintext, so a misconfiguration cannot silently downgrade.
"""

from __future__ import annotations

import ssl
import threading

from common.uplink_codec import Ack, BatchError, Down, EncodedBatch, decode_ack, decode_down


class TransportError(Exception):
    """A batch or probe did not get through.

    ``reason`` is a short machine-readable cause (``refused``, ``timeout``,
    ``tls``, ``http_500``, ``no_ack``, ...). ``unreachable`` says the central
    side could not be reached at all (connection refused, reset, timed out,
    TLS failure), as opposed to being reached and answering badly: the syncer
    resumes on the first good probe after the former but waits out its
    backoff after the latter.
    """

    def __init__(self, reason: str, detail: str = "", unreachable: bool = True) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.unreachable = unreachable


def tls_context(ca_file: str | None, cert_file: str | None = None,
                key_file: str | None = None) -> ssl.SSLContext:
    """A client context that verifies the chain and the host name, TLS >= 1.2.

    Without ``ca_file`` the system trust store is used (a central side with
    a public certificate); verification is never switched off.
    """
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


def tls_reason(e: BaseException) -> TransportError:
    if isinstance(e, ssl.SSLCertVerificationError):
        return TransportError("tls_verify", e.verify_message or str(e))
    if isinstance(e, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        # Cut during the handshake (a dead backend behind a balancer or
        # relay): the link, not the certificate.
        return TransportError("connection", f"closed during TLS handshake: {e}")
    if isinstance(e, ssl.SSLError):
        return TransportError("tls", str(e))
    if isinstance(e, ConnectionRefusedError):
        return TransportError("refused", str(e))
    if isinstance(e, TimeoutError):
        return TransportError("timeout", str(e) or "timed out")
    if isinstance(e, ConnectionError):
        return TransportError("connection", f"{type(e).__name__}: {e}")
    return TransportError("network", f"{type(e).__name__}: {e}")


class Transport:
    """What the syncer needs: send a batch and get its ack, probe, close."""

    # Framing bytes per batch beyond the body, charged to the bandwidth cap.
    overhead = 0
    # Set by the syncer: a wait inside send() ends early when it is set.
    cancel: threading.Event | None = None

    def send(self, batch: EncodedBatch) -> Ack:
        raise NotImplementedError

    def probe(self) -> None:
        raise NotImplementedError

    def pull(self, after: int) -> Down:
        """Commands after cursor ``after`` (which acks those up to it)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


def down_of(data: bytes) -> Down:
    try:
        return decode_down(data)
    except BatchError as e:
        raise TransportError("bad_down", str(e), unreachable=False) from e


def ack_for(data: bytes, batch: EncodedBatch) -> Ack:
    """The central side's ack, which must be for this very batch."""
    try:
        ack = decode_ack(data)
    except BatchError as e:
        raise TransportError("bad_ack", str(e), unreachable=False) from e
    if ack.batch != batch.id:
        raise TransportError("bad_ack", f"ack for {ack.batch}, sent {batch.id}", unreachable=False)
    return ack


# TLS to the outlet broker: the device trusts the outlet CA alone.
#
# `provision` (gateway/provision.py) writes the outlet CA's certificate into
# each device's config as PEM (broker.ca) next to the TLS port (8883). The
# broker's server certificate must chain to that CA and name the host the
# device dials (broker.server_hostname, or broker.host): a certificate from
# any other CA, or for another name, fails the handshake and the client
# backs off and retries as after any failed connect.
#
# MicroPython's ssl (mbedTLS) takes the CA as DER: the unix port's mbedTLS is
# built without PEM parsing ("invalid cert" for any PEM), so the PEM body is
# decoded here, which every port accepts. mbedTLS 3.6 speaks TLS 1.2 and 1.3
# only; CPython (the simulator's in-process devices) is held to 1.2 too.
#
# Waiting on the TLS socket (MicroPython). asyncio's stream over a TLS
# socket waits in select.poll on the TLS object, which has no file
# descriptor; the poll then checks it in a loop with 1 ms sleeps, even for a
# poll(0) (1.1 ms per call on the unix port, measured), and asyncio polls on
# every pass of its loop: 150-220 QoS 1 msg/s. TLSStream instead waits on the
# TCP socket's descriptor and drives the TLS object without blocking: a read
# first takes what mbedTLS has already decrypted and waits for the socket
# only when mbedTLS wants more (read returns None), so nothing buffered
# inside mbedTLS is ever left waiting.

import asyncio
import binascii
import ssl
import sys

MICROPYTHON = sys.implementation.name == "micropython"

BEGIN = "-----BEGIN CERTIFICATE-----"
END = "-----END CERTIFICATE-----"


class TLSConfigError(ValueError):
    pass


def pem_to_der(pem):
    """The DER bytes of the first certificate in a PEM text."""
    if isinstance(pem, bytes):
        pem = pem.decode()
    i = pem.find(BEGIN)
    j = pem.find(END)
    if i < 0 or j < i:
        raise TLSConfigError("not a PEM certificate")
    body = "".join(pem[i + len(BEGIN):j].split())
    try:
        der = binascii.a2b_base64(body)
    except Exception:
        raise TLSConfigError("PEM certificate is not base64")
    if len(der) < 64 or der[0] != 0x30:
        raise TLSConfigError("PEM certificate does not hold a DER certificate")
    return der


def client_context(ca):
    """An SSLContext that verifies the server against `ca` (PEM text or DER
    bytes) and its host name; CERT_REQUIRED."""
    der = ca if isinstance(ca, bytes) and ca[:1] == b"\x30" else pem_to_der(ca)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # CPython; mbedTLS is >= 1.2 anyway
    except AttributeError:
        pass
    try:
        ctx.load_verify_locations(cadata=der)
    except Exception as e:
        raise TLSConfigError("the CA certificate is not usable: %s" % e)
    return ctx


def _io_wait(sock, write):
    # A MicroPython awaitable: park the task on the socket, as asyncio's
    # own Stream does (asyncio.core's IO queue).
    q = asyncio.core._io_queue
    yield q.queue_write(sock) if write else q.queue_read(sock)


class TLSStream:
    """The reader and writer of one TLS connection (MicroPython); the subset
    of asyncio's Stream the MQTT client uses."""

    def __init__(self, tls, raw):
        self.tls = tls
        self.raw = raw
        self.out = b""
        self.shook = False  # a write has gone through: the handshake is done

    async def read(self, n):
        while True:
            d = self.tls.read(n)  # ValueError/OSError: the handshake failed
            if d is not None:
                return d  # b"": closed
            await _io_wait(self.raw, False)

    async def readexactly(self, n):
        buf = b""
        while len(buf) < n:
            d = await self.read(n - len(buf))
            if not d:
                raise EOFError("closed after %d of %d bytes" % (len(buf), n))
            buf += d
        return buf

    def write(self, buf):
        if not self.out:
            k = self.tls.write(buf)
            if k is not None:
                self.shook = True
                if k == len(buf):
                    return
                buf = buf[k:]
        self.out += buf

    async def drain(self):
        while self.out:
            # Before the handshake is done mbedTLS waits for the server's
            # flight (read); afterwards only for room in the socket (write).
            await _io_wait(self.raw, self.shook)
            k = self.tls.write(self.out)
            if k is not None:
                self.shook = True
                self.out = self.out[k:]
        await asyncio.sleep_ms(0)  # as asyncio's drain: always yield

    def close(self):
        try:
            self.tls.close()
        except Exception:
            pass
        try:
            self.raw.close()
        except Exception:
            pass

    async def wait_closed(self):
        self.close()


async def open_connection(host, port, ctx, server_hostname):
    """(reader, writer) of a TLS connection verified by `ctx` against
    `server_hostname`. The handshake runs on the first write and read."""
    if not MICROPYTHON:
        return await asyncio.open_connection(host, port, ssl=ctx, server_hostname=server_hostname)
    _r, w = await asyncio.open_connection(host, port)  # TCP, non-blocking
    raw = w.s
    try:
        tls = ctx.wrap_socket(raw, server_hostname=server_hostname, do_handshake_on_connect=False)
    except Exception:
        raw.close()
        raise
    tls.setblocking(False)
    st = TLSStream(tls, raw)
    return st, st

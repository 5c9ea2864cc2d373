"""The outlet CA on the handheld: the broker (MQTT over TLS on
8883) and the gateway's HTTPS (command status, photo uploads) are trusted
only when their certificate chains to the outlet CA that provisioning gave
this handheld, and names the host the handheld dialled. No system CA is
loaded: a certificate from any public CA, or from another outlet's, is
refused, so a rogue access point on the Wi-Fi cannot pose as the gateway
and collect the courier's login or the permits it forwards."""

from __future__ import annotations

import ssl


def context(ca_pem: str) -> ssl.SSLContext | None:
    """A client context that trusts ``ca_pem`` alone (TLS 1.2+, hostname
    checked); None when there is no CA (plain MQTT and HTTP, tests and
    rigs). Raises ssl.SSLError for text that holds no certificate."""
    if not ca_pem:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=ca_pem)
    return ctx

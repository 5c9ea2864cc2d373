"""The address a person is told to open (never 0.0.0.0)."""

from __future__ import annotations

from common.web_server import lan_address, open_url


def test_a_wildcard_bind_is_told_as_the_boxs_lan_address() -> None:
    lan = lan_address()
    assert lan != "0.0.0.0"
    assert open_url("https", "0.0.0.0", 8080) == f"https://{lan}:8080/"
    assert open_url("http", "::", 80) == f"http://{lan}:80/"
    assert open_url("http", "192.168.4.1", 8080) == "http://192.168.4.1:8080/"
    assert open_url("http", "::1", 8080) == "http://[::1]:8080/"

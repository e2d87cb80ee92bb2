"""Secrets stay out of messages: URLs with credentials are redacted in errors and logs."""

from __future__ import annotations

import logging

import pytest

from mixerd.adapter import redact_url
from mixerd.adapters.list.fetch import FetchError, fetch_list
from mixerd.adapters.redisquota.config import parse_config
from tests.support.net import free_port


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://bob:hunter2@lists.example/ips?token=abc&fmt=txt",
            "https://bob:***@lists.example/ips?token=***&fmt=txt",
        ),
        ("redis://:hunter2@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://user@h:1", "redis://user@h:1"),
        (
            "http://h/x?api_key=k&X-Amz-Signature=s&page=2",
            "http://h/x?api_key=***&X-Amz-Signature=***&page=2",
        ),
        ("redis://u:hunter2@h:notaport", "redis://***"),
        ("http://plain.example/list", "http://plain.example/list"),
        # an empty authority keeps its "//"
        ("postgresql:///db?host=/run/postgresql", "postgresql:///db?host=/run/postgresql"),
        ("sqlite:////var/lib/mixerd/console.db", "sqlite:////var/lib/mixerd/console.db"),
        # several hosts in the authority (Redis Cluster and Sentinel, PostgreSQL multi-host)
        ("redis+cluster://u:hunter2@a:7000,b:7001", "redis+cluster://u:***@a:7000,b:7001"),
        (
            "rediss+sentinel://:hunter2@a:26379,[::1]:26380/mymaster?sentinel_password=s",
            "rediss+sentinel://:***@a:26379,[::1]:26380/mymaster?sentinel_password=***",
        ),
        ("postgresql://u:hunter2@h1:5432,h2/db", "postgresql://u:***@h1:5432,h2/db"),
        ("redis+cluster://u:hunter2@a:7000,b:port", "redis+cluster://***"),
        ("bad scheme://u:hunter2@h", "***"),
        ("u:hunter2@h:6379", "***"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_malformed_redis_url_does_not_show_its_password() -> None:
    _, errors = parse_config({"redis_server_url": "redis://u:hunter2@h:notaport", "quotas": []}, {})
    text = " ".join(str(e) for e in errors)
    assert "invalid redis server url" in text
    assert "hunter2" not in text


async def test_a_failed_list_fetch_does_not_show_the_credentials(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://reader:hunter2@127.0.0.1:{free_port()}/list?token=t0ps3cret"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(FetchError) as info:
        await fetch_list(url, timeout=2, max_bytes=1000)
    assert "could not fetch list from http://reader:***@127.0.0.1" in str(info.value)
    assert "hunter2" not in str(info.value) and "t0ps3cret" not in str(info.value)
    assert "hunter2" not in caplog.text

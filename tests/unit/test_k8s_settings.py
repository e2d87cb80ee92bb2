"""``--config k8s://`` and the k8s flags in the server settings."""

from __future__ import annotations

import argparse

import pytest

from mixerd.server.settings import Settings, add_arguments


def settings(*argv: str, env: dict[str, str] | None = None) -> Settings:
    parser = argparse.ArgumentParser()
    add_arguments(parser, environ=env or {})
    return Settings.from_args(parser.parse_args(list(argv)))


def test_config_url_is_kept_whole() -> None:
    s = settings("--config", "k8s:///etc/kube/config?namespaces=a,b")
    assert s.config_url == "k8s:///etc/kube/config?namespaces=a,b" and s.config == ()
    assert not s.k8s_write_status and s.k8s_missing_retry == 30.0


def test_config_url_from_the_environment_is_not_split_at_colons() -> None:
    s = settings(env={"MIXERD_CONFIG": "k8s://?namespaces=istio-system", "MIXERD_K8S_WRITE_STATUS": "true"})
    assert s.config_url == "k8s://?namespaces=istio-system"
    assert s.k8s_write_status


def test_files_still_work() -> None:
    s = settings("--config", "/etc/mixerd", "--config", "extra.yaml")
    assert [str(p) for p in s.config] == ["/etc/mixerd", "extra.yaml"] and s.config_url == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--config", "k8s://", "--config", "/etc/mixerd"), "cannot be combined"),
        (("--config", "k8s://", "--config", "k8s:///x"), "cannot be combined"),
        (("--config", "k8s://host"), "a host in a k8s:// URL is not supported"),
        (("--config", "k8s://", "--k8s-missing-retry", "0"), "--k8s-missing-retry must be above 0"),
    ],
)
def test_refused(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings(*argv)

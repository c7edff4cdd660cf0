"""Serving rules: binding, logins, upload cap and served paths (no server started)."""

from __future__ import annotations

import pytest

from ovseg.demo.security import (
    MIB,
    credentials_checker,
    is_loopback,
    launch_kwargs,
    parse_credentials,
    read_auth_file,
    resolve_settings,
)
from ovseg.errors import ConfigError, InsecureLaunchError


def test_defaults_listen_on_loopback_only():
    settings = resolve_settings()
    assert settings.host == "127.0.0.1" and settings.port == 7860
    assert not settings.public and not settings.share and settings.credentials == ()
    assert settings.max_upload_bytes == 10 * MIB
    assert (settings.queue_size, settings.concurrency) == (16, 1)


@pytest.mark.parametrize(
    "flags", [{"public": True}, {"share": True}, {"public": True, "share": True}]
)
def test_reaching_beyond_this_machine_needs_a_login(flags):
    with pytest.raises(InsecureLaunchError, match="--auth user:password or --auth-file"):
        resolve_settings(**flags)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "example.org"])
def test_a_non_loopback_host_needs_the_public_flag(host):
    with pytest.raises(InsecureLaunchError, match="--public"):
        resolve_settings(host=host, auth="u:p")
    assert resolve_settings(host=host, public=True, auth="u:p").host == host


def test_public_with_a_login_listens_on_all_interfaces():
    settings = resolve_settings(public=True, auth="alice:s3cret:with:colons")
    assert settings.host == "0.0.0.0"
    assert settings.credentials == (("alice", "s3cret:with:colons"),)
    assert "s3cret" not in repr(settings) and "alice" in repr(settings)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"])
def test_loopback_hosts(host):
    assert is_loopback(host)
    assert resolve_settings(host=host).host == host


@pytest.mark.parametrize("text", ["alice", "alice:", ":pw", "   :pw"])
def test_malformed_logins_are_refused(text):
    with pytest.raises(ConfigError, match="user:password"):
        parse_credentials(text)


def test_auth_file_lines_comments_and_errors(tmp_path):
    good = tmp_path / "logins"
    good.write_text("# team\nalice:one\n\nbob:two:three\n")
    good.chmod(0o600)
    assert read_auth_file(good) == [("alice", "one"), ("bob", "two:three")]
    settings = resolve_settings(share=True, auth_file=good)
    assert [u for u, _ in settings.credentials] == ["alice", "bob"]

    bad = tmp_path / "bad"
    bad.write_text("alice:one\nbob\n")
    with pytest.raises(ConfigError, match="line 2"):
        read_auth_file(bad)
    empty = tmp_path / "empty"
    empty.write_text("# nobody\n")
    with pytest.raises(ConfigError, match="no 'user:password'"):
        read_auth_file(empty)
    with pytest.raises(ConfigError, match="does not exist"):
        read_auth_file(tmp_path / "missing")
    with pytest.raises(ConfigError, match="not both"):
        resolve_settings(auth="a:b", auth_file=good)


def test_credentials_checker_accepts_exactly_the_listed_logins():
    check = credentials_checker([("alice", "one"), ("bob", "two")])
    assert check("alice", "one") and check("bob", "two")
    assert not check("alice", "two") and not check("carol", "one") and not check("", "")
    assert not check("alice", "one ") and not check("Alice", "one")


@pytest.mark.parametrize(
    "options, match",
    [
        ({"port": 0}, "--port"),
        ({"port": 70000}, "--port"),
        ({"max_upload_mb": 0}, "--max-upload-mb"),
        ({"queue_size": 0}, "--queue-size"),
        ({"concurrency": 0}, "--concurrency"),
        ({"video_max_mb": 0}, "--video-max-mb"),
        ({"video_max_frames": 0}, "--video-max-frames"),
    ],
)
def test_out_of_range_numbers_are_refused(options, match):
    with pytest.raises(ConfigError, match=match):
        resolve_settings(**options)


def test_launch_kwargs_enforce_the_settings(tmp_path):
    settings = resolve_settings(
        public=True, auth="u:p", port=8123, max_upload_mb=2.5, examples_dir=tmp_path
    )
    kwargs = launch_kwargs(settings)
    assert (kwargs["server_name"], kwargs["server_port"], kwargs["share"]) == (
        "0.0.0.0",
        8123,
        False,
    )
    assert kwargs["allowed_paths"] == [str(tmp_path.resolve())]
    assert kwargs["max_file_size"] == int(2.5 * MIB)
    assert kwargs["auth"]("u", "p") and not kwargs["auth"]("u", "q")
    assert kwargs["run_history"] is False and kwargs["enable_monitoring"] is False
    assert kwargs["mcp_server"] is False and kwargs["ssr_mode"] is False
    assert kwargs["state_session_capacity"] == 100
    assert launch_kwargs(resolve_settings())["auth"] is None
    assert launch_kwargs(resolve_settings())["allowed_paths"] == []


def test_examples_folder_must_exist_and_env_paths_are_not_served(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_settings(examples_dir=tmp_path / "missing")
    monkeypatch.setenv("GRADIO_ALLOWED_PATHS", "/")
    with pytest.raises(ConfigError, match="GRADIO_ALLOWED_PATHS"):
        resolve_settings()
    # with an examples folder gradio's own allowed_paths argument wins over the variable
    assert resolve_settings(examples_dir=tmp_path).examples_dir == tmp_path.resolve()

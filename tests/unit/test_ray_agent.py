"""The Ray agent's pieces that need no Ray: the network a job is told to use, and mpirun's remote shell."""

from __future__ import annotations

import pytest

from corral.backends.ray.agent import interface_of, network_environment
from corral.backends.ray.rsh import SOCKET_VARIABLE, main


def test_the_interface_and_network_of_an_address_are_found() -> None:
    assert interface_of("127.0.0.1") == ("lo", "127.0.0.0/8")
    assert interface_of("203.0.113.254") is None  # on no interface here
    env = network_environment("127.0.0.1")
    assert env["GLOO_SOCKET_IFNAME"] == env["NCCL_SOCKET_IFNAME"] == "lo"
    assert env["OMPI_MCA_btl_tcp_if_include"] == env["OMPI_MCA_oob_tcp_if_include"] == "127.0.0.0/8"
    assert env["OMPI_MCA_plm_rsh_agent"].endswith("-m corral.backends.ray.rsh")
    assert network_environment("") == {} == network_environment("203.0.113.254")


def test_the_remote_shell_says_why_it_cannot_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(SOCKET_VARIABLE, raising=False)
    assert main(["rsh", "198.18.0.12", "orted"]) == 255
    assert "run inside a Corral job on Ray" in capsys.readouterr().err
    monkeypatch.setenv(SOCKET_VARIABLE, "/nonexistent/agent.sock")
    assert main(["rsh", "198.18.0.12", "orted"]) == 255
    assert "cannot reach the agent at /nonexistent/agent.sock" in capsys.readouterr().err
    assert main(["rsh"]) == 255


def test_an_agent_of_another_version_says_what_to_install() -> None:
    from corral.backends.ray.agent import NodeAgent

    with pytest.raises(RuntimeError, match=r"install the server's version .*corral\[ray\]==0\.0\.1"):
        NodeAgent("0.0.1")

"""`rsd serve` keeps one rendered repository and one log per instance (keyed by its gRPC port), and a
second instance on a taken port fails before it renders, so it can never pull the repository
of the running one from under it or write into its log."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from runtime.config import REPO_ROOT
from runtime.deploy import repo as repo_module

SERVE_YAML = REPO_ROOT / "configs" / "triton" / "torch_cpu.yaml"


@pytest.fixture()
def build_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "build"
    monkeypatch.setattr(repo_module, "BUILD_ROOT", root)
    return root


def serve(*args: str) -> int:
    from runtime.cli.main import main

    return main(["serve", "--config", str(SERVE_YAML), *args])


def test_each_instance_renders_into_its_own_folder(build_root, tiny_config, capsys):
    assert serve("--pipeline", str(tiny_config), "--grpc-port", "18101", "--render-only") == 0
    assert serve("--pipeline", str(tiny_config), "--grpc-port", "18201", "--render-only") == 0
    first, second = (Path(line) for line in capsys.readouterr().out.split())
    assert first == build_root / "torch_cpu-18101" and second == build_root / "torch_cpu-18201"
    assert (first / "rsd" / "config.pbtxt").is_file() and (second / "rsd" / "config.pbtxt").is_file()
    # the logs sit next to each folder: <folder>.log and, for the OpenAI front, <folder>-openai.log
    assert first.with_suffix(".log") != second.with_suffix(".log")


def test_a_second_instance_on_a_taken_port_fails_before_rendering(build_root, tiny_config, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        running = build_root / f"torch_cpu-{port}"  # the folder of the instance holding the port
        (running / "rsd").mkdir(parents=True)
        (running / "rsd" / "marker").write_text("in use")
        code = serve("--pipeline", str(tiny_config), "--grpc-port", str(port), "--http-port", "0",
                     "--metrics-port", "0", "--openai-port", "0")
    assert code == 2 and "--grpc-port" in capsys.readouterr().err
    assert (running / "rsd" / "marker").read_text() == "in use"  # not re-rendered

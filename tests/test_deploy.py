"""The deployment files: every fashionlens command in compose.yaml and the Dockerfile parses with the CLI
(so a renamed flag cannot leave them stale), and the catalog reaches the Milvus service the file defines."""

from __future__ import annotations

import json
import os
import re
from urllib.parse import urlparse

import pytest
import yaml

from fashionlens.cli import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fashionlens_args(command: list[str]) -> list[str]:
    assert command[0].endswith("fashionlens"), command
    return command[1:]


@pytest.fixture(scope="module")
def compose() -> dict:
    with open(os.path.join(ROOT, "compose.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_compose_commands_parse_with_the_cli(compose):
    parser = build_parser()
    ours = {name: svc for name, svc in compose["services"].items() if svc.get("image", "").startswith("fashionlens")}
    assert set(ours) == {"build", "serve"}
    parsed = {name: parser.parse_args(fashionlens_args(svc["command"])) for name, svc in ours.items()}
    assert parsed["build"].command == "catalog" and parsed["serve"].command == "serve"
    assert parsed["serve"].catalog == parsed["build"].out  # serve reads the catalog build writes
    assert parsed["serve"].host == "0.0.0.0"
    published = {p.split(":")[1] for p in ours["serve"]["ports"]}
    assert str(parsed["serve"].port) in published


def test_compose_catalog_uses_the_milvus_service(compose):
    build = build_parser().parse_args(fashionlens_args(compose["services"]["build"]["command"]))
    uri = urlparse(build.milvus_uri)
    milvus = compose["services"]["milvus"]
    assert uri.hostname == "milvus" and "milvus" in compose["services"]
    assert f"{uri.port}:{uri.port}" in milvus["ports"]  # 19530: the gRPC port pymilvus connects to
    for svc in ("build", "serve"):
        assert compose["services"][svc]["depends_on"]["milvus"]["condition"] == "service_healthy"
    # Milvus standalone needs etcd and MinIO (its own compose file's services), reached by service name
    env = milvus["environment"]
    assert env["ETCD_ENDPOINTS"].split(":")[0] in compose["services"]
    assert env["MINIO_ADDRESS"].split(":")[0] in compose["services"]


def test_dockerfile_command_parses_and_keeps_the_torch_pin():
    with open(os.path.join(ROOT, "Dockerfile"), encoding="utf-8") as f:
        text = f.read()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    args = build_parser().parse_args(fashionlens_args(cmd))
    assert args.command == "demo" and args.host == "0.0.0.0"
    assert "make install" in text  # the same install steps as the Makefile, which pins torch in every pip call
    assert "download.pytorch.org/whl/cpu" in text  # CPU wheels: not the multi-GB CUDA build

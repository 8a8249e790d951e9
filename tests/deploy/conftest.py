"""The operator's side of the deployment, made once per run: the secrets deploy/gen_secrets.py and deploy/gen_tls.py
write in a checkout of its own, and the Secrets the kubectl commands of docs/operations.md create from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_manifests import ROOT
from deploy_operator import documented_secrets, generate_secrets


@pytest.fixture(scope="session")
def operator(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """(the operator's checkout, the values of its .env)."""
    root = tmp_path_factory.mktemp("checkout")
    return root, generate_secrets(root)


@pytest.fixture(scope="session")
def k8s_secrets(operator) -> dict[str, dict[str, str]]:
    """Secret name -> key -> value, as `kubectl create secret generic` makes them from the operator's files."""
    return documented_secrets(ROOT / "docs" / "operations.md", operator[0])

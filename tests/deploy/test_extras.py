"""The install's floors (pyproject.toml's dependencies and extras): `pip install '.[control]'` resolves no torch, and
each floor's code imports only packages that its extras install: the control plane's with the base and `control`,
the model worker's with the base and `worker` (import-linter's contracts keep each floor off the other's code)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from importlib import metadata

import grimp
from deploy_manifests import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PACKAGES = ("foundation", "protos", "kernels", "model_worker", "services", "agent_runtime", "training")
ENGINE = ("torch", "triton", "numpy", "safetensors", "llguidance")


def requirement_closure(extras: tuple[str, ...]) -> set[str]:
    """The distributions the project's base and `extras` install, their own requirements followed through this
    environment's metadata (markers evaluated for the extras asked of each)."""
    pending = [Requirement(r) for r in PROJECT["dependencies"]]
    pending += [Requirement(r) for extra in extras for r in PROJECT["optional-dependencies"][extra]]
    seen: dict[str, set[str]] = {}
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in seen and requirement.extras <= seen[name]:
            continue
        seen.setdefault(name, set()).update(requirement.extras)
        for line in metadata.distribution(name).requires or []:
            needed = Requirement(line)
            if needed.marker is None or any(needed.marker.evaluate({"extra": e}) for e in {"", *seen[name]}):
                pending.append(needed)
    return set(seen)


def external_imports(code: tuple[str, ...]) -> set[str]:
    """The third-party top-level packages imported by every module under `code` and everything those import."""
    graph = grimp.build_graph(*PACKAGES, include_external_packages=True, cache_dir=None)
    modules = {m for m in graph.modules if m.split(".")[0] in PACKAGES and (
        m in code or m.startswith(tuple(f"{c}." for c in code)))}
    for module in list(modules):
        modules |= graph.find_upstream_modules(module)
    return {m for m in modules if m.split(".")[0] not in PACKAGES and m not in sys.stdlib_module_names}


def missing(code: tuple[str, ...], extras: tuple[str, ...]) -> dict[str, list[str]]:
    """The imports of `code` that no distribution of the base and `extras` provides (import name -> its providers)."""
    installed = requirement_closure(extras)
    providers = {name: [canonicalize_name(d) for d in dists]
                 for name, dists in metadata.packages_distributions().items()}
    return {name: providers.get(name, []) for name in sorted(external_imports(code))
            if not set(providers.get(name, [])) & installed}


def test_the_control_plane_imports_only_what_the_control_extra_installs():
    assert missing(("services", "agent_runtime"), ("control",)) == {}
    assert not requirement_closure(("control",)) & {canonicalize_name(n) for n in ENGINE}


def test_the_model_worker_imports_only_what_the_worker_extra_installs():
    assert missing(("model_worker", "kernels"), ("worker", "kernels")) == {}
    assert not requirement_closure(("worker",)) & {"celery", "sqlalchemy", "fastapi", "alembic"}
    # The check can fail: the worker's code does not run on the control plane's install.
    assert {"torch", "numpy", "safetensors"} <= set(missing(("model_worker",), ("control",)))


def test_training_imports_only_what_the_worker_and_train_extras_install():
    assert missing(("training",), ("worker", "kernels", "train")) == {}
    assert "matplotlib" in missing(("training",), ("worker", "kernels"))


def test_pip_resolves_the_control_extra_without_torch(tmp_path):
    """`pip install --dry-run --report` of `.[control]`, the whole tree resolved from the package index as if
    nothing were installed."""
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                           "--report", str(report), f"{ROOT}[control]"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    resolved = {canonicalize_name(item["metadata"]["name"]): item for item in json.loads(report.read_text())["install"]}
    engine = {name for name in resolved if name in ENGINE or name.startswith(("nvidia-", "torch", "triton"))}
    assert not engine, f"the control plane's install pulls {sorted(engine)}"
    project = resolved[canonicalize_name(PROJECT["name"])]
    assert project["requested_extras"] == ["control"]
    assert {"celery", "sqlalchemy", "fastapi", "grpcio", "tokenizers"} <= set(resolved)

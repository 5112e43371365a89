"""Shared fixtures: the default model, one engine, the CLI binary (TAPPA_CLI) of the same build."""
import os
import pathlib

import pytest

import tappa

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = os.environ.get("TAPPA_MODEL", str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
CLI = os.environ.get("TAPPA_CLI", str(ROOT / "build" / "tappa"))
TEXT = "/usr/share/common-licenses/GPL-3"


@pytest.fixture(scope="session")
def model():
    if not os.path.exists(MODEL):
        pytest.skip(f"{MODEL} missing (scripts/fetch_model.sh)")
    return tappa.Model(MODEL)


@pytest.fixture(scope="session")
def engine(model):
    return tappa.Engine(model, n_threads=2, n_ctx=4096)

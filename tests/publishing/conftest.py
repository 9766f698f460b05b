"""The local Hub in the test process (127.0.0.1, a free port), clients in subprocesses.

huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE once, at import, and the test session is offline
(tests/conftest.py), so every client that talks to the server is a subprocess with its own environment. `isolated`
runs Python where our package is not importable (`-I -S`: no cwd, no .pth files, so no editable install; the
site-packages folders are added back by hand, and a finder hides our packages), as a user without llama-paper would.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

from publishing.local_hub import HubServer

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKENIZER_MODEL = REPO_ROOT / "tests" / "fixtures" / "llama-tokenizer" / "tokenizer.model"
TEXT = "The LLaMA paper trains on public data only. 🦙"


@pytest.fixture(scope="package")
def hub(tmp_path_factory):
    """The project's Hub-compatible server, serving from a temporary folder for the whole package."""
    with HubServer(0, tmp_path_factory.mktemp("hub-storage")) as server:
        yield server


def client_env(hub: HubServer, home: Path, token: str | None = "hf_local_test") -> dict[str, str]:
    """Environment of a client process talking to `hub` (LFS instead of Xet: the server does not emulate Xet)."""
    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HOME=str(home), HF_HUB_DISABLE_XET="1",
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1")
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("TRANSFORMERS_OFFLINE", None)
    env.pop("HF_TOKEN", None)
    if token:
        env["HF_TOKEN"] = token
    return env


# `-I -S` already hides an editable install (no cwd on sys.path, no .pth files); the finder below also hides a regular
# install in site-packages, so the check holds however the package was installed.
ISOLATION_PRELUDE = r'''
import sys
sys.path.extend(SITE_DIRS)
class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("modeling_llama", "training", "evaluation", "publishing"):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, _NotInstalled())
try:
    import modeling_llama
    raise SystemExit("our package must not be importable here")
except ModuleNotFoundError:
    pass
'''


def run_client(code: str, env: dict[str, str], *args: str, isolated: bool = False, timeout: int = 300):
    """Run `code` (a Python program) in a subprocess; `isolated`: without access to our package."""
    if isolated:
        prelude = ISOLATION_PRELUDE.replace("SITE_DIRS", json.dumps(site.getsitepackages()))
        cmd = [sys.executable, "-I", "-S", "-c", prelude + code, *args]
    else:
        cmd = [sys.executable, "-c", code, *args]
    return subprocess.run(cmd, env=env, cwd=env.get("HF_HOME"), capture_output=True, text=True, timeout=timeout)


def run_cli(args: list[str], env: dict[str, str], timeout: int = 300):
    """`llama-paper ARGS` in a subprocess."""
    code = "import sys; from modeling_llama.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout)


def run_module(module: str, args: list[str], env: dict[str, str], timeout: int = 300):
    """`python -m MODULE ARGS` in a subprocess."""
    return subprocess.run([sys.executable, "-m", module, *args], env=env, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="package")
def tiny_folder(tmp_path_factory) -> Path:
    """A saved tiny LlamaPaperForCausalLM (2 layers, 64 wide, real 32000-token vocabulary) with both tokenizers."""
    import torch

    from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM, LlamaPaperTokenizerFast

    folder = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    torch.manual_seed(0)
    config = LlamaPaperConfig(vocab_size=32000, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                              num_attention_heads=4, max_position_embeddings=256, initializer_range=0.2)
    LlamaPaperForCausalLM(config).save_pretrained(folder)
    LlamaPaperTokenizerFast(vocab_file=str(TOKENIZER_MODEL)).save_pretrained(folder)
    return folder


def reference_outputs(folder: Path) -> tuple[list[int], "object"]:
    """Token ids of TEXT and the logits, computed here with our package from the local folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import modeling_llama  # noqa: F401

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = tokenizer(TEXT)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    return ids, logits


# Loads each repo through the server with remote code; writes ids, logits and classes to argv[1] (a .pt file).
LOAD_FROM_HUB = r'''
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
out = {}
for repo in sys.argv[2:]:
    tok = AutoTokenizer.from_pretrained(repo, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(repo, trust_remote_code=True, dtype=torch.float32).eval()
    ids = tok(TEXT)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    out[repo] = {"ids": ids, "logits": logits, "model_class": type(model).__name__,
                 "tokenizer_class": type(tok).__name__, "model_module": type(model).__module__}
torch.save(out, sys.argv[1])
'''.replace("TEXT", repr(TEXT))

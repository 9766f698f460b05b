"""What the local Hub and `llama-paper push` refuse, and that nothing is uploaded when they do."""

from __future__ import annotations

import shutil
import socket

from .conftest import client_env, run_client, run_module

BAD_CARD = "---\nmodel-index:\n- name: x\n  results:\n  - task: {}\n---\nA card whose model-index has no task type.\n"


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr  # one clear line, no traceback
    return lines[0]


def test_invalid_model_index_is_refused_before_anything_is_uploaded(hub, tiny_folder, tmp_path):
    folder = tmp_path / "bad-card"
    shutil.copytree(tiny_folder, folder)
    (folder / "README.md").write_text(BAD_CARD)
    env = client_env(hub, tmp_path)
    before = hub.snapshot()
    out = run_module("publishing.push", ["--model", str(folder), "--repo-id", "user/bad-card"], env)
    assert out.returncode == 2
    assert "model_index" in _one_line(out.stderr)
    # The server's own check (validate-yaml, as the Hub's) refuses the same card from a plain huggingface_hub client.
    upload = run_client(UPLOAD_FOLDER, env, str(folder))
    assert upload.returncode == 0, upload.stderr[-2000:]
    assert "Invalid metadata in README.md" in upload.stdout and "model_index" in upload.stdout
    after = hub.snapshot()
    assert (after["lfs_bytes"], after["regular_bytes"], after["commits"]) == \
        (before["lfs_bytes"], before["regular_bytes"], before["commits"])


UPLOAD_FOLDER = r'''
import sys
from huggingface_hub import HfApi
api = HfApi()
api.create_repo("user/bad-card-direct", exist_ok=True)
try:
    api.upload_folder(repo_id="user/bad-card-direct", folder_path=sys.argv[1])
except ValueError as err:
    print(err)
'''


def test_missing_token_and_unreachable_endpoint_are_one_line(hub, tiny_folder, tmp_path):
    args = ["--model", str(tiny_folder), "--repo-id", "user/never"]
    no_token = run_module("publishing.push", args, client_env(hub, tmp_path, token=None))
    assert no_token.returncode == 2
    assert "no Hugging Face token: set HF_TOKEN" in _one_line(no_token.stderr)

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(client_env(hub, tmp_path), HF_ENDPOINT=f"http://127.0.0.1:{port}")
    unreachable = run_module("publishing.push", args, env)
    assert unreachable.returncode == 2
    line = _one_line(unreachable.stderr)
    assert f"cannot reach the Hub endpoint http://127.0.0.1:{port}" in line and "HF_ENDPOINT" in line

    wrong = run_module("publishing.push", ["--model", str(tmp_path), "--repo-id", "user/never"],
                       client_env(hub, tmp_path))
    assert wrong.returncode == 2 and "no saved model there" in _one_line(wrong.stderr)


def test_push_to_a_branch_a_pull_request_and_a_private_repo(hub, tiny_folder, tmp_path):
    env = client_env(hub, tmp_path)
    args = ["--model", str(tiny_folder), "--repo-id", "user/tiny-branches"]
    branch = run_module("publishing.push", args + ["--revision", "dev", "--private", "--commit-message", "to dev"],
                        env)
    assert branch.returncode == 0, branch.stderr
    repo = hub.store.load("model", "user/tiny-branches")
    assert repo["private"] is True
    dev = repo["commits"][repo["branches"]["dev"]]
    assert "model.safetensors" in dev["files"] and dev["message"] == "to dev"
    assert repo["commits"][repo["branches"]["main"]]["files"] == {}  # main untouched

    (tiny_folder / "extra.txt").write_text("changed")
    try:
        pr = run_module("publishing.push", args + ["--create-pr"], env)
    finally:
        (tiny_folder / "extra.txt").unlink()
    assert pr.returncode == 0, pr.stderr
    assert f"Pull request: {hub.url}/user/tiny-branches/discussions/1" in pr.stdout
    repo = hub.store.load("model", "user/tiny-branches")
    assert "extra.txt" in repo["commits"][repo["branches"]["refs/pr/1"]]["files"]
    assert repo["commits"][repo["branches"]["main"]]["files"] == {}

"""Safe defaults, as a tired operator meets them: the shipped example files start a
node (after the one edit they ask for), and every unprotected exposure is refused at
start with one line saying how to fix it, before anything listens."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

from tests.conftest import wait_until
from tests.e2e.harness import RELAYMESH, REPO, NodeProc, free_port

UNIT = REPO / "deploy" / "systemd" / "relaymesh.service"
ENV_EXAMPLE = REPO / "deploy" / "systemd" / "relaymesh.env.example"


def clean_env(tmp_path: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYMESH_")}
    env["RELAYMESH_STORE_URL"] = f"sqlite:///{tmp_path / 'store.db'}"
    return env


def refused(args: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run ``relaymesh args`` (or a full command line); it must exit non-zero with
    exactly one line on stderr."""
    argv = args if args[0] == RELAYMESH else [RELAYMESH, *args]
    try:
        result = subprocess.run(
            argv, check=False, env=env, cwd=cwd, capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{argv[1:]} started instead of refusing") from exc
    assert result.returncode != 0, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def port_is_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        try:
            udp.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def test_unprotected_exposure_is_refused_with_the_fix(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    port = free_port()
    line = refused(["node", "run", "--bind", f"0.0.0.0:{port}"], env, tmp_path)
    assert "not loopback" in line and "relaymesh keygen" in line and "allow_plaintext" in line
    assert port_is_free(port)  # refused before binding anything
    line = refused(["gossip", "--bind", f"0.0.0.0:{port}"], env, tmp_path)
    assert "relaymesh keygen" in line

    http = free_port()
    args = ["node", "run", "--bind", f"127.0.0.1:{port}", "--http", f"0.0.0.0:{http}"]
    line = refused(args, env, tmp_path)
    assert "[web] tokens" in line and "127.0.0.1" in line
    line = refused(["serve-web", "--bind", f"0.0.0.0:{http}"], env, tmp_path)
    assert "[web] tokens" in line

    # A key that is not one (a typo, a placeholder) is refused as clearly.
    bad = {**env, "RELAYMESH_GOSSIP__KEYS": '["not-a-key"]'}
    line = refused(["node", "run", "--bind", f"0.0.0.0:{port}"], bad, tmp_path)
    assert "relaymesh keygen" in line


def systemd_env(path: Path, root: Path) -> dict[str, str]:
    """``EnvironmentFile=`` as systemd reads it, with the unit's paths moved under root."""
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        value = value.replace("/etc/relaymesh", str(root / "etc"))
        values[key] = value.replace("/var/lib/relaymesh", str(root / "state"))
    return values


def exec_start(root: Path) -> list[str]:
    line = next(x for x in UNIT.read_text().splitlines() if x.startswith("ExecStart="))
    argv = line.removeprefix("ExecStart=").split()
    assert argv[0].endswith("/bin/relaymesh")
    argv[0] = RELAYMESH
    return [a.replace("/etc/relaymesh", str(root / "etc")) for a in argv]


def test_systemd_example_needs_only_its_key(tmp_path: Path) -> None:
    assert "EnvironmentFile=/etc/relaymesh/relaymesh.env" in UNIT.read_text()
    (tmp_path / "etc").mkdir()
    (tmp_path / "state").mkdir()
    shutil.copy(REPO / "examples" / "relaymesh.toml", tmp_path / "etc" / "relaymesh.toml")
    unit_env = systemd_env(ENV_EXAMPLE, tmp_path)
    assert unit_env["RELAYMESH_NODE__BIND"].startswith("0.0.0.0:")
    base = {**clean_env(tmp_path), **unit_env}

    # Copied as shipped: the placeholder key stops it, naming the fix.
    line = refused(exec_start(tmp_path), base, tmp_path / "state")
    assert "gossip.keys" in line and "relaymesh keygen" in line

    # The one edit the file asks for: the key. (Gossip and HTTP are moved to free
    # loopback ports only because this test may not listen beyond loopback.)
    key = subprocess.run([RELAYMESH, "keygen"], capture_output=True, text=True, check=True)
    gossip, http = free_port(), free_port()
    (tmp_path / "etc" / "seeds.txt").write_text(f"127.0.0.1:{gossip}\n")
    env = {
        **base,
        "RELAYMESH_GOSSIP__KEYS": json.dumps([key.stdout.strip()]),
        "RELAYMESH_NODE__BIND": f"127.0.0.1:{gossip}",
        "RELAYMESH_NODE__ADVERTISE": f"127.0.0.1:{gossip}",
        "RELAYMESH_NODE__HTTP": f"127.0.0.1:{http}",
    }
    # What the unit's header asks for once, before the first start: the store.
    subprocess.run([*exec_start(tmp_path)[:-2], "store", "migrate"], env=env, check=True)
    run_until_healthy(exec_start(tmp_path), env, tmp_path / "state", http)


def test_example_config_works_as_copied(tmp_path: Path) -> None:
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    gossip, http = free_port(), free_port()
    # The ports are the only change: the shipped ones may be taken on a test machine.
    migrate = [RELAYMESH, "--config", "examples/relaymesh.toml", "store", "migrate"]
    subprocess.run(migrate, env=clean_env(tmp_path), cwd=tmp_path, check=True)  # as README says
    args = ["--config", "examples/relaymesh.toml", "node", "run"]
    args += ["--bind", f"127.0.0.1:{gossip}", "--http", f"127.0.0.1:{http}"]
    run_until_healthy([RELAYMESH, *args], clean_env(tmp_path), tmp_path, http)


def run_until_healthy(argv: list[str], env: dict[str, str], cwd: Path, http: int) -> None:
    log = (cwd / "node.log").open("wb")
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    node = NodeProc("n", 0, http, cwd / "node.log", proc)
    try:
        wait_until(lambda: node.healthy() or not node.running(), 30, what="node healthy")
        assert node.running(), (cwd / "node.log").read_text()[-3000:]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, (cwd / "node.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()

"""python -m strata_kv against a real node."""

import subprocess
import sys


def cli(*args):
    return subprocess.run([sys.executable, "-m", "strata_kv", *args], capture_output=True, text=True, timeout=120)


def test_ping_put_get_stat(address, tmp_path):
    assert cli("ping", "--node", address).stdout.startswith("ok ")
    source = tmp_path / "in.bin"
    source.write_bytes(bytes(range(256)) * 100)
    assert cli("put", "--node", address, "cli/file", str(source)).returncode == 0
    target = tmp_path / "out.bin"
    assert cli("get", "--node", address, "cli/file", str(target)).returncode == 0
    assert target.read_bytes() == source.read_bytes()
    missing = cli("get", "--node", address, "cli/none", str(tmp_path / "x"))
    assert missing.returncode == 1 and "-704" in missing.stderr
    assert cli("stat", "--node", address).stdout.startswith("{")


def test_usage_errors():
    assert cli("ping").returncode == 1
    assert "--node" in cli("ping").stderr
    assert cli("get", "--node", "127.0.0.1:1", "hex:12", "/tmp/x").returncode == 1
    help_text = cli("--help")
    assert help_text.returncode == 0 and "ping" in help_text.stdout

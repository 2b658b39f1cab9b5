"""TLS against a real node started with certificates from scripts/dev-ca.sh: byte-exact round
trips through StrataStore(tls_ca=...), and the refusals (another CA, plaintext to the TLS port,
a certificate without its key)."""

import os
import subprocess
import tempfile

import numpy as np
import pytest

from strata_kv import StrataError, StrataStore

from conftest import REPO, Node


def dev_ca(directory, *nodes):
    subprocess.run(["bash", str(REPO / "scripts" / "dev-ca.sh"), directory, *nodes], check=True,
                   capture_output=True)
    return directory


@pytest.fixture(scope="module")
def certificates():
    with tempfile.TemporaryDirectory(prefix="strata-py-ca-") as folder:
        yield dev_ca(os.path.join(folder, "ca"), "node-1"), dev_ca(os.path.join(folder, "other"), "node-1")


@pytest.fixture(scope="module")
def tls_node(certificates):
    ca, _ = certificates
    started = Node(extra=["--tls-cert", f"{ca}/node-1.pem", "--tls-key", f"{ca}/node-1.key", "--tls-ca",
                          f"{ca}/ca.pem"])
    yield started
    started.remove()


def test_round_trip_over_tls_is_byte_exact(tls_node, certificates):
    ca, _ = certificates
    store = StrataStore(node=tls_node.address, tls_ca=f"{ca}/ca.pem", connections=2)
    try:
        rng = np.random.default_rng(5)
        data = [rng.integers(0, 256, size=(512 << 10) + index, dtype=np.uint8) for index in range(8)]
        names = [os.urandom(32) for _ in data]
        assert store.put_from(names, data) == [0] * len(data)
        out = [np.zeros(len(block), dtype=np.uint8) for block in data]
        assert store.get_into(names, out) == [len(block) for block in data]
        for block, got in zip(data, out):
            assert np.array_equal(got, block)
    finally:
        store.close()


def test_client_certificate_is_presented(tls_node, certificates):
    ca, _ = certificates
    store = StrataStore(node=tls_node.address, tls_ca=f"{ca}/ca.pem", tls_cert=f"{ca}/client.pem",
                        tls_key=f"{ca}/client.key")
    try:
        assert store.batch_is_exist([os.urandom(32)]) == [0]
    finally:
        store.close()


def test_refusals_say_why(tls_node, certificates):
    _, other = certificates
    with pytest.raises(StrataError) as wrong_ca:
        StrataStore(node=tls_node.address, tls_ca=f"{other}/ca.pem")
    assert wrong_ca.value.code == 11 and "certificate verification failed" in str(wrong_ca.value)
    with pytest.raises(StrataError) as plaintext:
        StrataStore(node=tls_node.address)
    assert plaintext.value.code == 11 and "this port requires TLS" in str(plaintext.value)
    with pytest.raises(ValueError):
        StrataStore(node=tls_node.address, tls_ca=f"{other}/ca.pem", tls_cert=f"{other}/client.pem")

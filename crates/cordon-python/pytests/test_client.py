"""The Python SDK against a real `cordon dev up` deployment: what it verifies, what it infers, and
what it refuses. Reference answers come from the runtime's plaintext development route."""

import base64
import hashlib
import http.server
import json
import math
import subprocess
import threading
import urllib.request

import numpy as np
import pytest

import cordon_client
from cordon_client import (
    Client,
    CordonError,
    PolicyError,
    ServerError,
    TransportError,
    VerificationError,
)

from conftest import CORDON, REPO


def load_request(path):
    with open(REPO / path) as f:
        return json.load(f)


def as_array(tensor):
    data = [math.nan if x is None else x for x in tensor["data"]]
    return np.array(data, dtype=np.float32).reshape(tensor["shape"])


def test_it_verifies_the_runtime_and_says_what_it_verified(deployment):
    client = Client(deployment.url, deployment.policy)
    claims = client.claims()
    assert claims["platform"] == "sim"
    assert claims["hardware_backed"] is False
    assert claims["debug"] is False
    policy = deployment.policy.read_text()
    assert claims["launch_measurement"] in policy

    verified = client.evidence()
    assert isinstance(verified["evidence"], bytes) and len(verified["evidence"]) > 64
    assert len(verified["runtime_keys"]["hpke_public_key"]) == 64
    served = {m["name"]: m["manifest_sha256"] for m in verified["models"]}
    assert set(served) == {"breast-cancer-lr", "breast-cancer-mlp", "fraud-gbdt"}
    # The bound digest is the sealed manifest's, as `cordon inspect` reads it from the owner's file.
    sealed = deployment.data_dir / "models" / "breast-cancer-lr.sealed"
    inspected = json.loads(
        subprocess.run([CORDON, "inspect", str(sealed), "--json"], check=True,
                       capture_output=True, text=True).stdout
    )
    assert served["breast-cancer-lr"] == inspected["manifest_sha256"]
    client.require_model("breast-cancer-lr", inspected["manifest_sha256"])
    assert client.models() == verified["models"]


@pytest.mark.parametrize("session", [False, True])
def test_infer_returns_what_the_runtime_computes(deployment, session):
    client = Client(deployment.url, deployment.policy, session=session)
    request = load_request("models/demo_input.json")
    x = as_array(request["inputs"][0])
    reference = deployment.plaintext_infer("breast-cancer-lr", request)
    # Several requests: in session mode they share one key agreement.
    for _ in range(3):
        outputs = client.infer("breast-cancer-lr", {"input": x})
        assert set(outputs) == {o["name"] for o in reference["outputs"]}
        for o in reference["outputs"]:
            got = outputs[o["name"]]
            assert list(got.shape) == o["shape"]
            np.testing.assert_array_equal(got.ravel(), np.array(o["data"], dtype=got.dtype))
    # `outputs` asks for one output only.
    first = reference["outputs"][0]["name"]
    assert set(client.infer("breast-cancer-lr", {"input": x}, outputs=[first])) == {first}


def test_nan_inputs_give_the_models_answer_for_missing_values(deployment):
    client = Client(deployment.url, deployment.policy)
    request = load_request("models/fraud/fraud_gbdt.input.json")
    x = as_array(request["inputs"][0])
    assert np.isnan(x).any(), "the fraud input set has missing values"
    reference = deployment.plaintext_infer("fraud-gbdt", request)
    outputs = client.infer("fraud-gbdt", {"input": x})
    for o in reference["outputs"]:
        np.testing.assert_array_equal(
            outputs[o["name"]].ravel(), np.array(o["data"], dtype=outputs[o["name"]].dtype)
        )


def test_metadata(deployment):
    meta = Client(deployment.url, deployment.policy).metadata("breast-cancer-mlp")
    assert meta["name"] == "breast-cancer-mlp"
    assert meta["inputs"][0]["datatype"] == "FP32"
    assert meta["inputs"][0]["shape"][-1] == 30


def test_the_runtimes_refusals_are_server_errors_with_its_message(deployment):
    client = Client(deployment.url, deployment.policy)
    with pytest.raises(ServerError, match=r"shape \[1, 29\]") as bad_shape:
        client.infer("breast-cancer-lr", {"input": np.zeros((1, 29), np.float32)})
    assert bad_shape.value.status == 400
    with pytest.raises(ServerError) as unknown:
        client.infer("no-such-model", {"input": np.zeros((1, 30), np.float32)})
    assert unknown.value.status == 404
    # A BYTES tensor travels (length-prefixed elements) and is refused for its datatype.
    with pytest.raises(ServerError, match="BYTES"):
        client.infer("breast-cancer-lr", {"input": np.array([["a", "bc"]], dtype=object)})
    with pytest.raises(TypeError, match="complex"):
        client.infer("breast-cancer-lr", {"input": np.zeros((1, 30), np.complex64)})


def test_a_policy_that_expects_another_measurement_refuses_the_runtime(deployment, tmp_path):
    text = deployment.policy.read_text()
    measurement = Client(deployment.url, deployment.policy).claims()["launch_measurement"]
    other = ("0" if measurement[0] != "0" else "1") + measurement[1:]
    policy = tmp_path / "other-measurement.toml"
    policy.write_text(text.replace(measurement, other))
    with pytest.raises(VerificationError, match="measurement"):
        Client(deployment.url, policy)


def test_a_policy_that_trusts_another_sim_root_refuses_the_evidence(deployment, tmp_path):
    text = deployment.policy.read_text()
    anchor = text.split("sim_trust_anchors = [\"")[1].split('"')[0]
    policy = tmp_path / "other-anchor.toml"
    policy.write_text(text.replace(anchor, "ab" * 32))
    with pytest.raises(VerificationError, match="evidence"):
        Client(deployment.url, policy)


class KeySwappingHost(http.server.ThreadingHTTPServer):
    """The host between client and runtime: forwards everything, but answers the attestation
    request with the runtime's evidence and a key of its own choosing (`swap`)."""

    def __init__(self, upstream, swap):
        self.upstream = upstream
        self.swap = swap
        # Everything but the attestation request: nothing may be sent to a refused runtime.
        self.posts = 0
        super().__init__(("127.0.0.1", 0), _Forward)


class _Forward(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        self.server.posts += 1
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        with urllib.request.urlopen(self.server.upstream + self.path, timeout=30) as resp:
            body = json.load(resp)
        self.server.swap(body)
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def through_host(deployment, swap):
    host = KeySwappingHost(deployment.url, swap)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    return host


@pytest.mark.parametrize(
    "what, swap",
    [
        ("its own HPKE key", lambda b: b["runtime_keys"].update(hpke_public_key="11" * 32)),
        ("another signing key", lambda b: b["runtime_keys"].update(signing_public_key="22" * 32)),
        ("a model list without fraud-gbdt", lambda b: b.update(models=b["models"][:-1])),
    ],
)
def test_a_key_or_model_not_bound_by_the_evidence_is_refused(deployment, what, swap):
    host = through_host(deployment, swap)
    try:
        with pytest.raises(VerificationError, match="not bound by its evidence"):
            Client(f"http://127.0.0.1:{host.server_address[1]}", deployment.policy)
        assert host.posts == 0
    finally:
        host.shutdown()


def test_tampered_evidence_is_refused(deployment):
    def flip(body):
        evidence = bytearray(base64.b64decode(body["evidence"]))
        evidence[len(evidence) // 2] ^= 1
        body["evidence"] = base64.b64encode(bytes(evidence)).decode()

    host = through_host(deployment, flip)
    try:
        with pytest.raises(VerificationError):
            Client(f"http://127.0.0.1:{host.server_address[1]}", deployment.policy)
        assert host.posts == 0
    finally:
        host.shutdown()


def test_a_model_bound_to_another_manifest_is_refused(deployment):
    client = Client(deployment.url, deployment.policy)
    with pytest.raises(VerificationError, match="requires " + "0" * 64):
        client.require_model("breast-cancer-lr", "0" * 64)
    with pytest.raises(VerificationError, match="does not serve"):
        client.require_model("no-such-model", "0" * 64)


def test_errors_before_any_runtime_is_reached(deployment, tmp_path):
    with pytest.raises(PolicyError, match="missing.toml"):
        Client(deployment.url, tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("platforms = 3\n")
    with pytest.raises(PolicyError, match="bad.toml"):
        Client(deployment.url, bad)
    with pytest.raises(TransportError):
        # Port 9 on loopback: nothing listens there.
        Client("http://127.0.0.1:9", deployment.policy)
    # Every error is a CordonError, which the package exports.
    assert issubclass(VerificationError, CordonError) and issubclass(ServerError, CordonError)
    assert cordon_client.__all__[0] == "Client"


def test_the_readme_example_runs_as_written(deployment, capsys, monkeypatch):
    readme = (REPO / "README.md").read_text()
    example = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(example.strip().splitlines()) == 5
    # The same lines, pointed at this deployment instead of dev up's fixed port and directory.
    example = example.replace("http://127.0.0.1:8200", deployment.url)
    example = example.replace("/tmp/cordon-dev/client-policy.toml", str(deployment.policy))
    monkeypatch.chdir(REPO)
    exec(compile(example, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert Client(deployment.url, deployment.policy).claims()["launch_measurement"] in printed
    assert "probabilities" in printed or "label" in printed, printed


def test_an_honest_host_forwards_and_the_client_works_through_it(deployment):
    """The same forwarding host with nothing swapped: attestation passes through it, and the
    client's requests would go to it next (so the refusals above are the swap's doing)."""
    host = through_host(deployment, lambda body: None)
    try:
        client = Client(f"http://127.0.0.1:{host.server_address[1]}", deployment.policy)
        assert client.claims()["platform"] == "sim"
        with pytest.raises(ServerError):
            client.infer("breast-cancer-lr", {"input": np.zeros((1, 30), np.float32)})
        assert host.posts == 1
    finally:
        host.shutdown()


def test_malformed_output_bytes_are_a_transport_error_not_a_crash():
    from cordon_client import _from_raw

    assert list(_from_raw("BYTES", [2], b"\x01\x00\x00\x00a\x00\x00\x00\x00")) == [b"a", b""]
    with pytest.raises(TransportError, match="runs past the end"):
        _from_raw("BYTES", [1], b"\x05\x00\x00\x00ab")
    with pytest.raises(TransportError, match="truncated length prefix"):
        _from_raw("BYTES", [1], b"\x01\x00")
    with pytest.raises(TransportError, match="FP32"):
        _from_raw("FP32", [2], b"\x00" * 7)
    with pytest.raises(TransportError, match="no numpy form"):
        _from_raw("COMPLEX64", [1], b"")

"""A `cordon dev up` deployment for the SDK's tests (simulated TEE, loopback, free ports).

scripts/test-python-sdk.sh sets CORDON_BIN (the cordon binary) and CORDON_REPO.
"""

import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(os.environ.get("CORDON_REPO", Path(__file__).resolve().parents[3]))
CORDON = os.environ.get("CORDON_BIN", str(REPO / "target" / "debug" / "cordon"))


class Deployment:
    def __init__(self, lines, data_dir):
        fields = {}
        for line in lines:
            key, sep, value = line.partition(": ")
            if sep:
                fields[key.strip()] = value.strip()
        self.url = fields["runtime URL"]
        self.policy = Path(fields["client policy"])
        self.data_dir = Path(data_dir)

    def plaintext_infer(self, model, request):
        """The runtime's plaintext development route: the reference answer."""
        req = urllib.request.Request(
            f"{self.url}/v2/models/{model}/infer",
            data=json.dumps(request).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)


@pytest.fixture(scope="session")
def deployment():
    with tempfile.TemporaryDirectory(prefix="cordon-sdk-") as data_dir:
        proc = subprocess.Popen(
            [CORDON, "dev", "up", "--data-dir", data_dir, "--kbs-port", "0",
             "--runtime-port", "0", "--dev-plaintext-inference"],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            env={**os.environ, "CORDON_LOG": "warn"},
        )
        lines = []
        deadline = time.monotonic() + 180
        try:
            while not any("Ctrl-C stops" in line for line in lines):
                line = proc.stdout.readline()
                if not line or time.monotonic() > deadline:
                    raise RuntimeError("cordon dev up did not start:\n" + "".join(lines))
                lines.append(line)
            yield Deployment(lines, data_dir)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

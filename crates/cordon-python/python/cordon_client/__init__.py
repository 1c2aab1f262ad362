"""Cordon's Python client: verify what runs on the other side, then infer over an encrypted channel.

    import numpy as np
    from cordon_client import Client

    client = Client("http://127.0.0.1:8200", "client-policy.toml")  # verifies; refuses or pins the key
    print(client.claims()["launch_measurement"])
    outputs = client.infer("breast_cancer_lr", {"input": np.zeros((1, 30), np.float32)})

``Client(url, policy)`` fetches the runtime's evidence for a fresh nonce, verifies it with the
endorsements of the client policy file (TOML, as ``cordon dev up`` or ``cordon policy`` writes it),
appraises the claims with that policy, and checks that the runtime's HPKE key and models are bound
in the evidence. It raises :class:`VerificationError` and sends nothing unless every check passes.
Each request is then HPKE-encrypted (RFC 9180) to the pinned key. All of that runs in Rust
(the ``cordon-client`` crate); this module only converts numpy arrays.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from typing import Dict, Iterable, Mapping, Optional, Union

import numpy as np

from ._native import (
    CordonError,
    NativeClient,
    PolicyError,
    ServerError,
    TransportError,
    VerificationError,
)

__all__ = [
    "Client",
    "CordonError",
    "PolicyError",
    "ServerError",
    "TransportError",
    "VerificationError",
]

# numpy dtype kind and size -> KServe v2 datatype.
_DATATYPES = {
    ("b", 1): "BOOL",
    ("i", 1): "INT8",
    ("i", 2): "INT16",
    ("i", 4): "INT32",
    ("i", 8): "INT64",
    ("u", 1): "UINT8",
    ("u", 2): "UINT16",
    ("u", 4): "UINT32",
    ("u", 8): "UINT64",
    ("f", 2): "FP16",
    ("f", 4): "FP32",
    ("f", 8): "FP64",
}
# KServe v2 datatype -> little-endian numpy dtype.
_NUMPY = {datatype: np.dtype(f"<{kind}{size}") for (kind, size), datatype in _DATATYPES.items()}


def _bytes_elements(array: np.ndarray) -> bytes:
    """BYTES elements, each prefixed by its 4-byte little-endian length."""
    out = []
    for item in array.flat:
        if isinstance(item, str):
            item = item.encode("utf-8")
        elif not isinstance(item, (bytes, bytearray)):
            raise TypeError(f"a BYTES element must be str or bytes, not {type(item).__name__}")
        out.append(struct.pack("<I", len(item)))
        out.append(bytes(item))
    return b"".join(out)


def _to_raw(name: str, value) -> tuple:
    array = np.asarray(value)
    if array.dtype.kind in "OSU":
        return (name, "BYTES", list(array.shape), _bytes_elements(array))
    datatype = _DATATYPES.get((array.dtype.kind, array.dtype.itemsize))
    if datatype is None:
        raise TypeError(f"input {name!r}: numpy dtype {array.dtype} has no KServe v2 datatype")
    data = np.ascontiguousarray(array, dtype=_NUMPY[datatype]).tobytes()
    return (name, datatype, list(array.shape), data)


def _from_raw(datatype: str, shape, data: bytes) -> np.ndarray:
    """An output's raw bytes as a numpy array; TransportError when they are not what its datatype
    and shape say (the runtime's answer is authenticated, so this is a fault, not an attack)."""
    try:
        if datatype == "BYTES":
            items = []
            view = memoryview(data)
            while view:
                if len(view) < 4:
                    raise ValueError("a BYTES element has a truncated length prefix")
                (length,) = struct.unpack_from("<I", view)
                if len(view) < 4 + length:
                    raise ValueError("a BYTES element runs past the end of the output")
                items.append(bytes(view[4 : 4 + length]))
                view = view[4 + length :]
            return np.array(items, dtype=np.object_).reshape(shape)
        if datatype not in _NUMPY:
            raise ValueError(f"datatype {datatype} has no numpy form here")
        return np.frombuffer(data, dtype=_NUMPY[datatype]).reshape(shape)
    except ValueError as e:
        raise TransportError(f"malformed output ({datatype}, shape {list(shape)}): {e}") from None


class Client:
    """A runtime verified with a client policy; its key is pinned for every request.

    ``url``: the runtime's base URL (``http://`` or ``https://``). ``policy``: the client policy file.
    ``ca_cert``: a PEM CA to trust for an ``https://`` runtime, besides the web PKI roots (TLS
    protects metadata only; trust comes from the evidence). ``session``: send requests in an
    encrypted session (one key agreement, then one AEAD per request) instead of one HPKE message
    each; requests are then sent one at a time.
    """

    def __init__(
        self,
        url: str,
        policy: Union[str, os.PathLike],
        *,
        ca_cert: Optional[Union[str, os.PathLike]] = None,
        session: bool = False,
    ) -> None:
        self._native = NativeClient(
            url, os.fspath(policy), None if ca_cert is None else os.fspath(ca_cert), session
        )

    @property
    def url(self) -> str:
        return self._native.url

    def claims(self) -> dict:
        """The verified claims: platform, hardware_backed, launch_measurement, debug, tcb, ..."""
        return json.loads(self._native.claims_json())

    def evidence(self) -> dict:
        """What was verified: ``evidence`` (the raw report or quote, bytes), ``runtime_keys``,
        ``models`` (name, version, sealed manifest SHA-256) and ``verified_at`` (RFC 3339)."""
        verified = json.loads(self._native.evidence_json())
        verified["evidence"] = base64.b64decode(verified["evidence"])
        return verified

    def models(self) -> list:
        """The models the evidence binds: name, version, manifest_sha256."""
        return self.evidence()["models"]

    def require_model(self, model: str, manifest_sha256: str) -> None:
        """Raises VerificationError unless the evidence binds ``model`` to exactly this sealed
        manifest (SHA-256 hex, as ``cordon seal`` prints it)."""
        self._native.require_model(model, manifest_sha256)

    def metadata(self, model: str) -> dict:
        """The model's metadata (KServe v2): name, versions, platform, inputs, outputs."""
        return self._json("GET", f"/v2/models/{model}")

    def infer(
        self,
        model: str,
        inputs: Mapping[str, object],
        *,
        outputs: Optional[Iterable[str]] = None,
        request_id: Optional[str] = None,
    ) -> Dict[str, np.ndarray]:
        """Runs ``model`` on ``inputs`` (name -> numpy array, or anything ``np.asarray`` takes;
        str/bytes arrays are BYTES tensors) and returns its outputs by name as numpy arrays (BYTES
        outputs as object arrays of bytes). ``outputs`` limits which are returned."""
        raw = [_to_raw(name, value) for name, value in inputs.items()]
        answered = self._native.infer_raw(
            model, raw, None if outputs is None else list(outputs), request_id
        )
        return {name: _from_raw(datatype, shape, data) for name, datatype, shape, data in answered}

    def _json(self, method: str, path: str, body=None) -> dict:
        status, text = self._native.request_json(
            method, path, None if body is None else json.dumps(body)
        )
        answer = json.loads(text)
        if status != 200:
            error = ServerError(f"runtime answered {status}: {answer.get('error', '')}")
            error.status = status
            raise error
        return answer

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

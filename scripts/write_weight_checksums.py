"""Rewrite the tensor checksums (``tensors_sha256.json``) of the weights shipped in ``src/bufferanytime/weights``.

Run it after changing a shipped model or prior; loading verifies every shipped file against these checksums.
"""

from bufferanytime.models.base import write_shipped_digests

if __name__ == "__main__":
    for written in write_shipped_digests():
        print(written)

"""IBM's Key Protect Python client (PyPI `keyprotect`, pinned in requirements.txt), unchanged but
for its URLs, against a running Keyplane: an application's envelope-encryption scenario.

Environment: KEYPLANE_URL (service and IAM token URL), KEYPLANE_API_KEY (a principal's API key),
KEYPLANE_INSTANCE (the internal keystore, as Key Protect's instance id). Prints one line per
step and "python client scenario passed" at the end; any failure exits non-zero.
"""

import base64
import io
import json
import os
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from ibm_cloud_sdk_core import ApiException
from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
from keyprotect.ibm_key_protect_api_v2 import IbmKeyProtectApiV2

URL = os.environ["KEYPLANE_URL"]
INSTANCE = os.environ["KEYPLANE_INSTANCE"]

def explain(kind, error, trace):
    """A failed call names what the server answered."""
    if isinstance(error, ApiException) and error.http_response is not None:
        print(f"server answered {error.code}: {error.http_response.text}", file=sys.stderr)
    sys.__excepthook__(kind, error, trace)


sys.excepthook = explain

service = IbmKeyProtectApiV2(IAMAuthenticator(os.environ["KEYPLANE_API_KEY"], url=URL))
service.set_service_url(URL)


def body(value):
    return io.BytesIO(json.dumps(value).encode("utf-8"))


def data(response):
    result = response.get_result()
    return result.json() if hasattr(result, "json") else result


def step(name):
    print(f"step: {name}", flush=True)


def refused(status, call):
    try:
        call()
    except ApiException as e:
        assert e.code == status, f"expected {status}, got {e.code}: {e.message}"
        return e
    raise AssertionError(f"expected {status}, the call succeeded")


step("create a root key with an alias")
created = data(
    service.create_key(
        bluemix_instance=INSTANCE,
        key_create_body=body(
            {
                "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
                "resources": [
                    {
                        "type": "application/vnd.ibm.kms.key+json",
                        "name": "py-root-1",
                        "description": "made by the Python client",
                        "extractable": False,
                        "aliases": ["py_alias-1"],
                    }
                ],
            }
        ),
        prefer="return=representation",
    )
)
key = created["resources"][0]
key_id = key["id"]
assert key["name"] == "py-root-1", key
assert key["aliases"] == ["py_alias-1"], key
assert key["description"] == "made by the Python client", key
assert key["state"] == 1, key

step("get by id, by alias and by name")
for reference in (key_id, "py_alias-1", "py-root-1"):
    got = data(service.get_key(id=reference, bluemix_instance=INSTANCE))
    assert got["resources"][0]["id"] == key_id, (reference, got)

step("list keys")
listed = data(service.get_keys(bluemix_instance=INSTANCE, limit=2000))
assert any(k["id"] == key_id for k in listed["resources"]), listed
assert listed["metadata"]["collectionTotal"] >= 1

step("key metadata")
meta = data(service.get_key_metadata(id=key_id, bluemix_instance=INSTANCE))
assert meta["resources"][0]["crn"].endswith(f":key:{key_id}"), meta

step("wrap and unwrap, with and without AAD")
wrapped = data(service.wrap_key(id=key_id, bluemix_instance=INSTANCE))
dek = base64.b64decode(wrapped["plaintext"])
assert len(dek) == 32
unwrapped = data(
    service.unwrap_key(
        id=key_id, bluemix_instance=INSTANCE, key_action_unwrap_body=body({"ciphertext": wrapped["ciphertext"]})
    )
)
assert base64.b64decode(unwrapped["plaintext"]) == dek
mine = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
with_aad = data(
    service.wrap_key(
        id="py_alias-1",
        bluemix_instance=INSTANCE,
        key_action_wrap_body=body({"plaintext": mine, "aad": ["tenant-7", "orders"]}),
    )
)
opened = data(
    service.unwrap_key(
        id=key_id,
        bluemix_instance=INSTANCE,
        key_action_unwrap_body=body({"ciphertext": with_aad["ciphertext"], "aad": ["tenant-7", "orders"]}),
    )
)
assert opened["plaintext"] == mine
refused(
    400,
    lambda: service.unwrap_key(
        id=key_id,
        bluemix_instance=INSTANCE,
        key_action_unwrap_body=body({"ciphertext": with_aad["ciphertext"], "aad": ["tenant-8", "orders"]}),
    ),
)

step("rotate, then unwrap an old ciphertext: it comes back rewrapped under the new version")
service.rotate_key(id=key_id, bluemix_instance=INSTANCE)
after = data(
    service.unwrap_key(
        id=key_id, bluemix_instance=INSTANCE, key_action_unwrap_body=body({"ciphertext": wrapped["ciphertext"]})
    )
)
assert base64.b64decode(after["plaintext"]) == dek
assert "ciphertext" in after and after["ciphertext"] != wrapped["ciphertext"], after
assert after["rewrappedKeyVersion"]["id"] != after["keyVersion"]["id"], after
again = data(
    service.unwrap_key(
        id=key_id, bluemix_instance=INSTANCE, key_action_unwrap_body=body({"ciphertext": after["ciphertext"]})
    )
)
assert base64.b64decode(again["plaintext"]) == dek
rotated = data(service.get_key(id=key_id, bluemix_instance=INSTANCE))["resources"][0]
assert "lastRotateDate" in rotated, rotated

step("key versions")
versions = data(service.get_key_versions(id=key_id, bluemix_instance=INSTANCE))
assert versions["metadata"]["collectionTotal"] == 2, versions
assert versions["resources"][0]["id"] == rotated["keyVersion"]["id"], versions

step("aliases")
alias = data(service.create_key_alias(id=key_id, alias="py_alias-2", bluemix_instance=INSTANCE))
assert alias["resources"][0]["alias"] == "py_alias-2", alias
service.delete_key_alias(id=key_id, alias="py_alias-2", bluemix_instance=INSTANCE)
refused(404, lambda: service.get_key(id="py_alias-2", bluemix_instance=INSTANCE))

step("key rings: create, create a key in one, move a key, delete")
service.create_key_ring(key_ring_id="py-ring", bluemix_instance=INSTANCE)
rings = data(service.list_key_rings(bluemix_instance=INSTANCE))
assert [r["id"] for r in rings["resources"]] == ["default", "py-ring"], rings
ringed = data(
    service.create_key(
        bluemix_instance=INSTANCE,
        x_kms_key_ring="py-ring",
        key_create_body=body({"resources": [{"name": "py-ringed", "extractable": False}]}),
    )
)["resources"][0]
assert ringed["keyRingID"] == "py-ring", ringed
in_ring = data(service.get_keys(bluemix_instance=INSTANCE, x_kms_key_ring="py-ring"))
assert [k["id"] for k in in_ring["resources"]] == [ringed["id"]], in_ring
refused(404, lambda: service.get_key(id=ringed["id"], bluemix_instance=INSTANCE, x_kms_key_ring="default"))
refused(409, lambda: service.delete_key_ring(key_ring_id="py-ring", bluemix_instance=INSTANCE))
moved = data(
    service.patch_key(
        id=ringed["id"],
        bluemix_instance=INSTANCE,
        x_kms_key_ring="py-ring",
        key_patch_body=body({"keyRingID": "default"}),
    )
)
assert moved["resources"][0]["keyRingID"] == "default", moved
service.delete_key_ring(key_ring_id="py-ring", bluemix_instance=INSTANCE)
refused(404, lambda: service.get_keys(bluemix_instance=INSTANCE, x_kms_key_ring="py-ring"))

step("policies: rotation is the key's interval, dual authorization the vault's dual control")
policy_body = {
    "metadata": {"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
    "resources": [{"type": "application/vnd.ibm.kms.policy+json", "rotation": {"enabled": True, "interval_month": 2}}],
}
put = data(service.put_policy(id=key_id, bluemix_instance=INSTANCE, key_policy_put_body=policy_body, policy="rotation"))
assert put["resources"][0]["rotation"] == {"enabled": True, "interval_month": 2}, put
got = data(service.get_policy(id="py_alias-1", bluemix_instance=INSTANCE))
kinds = {k: r[k] for r in got["resources"] for k in ("rotation", "dualAuthDelete") if k in r}
assert kinds == {"rotation": {"enabled": True, "interval_month": 2}, "dualAuthDelete": {"enabled": False}}, got
policy_body["resources"][0]["rotation"]["interval_month"] = 13
refused(400, lambda: service.put_policy(id=key_id, bluemix_instance=INSTANCE, key_policy_put_body=policy_body))
instance = data(service.get_instance_policy(bluemix_instance=INSTANCE, policy="dualAuthDelete"))
assert instance["resources"][0]["policy_data"]["enabled"] is False, instance
# Switching the vault's dual control takes an administrator: this principal is refused.
refused(
    403,
    lambda: service.put_instance_policy(
        bluemix_instance=INSTANCE,
        instance_policy_put_body={
            "metadata": {"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
            "resources": [{"policy_type": "dualAuthDelete", "policy_data": {"enabled": True}}],
        },
        policy="dualAuthDelete",
    ),
)
# Without dual control a key is deleted in one call: there is nothing to set for deletion.
refused(409, lambda: service.set_key_for_deletion(id=key_id, bluemix_instance=INSTANCE))

step("import a root key under an import token")
service.post_import_token(bluemix_instance=INSTANCE, expiration=600, max_allowed_retrievals=1)
token = data(service.get_import_token(bluemix_instance=INSTANCE))
public_key = serialization.load_pem_public_key(base64.b64decode(token["payload"]))
material = os.urandom(32)
iv = os.urandom(12)


def imported_key(name, nonce):
    """A root key of `material`, sent under the import token with `nonce` as its proof."""
    payload = public_key.encrypt(
        material, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    )
    return body(
        {
            "resources": [
                {
                    "type": "application/vnd.ibm.kms.key+json",
                    "name": name,
                    "extractable": False,
                    "payload": base64.b64encode(payload).decode(),
                    "encryptionAlgorithm": "RSAES_OAEP_SHA_256",
                    "encryptedNonce": base64.b64encode(AESGCM(material).encrypt(iv, nonce, None)).decode(),
                    "iv": base64.b64encode(iv).decode(),
                }
            ]
        }
    )


imported = data(
    service.create_key(
        bluemix_instance=INSTANCE, key_create_body=imported_key("py-imported", base64.b64decode(token["nonce"]))
    )
)["resources"][0]
assert imported["imported"] is True and imported["state"] == 1, imported
sealed = data(service.wrap_key(id="py-imported", bluemix_instance=INSTANCE))
opened = data(
    service.unwrap_key(id=imported["id"], bluemix_instance=INSTANCE, key_action_unwrap_body=body({"ciphertext": sealed["ciphertext"]}))
)
assert opened["plaintext"] == sealed["plaintext"]
# Material whose nonce proof does not match the token's nonce is refused, and nothing is made.
refused(
    400,
    lambda: service.create_key(
        bluemix_instance=INSTANCE, key_create_body=imported_key("py-imported-2", b"not the nonce")
    ),
)
refused(404, lambda: service.get_key(id="py-imported-2", bluemix_instance=INSTANCE))

step("disable and enable")
service.disable_key(id=key_id, bluemix_instance=INSTANCE)
assert data(service.get_key(id=key_id, bluemix_instance=INSTANCE))["resources"][0]["state"] == 3
refused(409, lambda: service.wrap_key(id=key_id, bluemix_instance=INSTANCE))
service.enable_key(id=key_id, bluemix_instance=INSTANCE)
assert data(service.get_key(id=key_id, bluemix_instance=INSTANCE))["resources"][0]["state"] == 1

step("delete, with the deleted key in the answer")
deleted = data(service.delete_key(id=key_id, bluemix_instance=INSTANCE, prefer="return=representation"))
gone = deleted["resources"][0]
assert gone["state"] == 5 and gone["deleted"] is True, gone
refused(404, lambda: service.get_key(id="py_alias-1", bluemix_instance=INSTANCE))

step("restore is refused, purge removes the deleted key")
refused(409, lambda: service.restore_key(id=key_id, bluemix_instance=INSTANCE))
purged = data(service.purge_key(id=key_id, bluemix_instance=INSTANCE))
assert purged["resources"][0]["id"] == key_id, purged
refused(404, lambda: service.purge_key(id=key_id, bluemix_instance=INSTANCE))
refused(409, lambda: service.purge_key(id=imported["id"], bluemix_instance=INSTANCE))

print("python client scenario passed")
sys.exit(0)

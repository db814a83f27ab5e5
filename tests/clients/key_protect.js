// IBM's Key Protect Node.js client (npm `@ibm-cloud/ibm-key-protect`, pinned in package.json),
// unchanged but for its URLs, against a running Keyplane: an application's envelope-encryption
// scenario. Environment as for key_protect.py; prints "node client scenario passed" at the end.
'use strict';

const assert = require('assert');
const crypto = require('crypto');
const KeyProtectV2 = require('@ibm-cloud/ibm-key-protect/ibm-key-protect-api/v2');
const { IamAuthenticator } = require('@ibm-cloud/ibm-key-protect/auth');

const url = process.env.KEYPLANE_URL;
const bluemixInstance = process.env.KEYPLANE_INSTANCE;
const client = new KeyProtectV2({
  authenticator: new IamAuthenticator({ apikey: process.env.KEYPLANE_API_KEY, url }),
  serviceUrl: url,
});

const step = (name) => console.log(`step: ${name}`);

async function refused(status, call) {
  try {
    await call();
  } catch (e) {
    assert.strictEqual(e.status, status, `expected ${status}, got ${e.status}: ${e.message}`);
    return e;
  }
  throw new Error(`expected ${status}, the call succeeded`);
}

async function main() {
  step('create a root key with an alias');
  const created = await client.createKey({
    bluemixInstance,
    body: {
      metadata: { collectionType: 'application/vnd.ibm.kms.key+json', collectionTotal: 1 },
      resources: [{
        type: 'application/vnd.ibm.kms.key+json',
        name: 'node_key.v2-x',
        extractable: false,
        aliases: ['node-alias'],
      }],
    },
  });
  const key = created.result.resources[0];
  const id = key.id;
  assert.strictEqual(key.name, 'node_key.v2-x');
  assert.deepStrictEqual(key.aliases, ['node-alias']);

  step('get by id, alias and name; list; metadata');
  for (const ref of [id, 'node-alias', 'node_key.v2-x']) {
    const got = await client.getKey({ bluemixInstance, id: ref });
    assert.strictEqual(got.result.resources[0].id, id, ref);
  }
  const listed = await client.getKeys({ bluemixInstance, limit: 5000 });
  assert(listed.result.resources.some((k) => k.id === id));
  const meta = await client.getKeyMetadata({ bluemixInstance, id });
  assert.strictEqual(meta.result.resources[0].keyRingID, 'default');

  step('wrap and unwrap, with and without AAD');
  const generated = await client.wrapKey({ bluemixInstance, id, keyActionWrapBody: {} });
  assert.strictEqual(Buffer.from(generated.result.plaintext, 'base64').length, 32);
  const plaintext = Buffer.from('node data key, 32 bytes long....').toString('base64');
  const wrapped = await client.wrapKey({
    bluemixInstance, id: 'node-alias', keyActionWrapBody: { plaintext, aad: ['tenant-3'] },
  });
  const opened = await client.unwrapKey({
    bluemixInstance, id, keyActionUnwrapBody: { ciphertext: wrapped.result.ciphertext, aad: ['tenant-3'] },
  });
  assert.strictEqual(opened.result.plaintext, plaintext);
  await refused(400, () => client.unwrapKey({
    bluemixInstance, id, keyActionUnwrapBody: { ciphertext: wrapped.result.ciphertext, aad: ['tenant-4'] },
  }));

  step('rotate, then unwrap an old ciphertext: rewrapped under the new version');
  await client.rotateKey({ bluemixInstance, id });
  const after = await client.unwrapKey({
    bluemixInstance, id, keyActionUnwrapBody: { ciphertext: wrapped.result.ciphertext, aad: ['tenant-3'] },
  });
  assert.strictEqual(after.result.plaintext, plaintext);
  assert(after.result.ciphertext && after.result.rewrappedKeyVersion, JSON.stringify(after.result));
  const rewrapped = await client.rewrapKey({
    bluemixInstance, id, keyActionRewrapBody: { ciphertext: wrapped.result.ciphertext, aad: ['tenant-3'] },
  });
  assert(rewrapped.result.ciphertext);

  step('versions, aliases, key rings');
  const versions = await client.getKeyVersions({ bluemixInstance, id });
  assert.strictEqual(versions.result.metadata.collectionTotal, 2);
  await client.createKeyAlias({ bluemixInstance, id, alias: 'node-alias-2' });
  await client.deleteKeyAlias({ bluemixInstance, id, alias: 'node-alias-2' });
  await refused(404, () => client.getKey({ bluemixInstance, id: 'node-alias-2' }));
  const rings = await client.listKeyRings({ bluemixInstance });
  assert.strictEqual(rings.result.resources[0].id, 'default');

  step('disable and enable');
  await client.disableKey({ bluemixInstance, id });
  await refused(409, () => client.wrapKey({ bluemixInstance, id, keyActionWrapBody: {} }));
  await client.enableKey({ bluemixInstance, id });

  step('key rings');
  await client.createKeyRing({ bluemixInstance, keyRingId: 'node-ring' });
  const ringed = await client.createKey({
    bluemixInstance,
    xKmsKeyRing: 'node-ring',
    body: { resources: [{ name: 'node-ringed', extractable: false }] },
  });
  assert.strictEqual(ringed.result.resources[0].keyRingID, 'node-ring');
  const rings2 = await client.listKeyRings({ bluemixInstance });
  assert.deepStrictEqual(rings2.result.resources.map((r) => r.id), ['default', 'node-ring']);
  await refused(409, () => client.deleteKeyRing({ bluemixInstance, keyRingId: 'node-ring' }));

  step('policies');
  const policy = await client.putPolicy({
    bluemixInstance,
    id,
    policy: 'rotation',
    setKeyPoliciesOneOf: {
      metadata: { collectionType: 'application/vnd.ibm.kms.policy+json', collectionTotal: 1 },
      resources: [{ type: 'application/vnd.ibm.kms.policy+json', rotation: { interval_month: 6 } }],
    },
  });
  assert.deepStrictEqual(policy.result.resources[0].rotation, { enabled: true, interval_month: 6 });
  const dual = await client.getPolicy({ bluemixInstance, id, policy: 'dualAuthDelete' });
  assert.deepStrictEqual(dual.result.resources[0].dualAuthDelete, { enabled: false });
  const instance = await client.getInstancePolicy({ bluemixInstance });
  assert.strictEqual(instance.result.resources[0].policy_type, 'dualAuthDelete');
  await refused(403, () => client.putInstancePolicy({
    bluemixInstance,
    policy: 'dualAuthDelete',
    setInstancePoliciesOneOf: {
      metadata: { collectionType: 'application/vnd.ibm.kms.policy+json', collectionTotal: 1 },
      resources: [{ policy_type: 'dualAuthDelete', policy_data: { enabled: true } }],
    },
  }));
  await refused(409, () => client.setKeyForDeletion({ bluemixInstance, id }));

  step('import a root key under an import token');
  const token = await client.postImportToken({
    bluemixInstance, body: { expiration: 600, maxAllowedRetrievals: 1 },
  });
  assert(token.result.id && token.result.expirationDate, JSON.stringify(token.result));
  const retrieved = await client.getImportToken({ bluemixInstance });
  const publicKey = Buffer.from(retrieved.result.payload, 'base64').toString();
  const material = crypto.randomBytes(32);
  const iv = crypto.randomBytes(12);
  const gcm = crypto.createCipheriv('aes-256-gcm', material, iv);
  const sealedNonce = Buffer.concat([
    gcm.update(Buffer.from(retrieved.result.nonce, 'base64')), gcm.final(), gcm.getAuthTag(),
  ]);
  const imported = await client.createKey({
    bluemixInstance,
    body: {
      resources: [{
        type: 'application/vnd.ibm.kms.key+json',
        name: 'node-imported',
        extractable: false,
        payload: crypto.publicEncrypt(
          { key: publicKey, padding: crypto.constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
          material,
        ).toString('base64'),
        encryptionAlgorithm: 'RSAES_OAEP_SHA_256',
        encryptedNonce: sealedNonce.toString('base64'),
        iv: iv.toString('base64'),
      }],
    },
  });
  assert.strictEqual(imported.result.resources[0].imported, true);
  const importedWrap = await client.wrapKey({
    bluemixInstance, id: 'node-imported', keyActionWrapBody: {},
  });
  const importedOpen = await client.unwrapKey({
    bluemixInstance,
    id: imported.result.resources[0].id,
    keyActionUnwrapBody: { ciphertext: importedWrap.result.ciphertext },
  });
  assert.strictEqual(importedOpen.result.plaintext, importedWrap.result.plaintext);

  step('delete, with the deleted key in the answer');
  const deleted = await client.deleteKey({ bluemixInstance, id, prefer: 'return=representation' });
  assert.strictEqual(deleted.result.resources[0].state, 5);
  await refused(404, () => client.getKey({ bluemixInstance, id: 'node-alias' }));
  await refused(409, () => client.restoreKey({ bluemixInstance, id }));

  console.log('node client scenario passed');
  // A refused stream-typed call (restoreKey) leaves its socket to the agent: leave at once.
  process.exit(0);
}

main().catch((e) => {
  console.error(e.status ? `server answered ${e.status}: ${JSON.stringify(e.body || e.message)}` : e);
  process.exit(1);
});

// Drives the Keyplane web console in headless Chromium through a key custodian's whole flow:
// sign in, connect a keystore, create a template and a key, activate it, see a disconnect
// refused with the blocking key named, deactivate and destroy the key, disconnect through the
// "Disconnect keystore" dialog, and see the keystore gone. A screenshot of each step is written
// to $SCREENSHOTS.
//
//   KEYPLANE_URL=http://127.0.0.1:8080 KEYPLANE_API_KEY=... SCREENSHOTS=dir node console.mjs

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const base = process.env.KEYPLANE_URL;
const apiKey = process.env.KEYPLANE_API_KEY;
const shots = process.env.SCREENSHOTS ?? "screenshots";
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
if (!base || !apiKey) {
  console.error("set KEYPLANE_URL and KEYPLANE_API_KEY");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

let step = 0;
async function snap(page, name) {
  step += 1;
  const file = join(shots, `${String(step).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`step ${step}: ${name}`);
}

// A section of the top navigation.
async function section(page, name) {
  await page.getByRole("navigation", { name: "Sections" }).getByRole("link", { name }).click();
}

function check(condition, message) {
  if (!condition) {
    throw new Error(message);
  }
}

async function expectText(locator, text, what) {
  const content = await locator.innerText();
  check(content.includes(text), `${what}: expected "${text}" in "${content}"`);
}

const suffix = Date.now().toString(36);
const vaultName = `payments-${suffix}`;
const keystoreName = `payments-ks-${suffix}`;
const templateName = `pay-${suffix}`.slice(0, 30);
const keyLabel = `payroll-${suffix}`;

const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  const page = await context.newPage();

  // Sign in with an API key; the session cookie is HttpOnly and SameSite=Strict.
  await page.goto(`${base}/ui`);
  check(page.url().endsWith("/ui/login"), `not sent to sign-in: ${page.url()}`);
  await page.getByLabel("API key or access token").fill("not-a-key");
  await page.getByRole("button", { name: "Sign in" }).click();
  await expectText(page.getByRole("alert"), "was not accepted", "a bad key");
  await page.getByLabel("API key or access token").fill(apiKey);
  await snap(page, "sign-in");
  await page.getByLabel("API key or access token").press("Enter");
  await page.getByRole("heading", { name: "Keystores" }).waitFor();
  const session = (await context.cookies()).find((c) => c.name === "keyplane_session");
  check(session && session.httpOnly && session.sameSite === "Strict", "session cookie attributes");

  // A vault to work in.
  await section(page, "Vaults");
  await page.getByRole("link", { name: "Create vault" }).click();
  await page.getByLabel("Name").fill(vaultName);
  await page.getByLabel("Description").fill("Payment keys");
  await page.getByRole("button", { name: "Create vault" }).click();
  await expectText(page.getByRole("status"), `Vault ${vaultName} created.`, "vault created");
  await snap(page, "vault-created");

  // Connect an internal keystore through the wizard, testing the connection first.
  await section(page, "Keystores");
  await page.getByRole("link", { name: "Connect keystore" }).click();
  await snap(page, "connect-choose-type");
  await page.getByRole("link", { name: "Internal keystore (this Keyplane)" }).click();
  await page.getByLabel("Vault").selectOption({ label: vaultName });
  await page.getByLabel("Name").fill(keystoreName);
  await page.getByLabel("Groups").fill("payments");
  await page.getByRole("button", { name: "Test connection" }).click();
  await expectText(page.getByRole("status"), "The connection works", "test connection");
  await snap(page, "connect-tested");
  await page.getByRole("button", { name: "Connect", exact: true }).click();
  await expectText(page.getByRole("status"), `Keystore ${keystoreName} connected.`, "connected");
  await page.getByRole("heading", { name: "Details" }).waitFor();
  await snap(page, "keystore-details");

  // A template whose keys start pre-active and go to the keystore's group.
  await section(page, "Templates");
  await page.getByRole("link", { name: "Create template" }).click();
  await page.getByLabel("Vault").selectOption({ label: vaultName });
  await page.getByLabel("Name", { exact: true }).fill(templateName);
  await page.getByLabel("Algorithm").selectOption("aes");
  await page.getByLabel("Size").fill("256");
  await page.getByLabel("State of new keys").selectOption("pre_activation");
  await page.getByLabel("Type 1").selectOption("ibm_cloud_kms");
  await page.getByLabel("Group 1").fill("payments");
  await snap(page, "template-form");
  await page.getByRole("button", { name: "Create template" }).click();
  await expectText(page.getByRole("status"), `Template ${templateName} created.`, "template");

  // A key from it, then activated.
  await section(page, "Managed keys");
  await page.getByRole("link", { name: "Create key" }).click();
  const option = page.getByLabel("Template").locator("option", { hasText: templateName });
  await page.getByLabel("Template").selectOption(await option.getAttribute("value"));
  await page.getByLabel("Label").fill(keyLabel);
  await page.getByRole("button", { name: "Create key" }).click();
  await expectText(page.getByRole("status"), `Key ${keyLabel} created.`, "key created");
  await expectText(page.locator(".heading .state"), "Pre-active", "new key state");
  await page.getByRole("button", { name: "Activate" }).click();
  await expectText(page.getByRole("status"), "The key is active", "activated");
  await expectText(page.locator(".heading .state"), "Active", "key state");
  await expectText(page.locator("table").first(), keystoreName, "distribution lists the keystore");
  await expectText(page.getByRole("table", { name: "Versions of the key" }), "Active", "versions");
  await snap(page, "key-active");

  // The keys list, filtered by label.
  await section(page, "Managed keys");
  await page.getByLabel("Label").fill(keyLabel);
  await page.getByRole("button", { name: "Filter" }).click();
  await expectText(page.locator("table.list"), keyLabel, "filtered list");
  await snap(page, "keys-filtered");

  // Disconnect is refused while the key is active; the panel names and links the key.
  await section(page, "Keystores");
  await page.getByRole("link", { name: keystoreName }).click();
  await page.getByRole("link", { name: "Disconnect" }).click();
  const dialog = page.getByRole("dialog", { name: "Disconnect keystore" });
  await dialog.waitFor();
  await snap(page, "disconnect-dialog");
  await dialog.getByRole("button", { name: "Disconnect keystore" }).click();
  const refusal = page.locator("#refusal");
  await expectText(refusal, "The keystore was not disconnected.", "refusal");
  await expectText(refusal, keyLabel, "refusal names the key");
  await snap(page, "disconnect-refused");

  // Deactivate, then destroy, each confirmed.
  await refusal.getByRole("link", { name: keyLabel }).click();
  await page.getByRole("link", { name: "Deactivate" }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Deactivate key" }).click();
  await expectText(page.getByRole("status"), "The key was deactivated.", "deactivated");
  await page.getByRole("link", { name: "Destroy" }).click();
  await snap(page, "destroy-dialog");
  await page.getByRole("dialog").getByRole("button", { name: "Destroy key" }).click();
  await expectText(page.getByRole("status"), "The key was destroyed.", "destroyed");
  await expectText(page.locator(".heading .state"), "Destroyed", "key state");
  await snap(page, "key-destroyed");

  // Now the disconnect goes through the dialog, and the keystore is gone from the list.
  await section(page, "Keystores");
  await page.getByRole("link", { name: keystoreName }).click();
  await page.getByRole("link", { name: "Disconnect" }).click();
  await page
    .getByRole("dialog", { name: "Disconnect keystore" })
    .getByRole("button", { name: "Disconnect keystore" })
    .click();
  await expectText(page.getByRole("status"), "The keystore was disconnected.", "disconnected");
  check((await page.getByRole("link", { name: keystoreName }).count()) === 0, "keystore still listed");
  await snap(page, "keystore-gone");

  // The audit trail shows what happened, and its chain verifies.
  await section(page, "Audit");
  await expectText(page.locator("#chain"), "Chain verified", "audit chain");
  await expectText(page.locator("table.list"), "keyplane.target-keystores.delete", "audit lists the disconnect");
  await snap(page, "audit");

  // Reading works without JavaScript.
  const plain = await browser.newContext({ javaScriptEnabled: false, storageState: await context.storageState() });
  const reader = await plain.newPage();
  await reader.goto(`${base}/ui/keys?state=any&label=${keyLabel}`);
  await expectText(reader.locator("table.list"), "Destroyed", "no-script key list");
  await plain.close();

  // Signing out ends the session.
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.goto(`${base}/ui/keystores`);
  check(page.url().endsWith("/ui/login"), "still signed in after signing out");
  console.log("console flow passed");
} finally {
  await browser.close();
}

// Drives the Vigil dashboard in Debian's chromium (playwright-core, no bundled
// browser) for tests/tests/dashboard_browser.rs. Env: DASH_URL, DASH_TOKEN,
// DASH_OUT (screenshot dir), CHROMIUM (default /usr/bin/chromium).
// Prints "APPROVED" when the approval went through (the Rust side then injects
// the canary fault) and "RESULT {json}" at the end; exits non-zero on any failure.
import { chromium } from "playwright-core";

const url = process.env.DASH_URL;
const token = process.env.DASH_TOKEN;
const out = process.env.DASH_OUT;
const fail = (msg) => { console.error("FAIL " + msg); process.exitCode = 1; throw new Error(msg); };
const say = (msg) => console.log(msg);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const result = {};
const consoleErrors = [];
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1100 } });
  const page = await context.newPage();
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));

  await page.goto(url, { waitUntil: "load" });
  await page.waitForSelector('#canaries tr[data-canary="checkout"]', { timeout: 20000 });
  say("canary row shown");
  const phase = () => page.textContent('#canaries tr[data-canary="checkout"] [data-field="phase"]');
  const points = async (plot) => Number(await page.getAttribute(`#canary-checkout canvas[data-plot="${plot}"]`, "data-points"));

  // The live plots move during the running scenario.
  await page.waitForFunction(() => Number(document.querySelector('#canary-checkout canvas[data-plot="rate"]')?.dataset.points || 0) >= 6, null, { timeout: 20000 });
  const before = { rate: await points("rate"), latency: await points("latency") };
  await page.waitForTimeout(3000);
  const after = { rate: await points("rate"), latency: await points("latency") };
  say(`plot points rate ${before.rate} -> ${after.rate}, latency ${before.latency} -> ${after.latency}`);
  if (!(after.rate > before.rate && after.latency > before.latency)) fail("plots did not move");
  result.plot_points = { before, after };
  if (consoleErrors.length) fail("console errors while loading: " + consoleErrors.join(" | "));

  // The approval gate: refused without credentials, phase unchanged.
  await page.waitForSelector('#approvals button[data-action="approve"][data-canary="checkout"]', { timeout: 45000 });
  if ((await phase()) !== "waiting_approval") fail("approval shown but phase is " + (await phase()));
  await page.screenshot({ path: out + "/dashboard-approval.png", fullPage: true });
  await page.click('#approvals button[data-action="approve"][data-canary="checkout"]');
  await page.waitForFunction(() => document.querySelector("#message").textContent.includes("refused (401)"), null, { timeout: 10000 });
  result.refused = await page.textContent("#message");
  say("without credentials: " + result.refused);
  await page.waitForTimeout(1500);
  if ((await phase()) !== "waiting_approval") fail("phase changed without credentials: " + (await phase()));

  // A reporter (sidecar) credential is not an operator's: refused too.
  if (process.env.DASH_REPORTER_TOKEN) {
    await page.fill("#token", process.env.DASH_REPORTER_TOKEN);
    await page.click("#login-button");
    await page.waitForSelector("#who.operator");
    await page.click('#approvals button[data-action="approve"][data-canary="checkout"]');
    await page.waitForFunction(() => /refused \((401|403)\)/.test(document.querySelector("#message").textContent), null, { timeout: 10000 });
    result.refused_reporter = await page.textContent("#message");
    say("with a reporter credential: " + result.refused_reporter);
    await page.waitForTimeout(1200);
    if ((await phase()) !== "waiting_approval") fail("phase changed with a reporter credential");
    await page.click("#logout-button");
  }
  // Sign in as an operator and approve.
  await page.fill("#token", token);
  await page.click("#login-button");
  await page.waitForSelector("#who.operator");
  await page.click('#approvals button[data-action="approve"][data-canary="checkout"]');
  await page.waitForFunction(() => {
    const p = document.querySelector('#canaries tr[data-canary="checkout"] [data-field="phase"]')?.textContent;
    return p === "progressing" || p === "promoted" || p === "rolled_back";
  }, null, { timeout: 10000 });
  result.after_approve = await phase();
  say("approved: phase " + result.after_approve);
  await page.waitForFunction(() => [...document.querySelectorAll("#audit tbody tr")].some((tr) => tr.textContent.includes("alice") && tr.dataset.action.includes("approve")), null, { timeout: 10000 });
  say("APPROVED");

  // The fault: the rollback decision with its reason, and the chain intact.
  await page.waitForFunction(() => document.querySelector('#canaries tr[data-canary="checkout"] [data-field="phase"]')?.textContent === "rolled_back", null, { timeout: 45000 });
  await page.waitForSelector('#canary-checkout tr[data-kind="rollback"] td.reason', { timeout: 10000 });
  result.rollback_reason = await page.textContent('#canary-checkout tr[data-kind="rollback"] td.reason');
  say("rollback: " + result.rollback_reason);
  if (!/error/.test(result.rollback_reason) || !/n=/.test(result.rollback_reason)) fail("rollback reason without numbers: " + result.rollback_reason);
  await page.waitForSelector('#chain[data-intact="true"]', { timeout: 10000 });
  result.chain = await page.textContent("#chain");
  result.audit_rows = await page.locator("#audit tbody tr").count();
  await page.waitForTimeout(2500);
  await page.screenshot({ path: out + "/dashboard-rollback.png", fullPage: true });
  await page.locator("#canary-checkout").screenshot({ path: out + "/dashboard-canary.png" });

  result.cookies = (await context.cookies()).length;
  if (result.cookies !== 0) fail("the dashboard set cookies");
  const foreign = requests.filter((r) => !r.startsWith(new URL(url).origin) && !r.startsWith("data:"));
  if (foreign.length) fail("requests off the origin: " + foreign.join(", "));
  result.requests = requests.length;
  // Chromium logs the refused (401) write as a failed resource load: the one expected
  // console line; anything else fails.
  const refusal = (e) => /status of 40[13]/.test(e);
  const refusedLoad = consoleErrors.filter(refusal);
  if (refusedLoad.length > 2) fail("more than the two expected refusals: " + refusedLoad.join(" | "));
  consoleErrors.splice(0, consoleErrors.length, ...consoleErrors.filter((e) => !refusal(e)));
  result.console_errors = consoleErrors;
  if (consoleErrors.length) fail("console errors: " + consoleErrors.join(" | "));
  say("RESULT " + JSON.stringify(result));
} finally {
  if (consoleErrors.length) console.error("console errors: " + consoleErrors.join(" | "));
  await browser.close();
}

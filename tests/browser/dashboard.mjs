// Drives the Vigil dashboard in Debian's chromium (playwright-core, no bundled
// browser) for tests/tests/dashboard_browser.rs. Env: DASH_URL, DASH_TOKEN (operator),
// DASH_REPORTER_TOKEN, DASH_OUT (screenshot dir), CHROMIUM (default /usr/bin/chromium).
// Prints "APPROVED" when the approval went through (the Rust side then injects
// the canary fault) and "RESULT {json}" at the end; exits non-zero on any failure.
import { open, plotsMove, rollbackReason, hygiene, phaseSel, say, fail } from "./lib.mjs";

const token = process.env.DASH_TOKEN;
const out = process.env.DASH_OUT;
const canary = "checkout";
const approveSel = `#approvals button[data-action="approve"][data-canary="${canary}"]`;
const s = await open(process.env.DASH_URL);
const result = {};
try {
  const { page } = s;
  await page.waitForSelector(`#canaries tr[data-canary="${canary}"]`, { timeout: 20000 });
  say("canary row shown");
  const phase = () => page.textContent(phaseSel(canary));

  // The live plots move during the running scenario.
  result.plot_points = await plotsMove(page, canary);
  if (s.consoleErrors.length) fail("console errors while loading: " + s.consoleErrors.join(" | "));

  // The approval gate: refused without credentials, phase unchanged.
  await page.waitForSelector(approveSel, { timeout: 45000 });
  if ((await phase()) !== "waiting_approval") fail("approval shown but phase is " + (await phase()));
  await page.screenshot({ path: out + "/dashboard-approval.png", fullPage: true });
  await page.click(approveSel);
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
    await page.click(approveSel);
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
  await page.click(approveSel);
  await page.waitForFunction((sel) => {
    const p = document.querySelector(sel)?.textContent;
    return p === "progressing" || p === "promoted" || p === "rolled_back";
  }, phaseSel(canary), { timeout: 10000 });
  result.after_approve = await phase();
  say("approved: phase " + result.after_approve);
  await page.waitForFunction(() => [...document.querySelectorAll("#audit tbody tr")].some((tr) => tr.textContent.includes("alice") && tr.dataset.action.includes("approve")), null, { timeout: 10000 });
  say("APPROVED");

  // The fault: the rollback decision with its reason, and the chain intact.
  result.rollback_reason = await rollbackReason(page, canary, 45000);
  if (!/error/.test(result.rollback_reason)) fail("rollback reason does not name the error check: " + result.rollback_reason);
  await page.waitForSelector('#chain[data-intact="true"]', { timeout: 10000 });
  result.chain = await page.textContent("#chain");
  result.audit_rows = await page.locator("#audit tbody tr").count();
  await page.waitForTimeout(2500);
  await page.screenshot({ path: out + "/dashboard-rollback.png", fullPage: true });
  await page.locator(`#canary-${canary}`).screenshot({ path: out + "/dashboard-canary.png" });
  // Two refused writes (no credential, reporter credential) are the expected console lines.
  await hygiene(s, result, 2);
  say("RESULT " + JSON.stringify(result));
} finally {
  if (s.consoleErrors.length) console.error("console errors: " + s.consoleErrors.join(" | "));
  await s.browser.close();
}

// Shared pieces of the dashboard scripts (dashboard.mjs, demo.mjs): Debian's chromium
// through playwright-core (no bundled browser), console-error and request capture,
// the plots-moving and rollback-reason checks, the end-of-run hygiene checks.
import { chromium } from "playwright-core";

export const say = (msg) => console.log(msg);
export const fail = (msg) => { console.error("FAIL " + msg); process.exitCode = 1; throw new Error(msg); };

// Opens `url` in a fresh context; returns what the checks need.
export async function open(url) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  const context = await browser.newContext({ viewport: { width: 1400, height: 1100 } });
  const page = await context.newPage();
  const consoleErrors = [];
  const requests = [];
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  page.on("request", (r) => requests.push(r.url()));
  await page.goto(url, { waitUntil: "load" });
  return { browser, context, page, consoleErrors, requests, url };
}

export const phaseSel = (canary) => `#canaries tr[data-canary="${canary}"] [data-field="phase"]`;
export const plotSel = (canary, plot) => `#canary-${canary} canvas[data-plot="${plot}"]`;

// The live plots gain points over `ms` while the run goes on.
export async function plotsMove(page, canary, ms = 3000) {
  const points = async (plot) => Number(await page.getAttribute(plotSel(canary, plot), "data-points"));
  await page.waitForFunction((sel) => Number(document.querySelector(sel)?.dataset.points || 0) >= 6, plotSel(canary, "rate"), { timeout: 30000 });
  const before = { rate: await points("rate"), latency: await points("latency") };
  await page.waitForTimeout(ms);
  const after = { rate: await points("rate"), latency: await points("latency") };
  say(`plot points rate ${before.rate} -> ${after.rate}, latency ${before.latency} -> ${after.latency}`);
  if (!(after.rate > before.rate && after.latency > before.latency)) fail("plots did not move");
  return { before, after };
}

// Waits for the canary's phase to be rolled_back; returns the rollback's reason from the
// timeline (it must name the failing check and its numbers).
export async function rollbackReason(page, canary, timeout = 60000) {
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent === "rolled_back", phaseSel(canary), { timeout });
  const sel = `#canary-${canary} tr[data-kind="rollback"] td.reason`;
  await page.waitForSelector(sel, { timeout: 10000 });
  const reason = await page.textContent(sel);
  say("rollback: " + reason);
  if (!/n=/.test(reason)) fail("rollback reason without numbers: " + reason);
  return reason;
}

// No cookies, no request off the origin, no console error beyond `allowedRefusals`
// refused writes (Chromium logs a 401/403 answer as a failed resource load).
export async function hygiene(s, result, allowedRefusals = 0) {
  result.cookies = (await s.context.cookies()).length;
  if (result.cookies !== 0) fail("the dashboard set cookies");
  const origin = new URL(s.url).origin;
  const foreign = s.requests.filter((r) => !r.startsWith(origin) && !r.startsWith("data:"));
  if (foreign.length) fail("requests off the origin: " + foreign.join(", "));
  result.requests = s.requests.length;
  const refusal = (e) => /status of 40[13]/.test(e);
  const refused = s.consoleErrors.filter(refusal);
  if (refused.length > allowedRefusals) fail(`more than the ${allowedRefusals} expected refusals: ` + refused.join(" | "));
  result.console_errors = s.consoleErrors.filter((e) => !refusal(e));
  if (result.console_errors.length) fail("console errors: " + result.console_errors.join(" | "));
}

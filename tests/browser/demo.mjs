// Opens the dashboard URL that `make demo` (vigil-demo) printed, during the demo, for
// demo/tests/dashboard.rs. Env: DASH_URL, DASH_OUT (screenshot dir), CHROMIUM.
// Checks the canary is shown, its plots move, and the rollback decision appears with its
// reason (and as a mark on the plots); saves screenshots; prints "RESULT {json}".
import { open, plotsMove, rollbackReason, hygiene, phaseSel, plotSel, say, fail } from "./lib.mjs";

const out = process.env.DASH_OUT;
const canary = "checkout";
const s = await open(process.env.DASH_URL);
const result = {};
try {
  const { page } = s;
  await page.waitForSelector(`#canaries tr[data-canary="${canary}"]`, { timeout: 20000 });
  result.first_phase = await page.textContent(phaseSel(canary));
  result.first_weight = await page.textContent(`#canaries tr[data-canary="${canary}"] [data-field="weight"]`);
  say(`canary ${canary} shown: ${result.first_phase} at ${result.first_weight}`);
  result.plot_points = await plotsMove(page, canary);
  if (s.consoleErrors.length) fail("console errors while loading: " + s.consoleErrors.join(" | "));
  result.rollback_reason = await rollbackReason(page, canary);
  result.final_weight = await page.textContent(`#canaries tr[data-canary="${canary}"] [data-field="weight"]`);
  // The decision is marked on the plots (drawn on the next refresh).
  await page.waitForFunction((sel) => (document.querySelector(sel)?.dataset.marks || "").split(" ").includes("rollback"), plotSel(canary, "rate"), { timeout: 5000 });
  result.marks = await page.getAttribute(plotSel(canary, "rate"), "data-marks");
  result.timeline = await page.$$eval(`#canary-${canary} tbody tr`, (rows) => rows.map((r) => r.dataset.kind));
  await page.waitForSelector('#chain[data-intact="true"]', { timeout: 10000 });
  result.chain = await page.textContent("#chain");
  await page.waitForTimeout(3000); // a few points after the decision on the plots
  await page.screenshot({ path: out + "/demo-dashboard.png", fullPage: true });
  await page.locator(`#canary-${canary}`).screenshot({ path: out + "/demo-canary.png" });
  await hygiene(s, result, 0);
  say("RESULT " + JSON.stringify(result));
} finally {
  if (s.consoleErrors.length) console.error("console errors: " + s.consoleErrors.join(" | "));
  await s.browser.close();
}

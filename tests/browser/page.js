// Loads a course page in headless Chromium and waits for its review count to change live.
// Usage: node page.js URL SCREENSHOT. Prints "loaded <count>" once the page is connected to
// its event stream, then "changed <count>" after the count shown changed without a reload
// (the screenshot saved then). Exits non-zero if that does not happen within 30 s.
"use strict";

const puppeteer = require("puppeteer-core");

const [url, screenshot] = process.argv.slice(2);
const chromium = process.env.CHROMIUM || "/usr/bin/chromium";

async function main() {
  const browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    args: ["--no-sandbox", "--headless", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  try {
    const page = await browser.newPage();
    page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
    const response = await page.goto(url, { waitUntil: "load" });
    if (!response.ok()) throw new Error(`${url} answered ${response.status()}`);
    // The first event arrived: every later change comes from a notification.
    await page.waitForFunction(
      () => document.getElementById("live").textContent === "live",
      { timeout: 30000 },
    );
    const count = () => page.$eval("#review_count", (e) => e.textContent);
    const before = await count();
    console.log(`loaded ${before}`);
    await page.waitForFunction(
      (b) => document.getElementById("review_count").textContent !== b,
      { timeout: 30000, polling: 100 },
      before,
    );
    await page.screenshot({ path: screenshot, fullPage: true });
    console.log(`changed ${await count()}`);
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});

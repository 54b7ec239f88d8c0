// Loads a course page in headless Chromium and waits for its review count to change live.
// Usage: node page.js URL SCREENSHOT. Prints "loaded <count>" once the page is connected to
// its event stream and passed the accessibility check, then "changed <count>" after the count
// shown changed without a reload (the screenshot saved then). Exits non-zero if that does not
// happen within 30 s.
"use strict";

const { launch, open, checkAccessibility, run } = require("./lib");

const [url, screenshot] = process.argv.slice(2);

run(async () => {
  const browser = await launch();
  try {
    const page = await open(browser, url);
    // The first event arrived: every later change comes from a notification.
    await page.waitForFunction(
      () => document.getElementById("live").textContent === "live",
      { timeout: 30000 },
    );
    await checkAccessibility(page);
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
});

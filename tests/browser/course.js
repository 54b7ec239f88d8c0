// The course page in headless Chromium, as a reader at a desktop and on a phone sees it.
// Usage: node course.js URL DESKTOP_PNG PHONE_PNG TODAY MARKER
// 1. At 1280 px: once connected to its event stream and passing the accessibility check,
//    prints "loaded <count>".
// 2. Then waits (the test inserts a review by SQL) until, without a reload, the count shown
//    changed, the reviews list shows the review whose text contains MARKER, and the chart has
//    a point for TODAY (YYYY-MM-DD); checks accessibility again, saves DESKTOP_PNG and
//    prints "changed <count>".
// 3. At 375 px: checks accessibility, that the page does not scroll sideways, saves
//    PHONE_PNG and prints "narrow".
// Exits non-zero if any of it fails or does not happen within 30 s.
"use strict";

const { launch, open, checkAccessibility, scrollsSideways, run } = require("./lib");

const [url, desktop, phone, today, marker] = process.argv.slice(2);

run(async () => {
  const browser = await launch();
  try {
    const page = await open(browser, url, { width: 1280, height: 900 });
    await page.waitForFunction(
      () => document.getElementById("live").textContent === "live",
      { timeout: 30000 },
    );
    await checkAccessibility(page);
    const count = () => page.$eval("#review_count", (e) => e.textContent);
    const before = await count();
    console.log(`loaded ${before}`);
    await page.waitForFunction(
      (b, day, text) =>
        document.getElementById("review_count").textContent !== b &&
        document.getElementById("reviews").textContent.includes(text) &&
        document.querySelector(`#chart circle[data-day="${day}"]`) !== null,
      { timeout: 30000, polling: 100 },
      before,
      today,
      marker,
    );
    await checkAccessibility(page);
    await page.screenshot({ path: desktop, fullPage: true });
    console.log(`changed ${await count()}`);

    await page.setViewport({ width: 375, height: 800 });
    await checkAccessibility(page);
    if (await scrollsSideways(page)) {
      const wide = await page.evaluate(() =>
        Array.from(document.querySelectorAll("body *"))
          .filter((e) => e.getBoundingClientRect().right > window.innerWidth)
          .slice(0, 5)
          .map((e) => e.tagName + (e.id ? "#" + e.id : "")),
      );
      throw new Error(`at 375 px the page scrolls sideways; wider than the screen: ${wide}`);
    }
    await page.screenshot({ path: phone, fullPage: true });
    console.log("narrow");
  } finally {
    await browser.close();
  }
});

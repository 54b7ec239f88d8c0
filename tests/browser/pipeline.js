// The pipeline page on a phone-sized viewport, while the test stops cdc and starts it again.
// Usage: node pipeline.js URL RISING_SCREENSHOT FALLING_SCREENSHOT. Prints:
// - "loaded <state>" once the page rendered a reading, passed the accessibility check and
//   was found not to scroll sideways at 375 px;
// - "rising <bytes>" once the slot shows inactive and its WAL held grew over two readings
//   with a change waiting (first screenshot);
// - "falling <bytes>" once the slot shows active again, no change waiting and less WAL held
//   than at its peak (second screenshot).
// Exits non-zero if a step does not happen within its time.
"use strict";

const { launch, open, checkAccessibility, scrollsSideways, run } = require("./lib");

const [url, rising, falling] = process.argv.slice(2);

run(async () => {
  const browser = await launch();
  try {
    const page = await open(browser, url, { width: 375, height: 800 });
    await page.waitForFunction(
      () => document.getElementById("live").textContent.startsWith("live"),
      { timeout: 30000 },
    );
    await checkAccessibility(page);
    if (await scrollsSideways(page)) throw new Error("the page scrolls sideways at 375 px");
    const slot = () =>
      page.evaluate(() => ({
        state: document.getElementById("slot_state").textContent,
        bytes: Number(document.getElementById("slot_held").dataset.bytes),
        seconds: Number(document.getElementById("slot_lag").dataset.seconds),
      }));
    console.log(`loaded ${(await slot()).state}`);

    // Each reading the page rendered, as it changes (the page polls every two seconds).
    let last = await page.$eval("#live", (e) => e.textContent);
    const next = async () => {
      await page.waitForFunction(
        (l) => document.getElementById("live").textContent !== l,
        { timeout: 30000, polling: 100 },
        last,
      );
      last = await page.$eval("#live", (e) => e.textContent);
      return slot();
    };
    let grew = 0;
    let before = await slot();
    let peak = before.bytes;
    const deadline = Date.now() + 90000;
    while (grew < 2) {
      if (Date.now() > deadline) throw new Error(`lag did not rise: ${JSON.stringify(before)}`);
      const now = await next();
      const inactive = now.state.startsWith("inactive");
      grew = inactive && now.seconds > 0 && now.bytes > before.bytes ? grew + 1 : inactive ? grew : 0;
      before = now;
      peak = Math.max(peak, now.bytes);
    }
    await checkAccessibility(page);
    await page.screenshot({ path: rising, fullPage: true });
    console.log(`rising ${before.bytes}`);

    for (;;) {
      if (Date.now() > deadline + 90000) throw new Error(`lag did not fall: ${JSON.stringify(before)}`);
      const now = await next();
      peak = Math.max(peak, now.bytes);
      before = now;
      if (now.state.startsWith("active") && now.seconds === 0 && now.bytes < peak) break;
    }
    if (await scrollsSideways(page)) throw new Error("the page scrolls sideways at 375 px");
    await checkAccessibility(page);
    await page.screenshot({ path: falling, fullPage: true });
    console.log(`falling ${before.bytes}`);
  } finally {
    await browser.close();
  }
});

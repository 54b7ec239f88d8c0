// Checks pages that have no script of their own: each URL, at 1280 and at 375 px wide,
// passes axe-core and does not scroll sideways on the phone. Usage: node axe.js URL...
// Prints "ok <url>" for each, and exits non-zero on the first that fails.
"use strict";

const { launch, open, checkAccessibility, scrollsSideways, run } = require("./lib");

run(async () => {
  const browser = await launch();
  try {
    for (const url of process.argv.slice(2)) {
      for (const viewport of [{ width: 1280, height: 900 }, { width: 375, height: 800 }]) {
        const page = await open(browser, url, viewport);
        await checkAccessibility(page);
        if (viewport.width === 375 && (await scrollsSideways(page))) {
          throw new Error(`${url} scrolls sideways at 375 px`);
        }
        await page.close();
      }
      console.log(`ok ${url}`);
    }
  } finally {
    await browser.close();
  }
});
